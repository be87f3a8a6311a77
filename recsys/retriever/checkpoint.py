"""LRURec checkpoint folders, shaped like HF model folders: config.json + model.safetensors (+ catalog, metrics)."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recsys.data.catalog import Catalog
from recsys.data.errors import one_line
from recsys.errors import CheckpointError, read_json_object
from recsys.folders import MOVIELENS, retriever_folder
from recsys.retriever.model import LRURec, LRURecConfig

DEFAULT_CHECKPOINT = retriever_folder(MOVIELENS)


def train_command(dataset: str = MOVIELENS) -> str:
    """The command that trains `dataset`'s retriever into its committed folder."""
    return f"python -m recsys.retriever.train --dataset {dataset}"


TRAIN_COMMAND = train_command()


def save_checkpoint(model: LRURec, folder: str | Path, catalog: Catalog | None = None,
                    metrics: dict | None = None, extra_config: dict | None = None) -> Path:
    """Write model.safetensors, config.json (model config + `extra_config`), catalog.json and metrics.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    config = {"model_type": "lrurec", **asdict(model.config), **(extra_config or {})}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if catalog is not None:
        catalog.save(folder)
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return folder


def load_config(folder: str | Path) -> dict:
    """The raw config.json of a checkpoint folder."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError.missing(path, TRAIN_COMMAND, ": not an LRURec checkpoint")
    return read_json_object(path, TRAIN_COMMAND)


def load_model(folder: str | Path, device: str = "cpu") -> LRURec:
    """Load an LRURec in eval mode from a checkpoint folder; raises CheckpointError with a fix on failure."""
    folder = Path(folder)
    raw = load_config(folder)
    names = {f.name for f in fields(LRURecConfig)}
    try:
        model = LRURec(LRURecConfig(**{k: v for k, v in raw.items() if k in names}))
    except (TypeError, ValueError, RuntimeError) as error:  # e.g. a size that is not a positive number
        raise CheckpointError.corrupt(folder / "config.json", error, TRAIN_COMMAND) from error
    weights = folder / "model.safetensors"
    try:
        state = load_file(weights, device="cpu")
        model.load_state_dict(state)
    except (FileNotFoundError, SafetensorError, RuntimeError, OSError) as error:
        raise CheckpointError(f"{weights} cannot be loaded ({one_line(error)}). "
                              f"Re-create it with: {TRAIN_COMMAND}") from error
    return model.to(device).eval()


def load_catalog(folder: str | Path) -> Catalog:
    """The catalog saved with a checkpoint; raises CheckpointError with a fix on failure."""
    try:
        return Catalog.load(folder)
    except (OSError, ValueError) as error:  # the message names catalog.json
        raise CheckpointError(f"{one_line(error, limit=400)}. Re-create it with: {TRAIN_COMMAND}") from error
