"""Where each data set's committed folders are, and where trainings write by default.

- `retriever_folder`: its LRURec, `checkpoints/lrurec-DATASET`.
- `served_folder`: the folder its app serves stage two from (prior, pool, fusion weights, any adapter):
  `checkpoints/llamarec-DATASET`, MovieLens' named after the base model its adapter was trained on.
- `run_folder`: a training's own output under `runs/` (ignored by git), never a committed folder, which is replaced
  only when validation says so (RESULTS.md, "How choices are made").
"""

from __future__ import annotations

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
CHECKPOINTS = REPOSITORY / "checkpoints"
RUNS = REPOSITORY / "runs"
MOVIELENS = "ml-latest-small"


def retriever_folder(dataset: str) -> Path:
    """The committed LRURec checkpoint of `dataset`."""
    return CHECKPOINTS / f"lrurec-{dataset}"


def served_folder(dataset: str) -> Path:
    """The committed folder `python app.py --dataset DATASET` serves stage two from."""
    return CHECKPOINTS / ("llamarec-smollm2-135m-ml-latest-small" if dataset == MOVIELENS else f"llamarec-{dataset}")


def run_folder(name: str, dataset: str) -> Path:
    """`runs/NAME-DATASET`: where a training of `dataset` writes unless told otherwise."""
    return RUNS / f"{name}-{dataset}"
