"""The files of a ranker folder, read in one place.

A ranker folder (`python -m recsys.ranker.prior --write`, then `python -m recsys.ranker.train`) holds

    adapter_config.json, adapter_model.safetensors   the LoRA weights (absent in a zero-shot folder: `--zero-shot`)
    ranker_config.json    fusion weights chosen on validation, prompt budgets, the training config
    metrics.json          validation and test figures of the run
    prior.json            the prior's co-watch window and span, its fitted weights, the candidate pool
    cowatch.safetensors   the co-watch counts

and a catalog-pretrained folder (`python -m recsys.ranker.catalog_lm`) an adapter and title_config.json (how titles
are scored and their fusion weight, `bench/llm_rankers.py --write-choice`). `RankerArtefacts.load` and
`CatalogArtefacts.load` read them once for every caller (app, evaluation, training, benchmarks); a file that cannot
be used raises `recsys.errors.CheckpointError` naming it and the command that re-creates it. The peft weights
themselves are read by `recsys.ranker.model.load_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys import NUM_CANDIDATES
from recsys.errors import CheckpointError, read_json_object
from recsys.ranker.cowatch import COUNTS_FILE, CoWatchConfig, CoWatchCounts
from recsys.ranker.fusion import LLM_ALONE, FusionWeights
from recsys.ranker.pool import MAX_POOL
from recsys.ranker.model import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, DEFAULT_ADAPTER, TRAIN_COMMAND
from recsys.ranker.prompt import HISTORIES, PromptConfig
from recsys.ranker.title_likelihood import TitleConfig

RANKER_CONFIG_FILE = "ranker_config.json"
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
    """The fixed prior `recsys.ranker.prior` chose: co-watch window/span, weights fitted on held-out examples (the
    LLM's weight 1, as the residual loss trains), and how many of LRURec's top films it re-ranks to keep 20."""

    cowatch: CoWatchConfig
    weights: FusionWeights
    pool: int = NUM_CANDIDATES


@dataclass(frozen=True)
class RankerArtefacts:
    """Everything a ranker folder says, read once (`load`). Without a folder: the LLM alone, the paper's prompt and
    stage one."""

    folder: Path | None = None
    fusion: FusionWeights = LLM_ALONE  # the served fusion weights
    prompt: PromptConfig = PromptConfig()  # the budgets the adapter was trained with
    counts: CoWatchCounts | None = None  # None: no co-watch opinion
    prior: Prior | None = None  # prior.json; None without one
    training: dict[str, Any] = field(default_factory=dict)  # the training run's config, as saved
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json ({} without one)
    has_weights: bool = False  # adapter weights present (False: a zero-shot folder, or none)

    @property
    def adapter(self) -> Path | None:
        """The folder to load peft weights from; None when the base model ranks alone."""
        return self.folder if self.has_weights else None

    @property
    def zero_shot(self) -> bool:
        """A ranker folder without adapter weights: the base model ranks at the weights validation chose for it."""
        return self.folder is not None and not self.has_weights

    @property
    def pool(self) -> int:
        """How many of LRURec's top films the prior re-ranks to keep 20 (20 without co-watch counts: the paper's
        stage one)."""
        return self.prior.pool if self.prior is not None and self.counts is not None else NUM_CANDIDATES

    def require_prior(self) -> Prior:
        """The prior; CheckpointError naming prior.json when the folder has none (training on held-out examples
        needs it)."""
        if self.prior is None:
            raise CheckpointError.missing(Path(self.folder or ".") / PRIOR_FILE, PRIOR_COMMAND)
        return self.prior

    @classmethod
    def load(cls, folder: str | Path | None) -> RankerArtefacts:
        """Read a ranker folder (None: no folder). A folder with no adapter weights, ranker_config.json or prior.json
        is no ranker folder. Co-watch counts are required when the fusion weighs co-watch, the prompt shows their
        evidence or a prior is saved (then counted as the prior chose). CheckpointError names the file at fault and
        the command that re-creates it."""
        if not folder:
            return cls()
        folder = Path(folder)
        config_path = folder / RANKER_CONFIG_FILE
        has_weights = has_adapter_weights(folder)
        if not has_weights and not config_path.is_file() and not (folder / PRIOR_FILE).is_file():
            raise CheckpointError(f"{folder} is not a ranker folder: it holds neither an adapter ({ADAPTER_CONFIG_FILE}"
                                  f", {ADAPTER_WEIGHTS_FILE}), a zero-shot ranker ({RANKER_CONFIG_FILE}) nor a prior "
                                  f"({PRIOR_FILE}). Create one with: {TRAIN_COMMAND}")
        saved = read_json_object(config_path, TRAIN_COMMAND) if config_path.is_file() else {}
        fusion = _fusion(saved.get("fusion"), config_path)
        prompt = _prompt(saved.get("prompt", {}), config_path)
        prior = _prior(folder / PRIOR_FILE) if (folder / PRIOR_FILE).is_file() else None
        counts_path = folder / COUNTS_FILE
        counts = CoWatchCounts.load(folder) if counts_path.is_file() else None
        if counts is None and (fusion.cowatch or prompt.evidence or prior is not None):
            raise CheckpointError.missing(counts_path, PRIOR_COMMAND)
        if prior is not None and counts is not None and counts.config != prior.cowatch:
            raise CheckpointError.corrupt(counts_path, f"counted with {counts.config}, but {PRIOR_FILE} chose "
                                                       f"{prior.cowatch}", PRIOR_COMMAND)
        metrics_path = folder / METRICS_FILE
        metrics = read_json_object(metrics_path, TRAIN_COMMAND) if metrics_path.is_file() else {}
        training = saved.get("training", {})
        return cls(folder, fusion, prompt, counts, prior, training if isinstance(training, dict) else {}, metrics,
                   has_weights)


def _fusion(saved: Any, path: Path) -> FusionWeights:
    """ranker_config.json's "fusion" (the LLM alone when absent)."""
    if saved is None:
        return LLM_ALONE
    try:
        if not isinstance(saved, dict):
            raise TypeError("not a JSON object")
        return FusionWeights(**saved)
    except (TypeError, ValueError) as error:
        raise CheckpointError.corrupt(path, f"fusion: {error}", TRAIN_COMMAND) from error


