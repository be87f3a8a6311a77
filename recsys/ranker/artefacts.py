"""The files of a ranker folder, read in one place.

A ranker folder (`python -m recsys.ranker.prior --write`, then `python -m recsys.ranker.train`) holds

    served_config.json    what it serves: candidate pool, co-watch window/span, every fusion weight, the prompt
                          (`recsys.ranker.served.ServedConfig`: the one config serving reads)
    adapter_config.json, adapter_model.safetensors   the LoRA weights (absent in a zero-shot folder: `--zero-shot`)
    cowatch.safetensors   the co-watch counts
    prior.json            the prior's choice and its record (the weights it was fitted with, the LLM's at 1 as the
                          residual loss trains; the grids), read by training
    training_config.json  the training run's config (a record, shown on the About tab)
    metrics.json          validation and test figures of the run
    title_config.json     how the base model's title likelihood is scored beside it, its weight chosen by
                          `python -m recsys.ranker.title_weight` (absent: no such choice)

and a catalog-pretrained folder (`python -m recsys.ranker.catalog_lm`) an adapter and title_config.json (how titles
are scored, `bench/llm_rankers.py --write-choice`). `RankerArtefacts.load` and `CatalogArtefacts.load` read them once
for every caller (app, evaluation, training, benchmarks); a file that cannot be used raises
`recsys.errors.CheckpointError` naming it and the command that re-creates it. The peft weights themselves are read by
`recsys.ranker.model.load_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys import NUM_CANDIDATES
from recsys.errors import CheckpointError, read_json_object
from recsys.ranker.cowatch import COUNTS_FILE, CoWatchConfig, CoWatchCounts
from recsys.ranker.fusion import LLM_ALONE, FusionWeights
from recsys.ranker.model import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, DEFAULT_ADAPTER, TRAIN_COMMAND
from recsys.ranker.prompt import PromptConfig
from recsys.ranker.served import SERVED_COMMAND, SERVED_CONFIG_FILE, ServedConfig
from recsys.ranker.title_likelihood import TitleConfig

TRAINING_CONFIG_FILE = "training_config.json"
OLD_CONFIG_FILE = "ranker_config.json"  # where an earlier layout kept the served weights
METRICS_FILE = "metrics.json"
PRIOR_FILE = "prior.json"
TITLE_CONFIG_FILE = "title_config.json"
PRIOR_COMMAND = "python -m recsys.ranker.prior --write"
CATALOG_COMMAND = "python -m recsys.ranker.catalog_lm"


def has_adapter_weights(folder: str | Path | None) -> bool:
    """Whether `folder` holds a peft adapter (its config and its weights)."""
    return bool(folder) and all((Path(folder) / name).is_file()  # type: ignore[arg-type]
                                for name in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE))


def default_adapter(folder: Path = DEFAULT_ADAPTER) -> Path | None:
    """`folder` (default: the committed ranker adapter) when it holds an adapter, else None."""
    return folder if has_adapter_weights(folder) else None


@dataclass(frozen=True)
class Prior:
    """The fixed prior `recsys.ranker.prior` fitted: co-watch window/span and its weights on held-out examples (the
    LLM's weight 1, as the residual loss trains). Training reads it; serving reads `served_config.json`."""

    cowatch: CoWatchConfig
    weights: FusionWeights


@dataclass(frozen=True)
class RankerArtefacts:
    """Everything a ranker folder says, read once (`load`). Without a folder, or a folder with adapter weights only:
    the LLM alone, the paper's prompt and stage one."""

    folder: Path | None = None
    fusion: FusionWeights = LLM_ALONE  # the served fusion weights
    prompt: PromptConfig = PromptConfig()  # the budgets the adapter was trained with
    counts: CoWatchCounts | None = None  # None: no co-watch opinion
    prior: Prior | None = None  # prior.json; None without one
    training: dict[str, Any] = field(default_factory=dict)  # the training run's config, as saved
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json ({} without one)
    has_weights: bool = False  # adapter weights present (False: a zero-shot folder, or none)
    pool: int = NUM_CANDIDATES  # LRURec's top films the prior re-ranks to keep 20 (20: the paper's stage one)
    # title_config.json: how the base model's title likelihood (the adapter off, in a trained folder) was scored when
    # its weight was chosen (`recsys.ranker.title_weight`); None without one
    title: TitleConfig | None = None

    @property
    def adapter(self) -> Path | None:
        """The folder to load peft weights from; None when the base model ranks alone."""
        return self.folder if self.has_weights else None

    @property
    def zero_shot(self) -> bool:
        """A ranker folder without adapter weights: the base model ranks at the weights validation chose for it."""
        return self.folder is not None and not self.has_weights

    @property
    def base_titles(self) -> bool:
        """Whether the folder's title weight (if any) was chosen with the base model's title likelihood: a zero-shot
        folder, or a trained one `recsys.ranker.title_weight` chose it for (its title_config.json). Otherwise a
        trained folder's title weight belongs to a catalog-pretrained adapter (`bench/llm_rankers.py`)."""
        return self.zero_shot or self.title is not None

    def require_prior(self) -> Prior:
        """The prior; CheckpointError naming prior.json when the folder has none (training on held-out examples
        needs it)."""
        if self.prior is None:
            raise CheckpointError.missing(Path(self.folder or ".") / PRIOR_FILE, PRIOR_COMMAND)
        return self.prior

    @property
    def served(self) -> ServedConfig:
        """What the folder serves, as `served_config.json` holds it."""
        counted = self.counts.config if self.counts is not None else CoWatchConfig()
        return ServedConfig(self.pool, counted, self.fusion, self.prompt)

    @classmethod
    def load(cls, folder: str | Path | None) -> RankerArtefacts:
        """Read a ranker folder (None: no folder). A folder with neither adapter weights nor served_config.json is no
        ranker folder; one with adapter weights only serves the LLM alone. Co-watch counts are required when the
        fusion weighs co-watch, the prompt shows their evidence or the pool is above 20, and must be counted as
        the served config says. CheckpointError names the file at fault and the command that re-creates it."""
        if not folder:
            return cls()
        folder = Path(folder)
        has_weights = has_adapter_weights(folder)
        if not has_weights and not (folder / SERVED_CONFIG_FILE).is_file():
            raise CheckpointError(f"{folder} is not a ranker folder: it holds neither an adapter ({ADAPTER_CONFIG_FILE}"
                                  f", {ADAPTER_WEIGHTS_FILE}) nor a served config ({SERVED_CONFIG_FILE}). Create one "
                                  f"with: {TRAIN_COMMAND}")
        if (folder / SERVED_CONFIG_FILE).is_file():
            served = ServedConfig.from_pretrained(folder)
        elif any((folder / name).is_file() for name in (PRIOR_FILE, COUNTS_FILE, OLD_CONFIG_FILE)):
            # a prior, or a folder of an earlier layout: serving it as the LLM alone would drop what was chosen
            raise CheckpointError.missing(folder / SERVED_CONFIG_FILE, SERVED_COMMAND)
        else:  # a trainer's output before its final step: the adapter alone
            served = ServedConfig(NUM_CANDIDATES, CoWatchConfig(), LLM_ALONE, PromptConfig())
        prior = _prior(folder / PRIOR_FILE) if (folder / PRIOR_FILE).is_file() else None
        counts_path = folder / COUNTS_FILE
        counts = CoWatchCounts.load(folder) if counts_path.is_file() else None
        if counts is None and (served.fusion.cowatch or served.prompt.evidence or served.pool > NUM_CANDIDATES):
            raise CheckpointError.missing(counts_path, PRIOR_COMMAND)
        if counts is not None and counts.config != served.cowatch:
            raise CheckpointError.corrupt(counts_path, f"counted with {counts.config}, but {SERVED_CONFIG_FILE} says "
                                                       f"{served.cowatch}", PRIOR_COMMAND)
        metrics_path = folder / METRICS_FILE
        metrics = read_json_object(metrics_path, TRAIN_COMMAND) if metrics_path.is_file() else {}
        training_path = folder / TRAINING_CONFIG_FILE
        training = read_json_object(training_path, TRAIN_COMMAND) if training_path.is_file() else {}
        title_path = folder / TITLE_CONFIG_FILE
        title = (read_title_config(title_path, f"python -m recsys.ranker.title_weight --served {folder} --dataset "
                                               "DATASET") if title_path.is_file() else None)
        return cls(folder, served.fusion, served.prompt, counts, prior, training, metrics, has_weights, served.pool,
                   title)


def _prior(path: Path) -> Prior:
    """prior.json: the co-watch config and weights the prior was fitted with."""
    saved = read_json_object(path, PRIOR_COMMAND)
    try:
        return Prior(CoWatchConfig(**saved["cowatch"]), FusionWeights(**saved["weights"]))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError.corrupt(path, error, PRIOR_COMMAND) from error


@dataclass(frozen=True)
class CatalogArtefacts:
    """A catalog-pretrained folder: its adapter and how it scores titles (its fusion weight is served with the ranker
    folder's, in `served_config.json`)."""

    folder: Path
    title: TitleConfig = TitleConfig()

    @classmethod
    def load(cls, folder: str | Path) -> CatalogArtefacts:
        """Read a catalog-pretrained folder; CheckpointError when it holds no adapter or a corrupt
        title_config.json."""
        folder = Path(folder)
        if not has_adapter_weights(folder):
            raise CheckpointError(f"{folder} holds no catalog-pretrained adapter ({ADAPTER_CONFIG_FILE}, "
                                  f"{ADAPTER_WEIGHTS_FILE}). Create one with: {CATALOG_COMMAND}")
        path = folder / TITLE_CONFIG_FILE
        if not path.is_file():
            return cls(folder)
        return cls(folder, read_title_config(path, f"python bench/llm_rankers.py --catalog-adapter {folder} "
                                                   f"--write-choice {folder}"))


def read_title_config(path: Path, command: str) -> TitleConfig:
    """A title_config.json: how the titles were scored when title likelihood's weight was chosen ({"title": the
    TitleConfig's fields, "validation": the choice's record}); CheckpointError naming `command` when damaged."""
    saved = read_json_object(path, command)
    if unknown := sorted(set(saved) - {"title", "validation"}):  # e.g. an earlier layout's "weight"
        raise CheckpointError.corrupt(path, f"unknown {', '.join(unknown)} (a title weight is served from the "
                                            f"ranker folder's {SERVED_CONFIG_FILE})", command)
    try:
        return TitleConfig(**saved["title"])
    except (TypeError, KeyError, ValueError) as error:
        raise CheckpointError.corrupt(path, error, command) from error
