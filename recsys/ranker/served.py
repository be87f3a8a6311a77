"""What a ranker folder serves, in one file: `served_config.json`, written by the steps that choose it on validation
and read by everything that serves or scores as served (the app, evaluation's `served_rows`, the benchmarks).

    {"pool": 50,                                       LRURec's top items the prior re-ranks to keep 20
     "cowatch": {"window": 3, "span": 3},              how the co-watch counts beside it were counted
     "fusion": {"retriever": .., "cowatch": .., "llm": .., "titles": ..},   every opinion's weight
     "prompt": {"max_history": .., ..., "domain": ..}} the ranking prompt's budgets and words

Who writes which part: `python -m recsys.ranker.prior --write` the pool, co-watch and the prior's two weights (with the
LLM's at 0: the prior alone serves until a ranker is chosen); `python -m recsys.ranker.train` (its final step, also
`--zero-shot`) the LLM's weight and the prompt it was scored with; title likelihood's weight `bench/llm_rankers.py
--write-choice` (a trained folder, with its catalog adapter) or `python -m recsys.ranker.title_weight` (a zero-shot
folder, with the base model). Saved and read in the manner of `save_pretrained` / `from_pretrained`; every key must
be there and no other: a file written by another version is refused with the key at fault, never half-read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from recsys import NUM_CANDIDATES
from recsys.errors import CheckpointError, read_json_object
from recsys.ranker.cowatch import CoWatchConfig
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.pool import MAX_POOL
from recsys.ranker.prompt import HISTORIES, PromptConfig

SERVED_CONFIG_FILE = "served_config.json"
SERVED_COMMAND = "python -m recsys.ranker.prior --write, then python -m recsys.ranker.train (or --zero-shot)"


@dataclass(frozen=True)
class ServedConfig:
    """Every choice a ranker folder serves with: the candidate pool, the co-watch counts' window and span, the fusion
    weights and the prompt."""

    pool: int
    cowatch: CoWatchConfig
    fusion: FusionWeights
    prompt: PromptConfig

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write `served_config.json` into `folder` (made if missing); returns its path."""
        path = Path(folder) / SERVED_CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> ServedConfig:
        """Read `served_config.json` from `folder`. CheckpointError naming the file, the key and the command that
        writes it when the file is missing or not JSON, a key is missing or unknown, or a value has another type
        than its default's or lies out of range."""
        path = Path(folder) / SERVED_CONFIG_FILE
        saved = read_json_object(path, SERVED_COMMAND)

        def part(name: str, kind: type) -> Any:
            """`saved[name]` as a `kind` dataclass: exactly its fields, each of its default's type."""
            value = saved[name]
            if not isinstance(value, dict):
                raise CheckpointError.corrupt(path, f"{name} is not a JSON object", SERVED_COMMAND)
            _exact_keys(path, value, [f.name for f in fields(kind)], f"{name}.")
            for key, item in value.items():
                default = getattr(kind(), key)
                if isinstance(default, float) and isinstance(item, int) and not isinstance(item, bool):
                    item = value[key] = float(item)  # JSON writes 1.0 as 1
                if type(item) is not type(default) or (isinstance(item, (int, float)) and item < 0):
                    raise CheckpointError.corrupt(path, f"{name}.{key} {item!r}", SERVED_COMMAND)
            try:
                return kind(**value)
            except ValueError as error:
                raise CheckpointError.corrupt(path, f"{name}: {error}", SERVED_COMMAND) from error

        _exact_keys(path, saved, [f.name for f in fields(cls)])
        pool = saved["pool"]
        if type(pool) is not int or not NUM_CANDIDATES <= pool <= MAX_POOL:
            raise CheckpointError.corrupt(path, f"pool must be a whole number in {NUM_CANDIDATES}..{MAX_POOL}, got "
                                                f"{pool!r}", SERVED_COMMAND)
        config = cls(pool, part("cowatch", CoWatchConfig), part("fusion", FusionWeights), part("prompt", PromptConfig))
        if config.prompt.domain not in HISTORIES:
            raise CheckpointError.corrupt(path, f"prompt.domain {config.prompt.domain!r} (one of {sorted(HISTORIES)})",
                                          SERVED_COMMAND)
        return config


def _exact_keys(path: Path, saved: dict, expected: list[str], prefix: str = "") -> None:
    """CheckpointError when `saved` lacks one of `expected` or holds another key."""
    missing = [key for key in expected if key not in saved]
    unknown = sorted(set(saved) - set(expected))
    if missing or unknown:
        said = ([f"missing {', '.join(prefix + k for k in missing)}"] if missing else []) + (
            [f"unknown {', '.join(prefix + k for k in unknown)}"] if unknown else [])
        raise CheckpointError.corrupt(path, "; ".join(said) + f" (expected {', '.join(prefix + k for k in expected)})",
                                      SERVED_COMMAND)
