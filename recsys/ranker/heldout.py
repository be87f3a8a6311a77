"""Held-out ranker examples: candidates as the ranker sees them at inference, from a retriever that never saw the positions.

At inference the ranker gets LRURec's top-20 in LRURec's order for a position LRURec never trained on.
Training on random negatives (the paper's recipe) teaches a small LM a different task. Here a
second LRURec is trained on every user's training items without their last `holdout` items; its
top-20 for each of those held-out positions, in its order, is one training example, kept only when
the target is among the 20 (as the valid-retrieval subset at inference).

`python -m recsys.ranker.heldout --holdout 30` trains that retriever (resumable) and writes
`runs/heldout-30/heldout_examples.safetensors`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recsys import NUM_CANDIDATES
from recsys.data import SequenceDataset, load_dataset
from recsys.ranker.examples import RankingExample
from recsys.retriever.checkpoint import load_model
from recsys.retriever.model import LRURec

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_FILE = "heldout_examples.safetensors"
MIN_KEPT_ITEMS = 5  # a truncated sequence keeps at least this many items (3 to train on, then its own val/test)


@dataclass
class HeldOutConfig:
    """How the held-out retriever and its examples are made."""

    holdout: int = 30  # training positions per user the second retriever never sees
    data_dir: str | None = None
    output: str | None = None  # default runs/heldout-<holdout>
    seed: int = 2  # the committed retriever's seed
    eval_every: int = 100
    patience: int = 10
    resume: bool = False


def held_out_counts(dataset: SequenceDataset, holdout: int) -> dict[int, int]:
    """Per user, how many of the last training positions are held out (fewer for short sequences)."""
    return {u: max(0, min(holdout, len(dataset.train(u)) - MIN_KEPT_ITEMS)) for u in sorted(dataset.sequences)}


def truncated_dataset(dataset: SequenceDataset, counts: dict[int, int]) -> SequenceDataset:
    """Each user's training items without the held-out ones; the copy's own val/test are its last two items.

    The second retriever trains on all but the copy's last two items and selects its checkpoint on the
    second-last, so no held-out position (nor the real validation or test item) reaches it.
    """
    sequences = {u: dataset.train(u)[: len(dataset.train(u)) - counts[u]] for u in sorted(dataset.sequences)}
    return SequenceDataset(f"{dataset.name}-truncated", sequences, dataset.catalog)


def held_out_positions(dataset: SequenceDataset, counts: dict[int, int]) -> list[tuple[int, int]]:
    """(user, position) pairs: history = train[:position], target = train[position], for the held-out positions."""
    return [(u, p) for u in sorted(dataset.sequences)
            for p in range(len(dataset.train(u)) - counts[u], len(dataset.train(u)))]


@torch.no_grad()
def candidate_examples(retriever: LRURec, dataset: SequenceDataset, positions: list[tuple[int, int]],
                       batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The retriever's top-20 (retriever order) for each position, kept when the target is among them.

    Returns int32 tensors: users (N,), positions (N,), candidate_ids (N, 20), answer_index (N,).
    """
    kept: dict[str, list] = {"users": [], "positions": [], "candidate_ids": [], "answer_index": []}
    for start in range(0, len(positions), batch_size):
        batch = positions[start:start + batch_size]
        histories = [dataset.train(u)[:p] for u, p in batch]
        top_ids, _ = retriever.retrieve(histories, NUM_CANDIDATES)
        for (user, position), ids in zip(batch, top_ids.tolist()):
            target = dataset.train(user)[position]
            if target in ids:
                kept["users"].append(user)
                kept["positions"].append(position)
                kept["candidate_ids"].append(ids)
                kept["answer_index"].append(ids.index(target))
    tensors = {name: torch.tensor(values, dtype=torch.int32) for name, values in kept.items()}
    tensors["candidate_ids"] = tensors["candidate_ids"].reshape(-1, NUM_CANDIDATES)
    return tensors


def load_held_out_examples(folder: str | Path, dataset: SequenceDataset) -> list[RankingExample]:
    """RankingExamples from `folder`/heldout_examples.safetensors (history rebuilt from `dataset`)."""
    path = Path(folder) / EXAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. Create it with: python -m recsys.ranker.heldout")
    tensors = load_file(path)
    return [RankingExample(tuple(dataset.train(u)[:p]), tuple(ids), a)
            for u, p, ids, a in zip(tensors["users"].tolist(), tensors["positions"].tolist(),
                                    tensors["candidate_ids"].tolist(), tensors["answer_index"].tolist())]


def build(config: HeldOutConfig) -> dict:
    """Train the truncated retriever (or reuse it), write the held-out examples and a summary; returns the summary."""
    from recsys.retriever.train import TrainConfig, train

    output = Path(config.output or REPO_ROOT / "runs" / f"heldout-{config.holdout}")
    dataset = load_dataset("ml-latest-small", config.data_dir)
    counts = held_out_counts(dataset, config.holdout)
    retriever_dir = output / "retriever"
    if config.resume and (retriever_dir / "metrics.json").is_file():
        print(f"reusing the held-out retriever in {retriever_dir}")
    else:
        train(TrainConfig(output=str(retriever_dir), state_dir=str(output / "retriever-state"), seed=config.seed,
                          eval_every=config.eval_every, patience=config.patience, resume=config.resume),
              truncated_dataset(dataset, counts))
    retriever = load_model(retriever_dir)
    positions = held_out_positions(dataset, counts)
    examples = candidate_examples(retriever, dataset, positions)
    save_file(examples, output / EXAMPLES_FILE)
    answers = torch.bincount(examples["answer_index"].long(), minlength=NUM_CANDIDATES)
    summary = {"config": asdict(config), "positions": len(positions), "examples": int(examples["users"].numel()),
               "coverage@20": round(examples["users"].numel() / max(len(positions), 1), 4),
               "users_with_examples": int(examples["users"].unique().numel()),
               "answer_position_share": [round(c / max(int(answers.sum()), 1), 4) for c in answers.tolist()]}
    (output / "heldout_examples.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "answer_position_share"}))
    return summary


def parse_args(argv=None) -> HeldOutConfig:
    """Flags: one per HeldOutConfig field."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holdout", type=int, default=HeldOutConfig.holdout)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None)
    parser.add_argument("--seed", type=int, default=HeldOutConfig.seed)
    parser.add_argument("--eval-every", type=int, default=HeldOutConfig.eval_every)
    parser.add_argument("--patience", type=int, default=HeldOutConfig.patience)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted retriever training")
    return HeldOutConfig(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    build(parse_args())