def _prompt(saved: Any, path: Path) -> PromptConfig:
    """ranker_config.json's "prompt" budgets, each of its default's type and never negative."""
    try:
        config = PromptConfig(**saved)
    except TypeError as error:  # not a JSON object, or unknown keys
        raise CheckpointError.corrupt(path, f"prompt: {error}", TRAIN_COMMAND) from error
    for name, value in saved.items():
        default = getattr(PromptConfig, name)
        if type(value) is not type(default) or (isinstance(default, int) and value < 0):
            raise CheckpointError.corrupt(path, f"prompt {name} {value!r}", TRAIN_COMMAND)
    if config.domain not in HISTORIES:
        raise CheckpointError.corrupt(path, f"prompt domain {config.domain!r} (one of {sorted(HISTORIES)})",
                                      TRAIN_COMMAND)
    return config


def _prior(path: Path) -> Prior:
    """prior.json: co-watch config, weights, pool (20 when absent: the paper's stage one)."""
    saved = read_json_object(path, PRIOR_COMMAND)
    pool = saved.get("pool", NUM_CANDIDATES)
    if not isinstance(pool, int) or isinstance(pool, bool) or not NUM_CANDIDATES <= pool <= MAX_POOL:
        raise CheckpointError.corrupt(path, f"pool must be a whole number in {NUM_CANDIDATES}..{MAX_POOL}, got "
                                            f"{pool!r}", PRIOR_COMMAND)
    try:
        return Prior(CoWatchConfig(**saved["cowatch"]), FusionWeights(**saved["weights"]), pool)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError.corrupt(path, error, PRIOR_COMMAND) from error


@dataclass(frozen=True)
class CatalogArtefacts:
    """A catalog-pretrained folder: its adapter and the title-likelihood choice saved beside it."""

    folder: Path
    title: TitleConfig = TitleConfig()
    weight: float = 0.0  # title likelihood's fusion weight, chosen on validation (0 without a choice)

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
        command = f"python bench/llm_rankers.py --catalog-adapter {folder} --write-choice {folder}"
        saved = read_json_object(path, command)
        try:
            title, weight = TitleConfig(**saved["title"]), float(saved["weight"])
            if not weight >= 0:
                raise ValueError(f"weight {weight}")
        except (ValueError, TypeError, KeyError) as error:
            raise CheckpointError.corrupt(path, error, command) from error
        return cls(folder, title, weight)
