"""The co-watch prior: how often a candidate followed the user's latest films in other people's histories.

Item-to-item transition counts: C[h, c] = number of times item c came within `window` positions
after item h in a training sequence. A candidate's co-watch score for one history is the mean, over
the history's last `span` items h, of log(1 + C[h, c]). LRURec summarises a history in one state;
these short-range pair counts are the collaborative evidence it leaves on the table (bench/ranker_quality.py's
"retriever + co-watch" row measures what they add to the retriever's order).

Counts are read from training sequences only: for validation and test users, every user's training
part (no validation or test item is counted); for held-out ranker examples, only what their truncated
retriever saw (`recsys.ranker.heldout.truncated_sequences`). The committed counts are a sparse
safetensors file (`cowatch.safetensors`) beside the ranker adapter.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recsys.errors import CheckpointError

COUNTS_FILE = "cowatch.safetensors"


@dataclass(frozen=True)
class CoWatchConfig:
    """Window and span of the co-watch prior (chosen on held-out validation examples)."""

    window: int = 3  # c counts as following h when it comes 1..window positions later
    span: int = 5  # the last `span` history items vote for each candidate


class CoWatchCounts:
    """Dense (num_items + 1, num_items + 1) transition counts; row/column 0 is padding and stays 0."""

    def __init__(self, counts: torch.Tensor, config: CoWatchConfig):
        if counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"co-watch counts must be a square matrix, got shape {tuple(counts.shape)}")
        self.counts = counts
        self.config = config

    @property
    def num_items(self) -> int:
        return self.counts.shape[0] - 1

    @classmethod
    def from_sequences(cls, sequences: Iterable[list[int]], num_items: int,
                       config: CoWatchConfig = CoWatchConfig()) -> CoWatchCounts:
        """Count, in every sequence (item ids 1..num_items, oldest first), each item c that comes 1..window after h."""
        size = num_items + 1
        flat = torch.zeros(size * size, dtype=torch.int32)
        for sequence in sequences:
            items = torch.as_tensor(list(sequence), dtype=torch.long)
            for offset in range(1, config.window + 1):
                if items.numel() > offset:
                    pairs = items[:-offset] * size + items[offset:]
                    flat.index_add_(0, pairs, torch.ones_like(pairs, dtype=torch.int32))
        return cls(flat.view(size, size), config)

    def scores(self, histories: list[list[int]], candidate_ids: torch.Tensor) -> torch.Tensor:
        """Co-watch scores (B, K): mean over each history's last `span` items h of log(1 + C[h, candidate]).

        `candidate_ids` is (B, K) item ids; an empty history scores 0 everywhere.
        """
        span = self.config.span
        recent = torch.zeros(len(histories), span, dtype=torch.long)
        for row, history in enumerate(histories):
            tail = list(history)[-span:]
            if tail:
                recent[row, span - len(tail):] = torch.as_tensor(tail)
        counts = self.counts[recent.unsqueeze(-1), candidate_ids.long().unsqueeze(1)]  # (B, span, K)
        voters = (recent > 0).sum(dim=1, keepdim=True).clamp_min(1)  # (B, 1)
        return torch.log1p(counts.float()).sum(dim=1) / voters

    def evidence(self, history: list[int], candidate_id: int) -> tuple[int, int] | None:
        """The recent history item the candidate followed most often, and how often: (item id, count); None if never."""
        recent = list(dict.fromkeys(reversed(list(history)[-self.config.span:])))  # newest first, once each
        if not recent:
            return None
        counts = self.counts[torch.as_tensor(recent), candidate_id].tolist()
        best = max(range(len(recent)), key=lambda i: (counts[i], -i))
        return (recent[best], counts[best]) if counts[best] > 0 else None

    def save(self, folder: str | Path) -> Path:
        """Write the nonzero counts (COO: int16 rows/cols, int32 counts) and the config to
        `folder`/cowatch.safetensors."""
        nonzero = self.counts.nonzero()
        if self.num_items > torch.iinfo(torch.int16).max:
            raise ValueError(f"{self.num_items} items do not fit the int16 item ids of {COUNTS_FILE}")
        tensors = {"rows": nonzero[:, 0].to(torch.int16).contiguous(),
                   "cols": nonzero[:, 1].to(torch.int16).contiguous(),
                   "counts": self.counts[nonzero[:, 0], nonzero[:, 1]].contiguous()}
        path = Path(folder) / COUNTS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, path, metadata={"num_items": str(self.num_items), "config": json.dumps(asdict(self.config))})
        return path

    @classmethod
    def load(cls, folder: str | Path) -> CoWatchCounts:
        """Read `folder`/cowatch.safetensors.

        CheckpointError names the file and the command that makes it."""
        path = Path(folder) / COUNTS_FILE
        command = "python -m recsys.ranker.prior --write"
        if not path.is_file():
            raise CheckpointError.missing(path, command)
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(path)
            num_items = int(metadata["num_items"])
            config = CoWatchConfig(**json.loads(metadata["config"]))
            counts = torch.zeros(num_items + 1, num_items + 1, dtype=torch.int32)
            counts[tensors["rows"].long(), tensors["cols"].long()] = tensors["counts"].to(torch.int32)
        except Exception as error:  # noqa: BLE001 (any unreadable file gets the same one-line message)
            raise CheckpointError.corrupt(path, error, command) from error
        return cls(counts, config)

