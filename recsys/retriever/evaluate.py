"""Full-ranking evaluation of LRURec on validation or test users.

`python -m recsys.retriever.evaluate --checkpoint checkpoints/lrurec-ml-latest-small`
"""

from __future__ import annotations

import argparse
import json

import torch
from tqdm.auto import tqdm

from recsys.data import SequenceDataset, load_dataset
from recsys.metrics import KS, format_table, metrics_from_ranks, ranks_of_targets
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_config, load_model
from recsys.retriever.model import LRURec


def split_inputs(dataset: SequenceDataset, split: str) -> tuple[list[int], list[list[int]], list[int]]:
    """(users, histories, targets) of the "val" or "test" split."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    users = sorted(dataset.sequences)
    pairs = [dataset.val_input(u) if split == "val" else dataset.test_input(u) for u in users]
    return users, [h for h, _ in pairs], [t for _, t in pairs]


@torch.no_grad()
def target_ranks(model: LRURec, histories: list[list[int]], targets: list[int],
                 batch_size: int = 128, progress: bool = False) -> list[int]:
    """1-based rank of each target among all unseen catalog items (history masked)."""
    was_training = model.training
    model.eval()
    ranks: list[int] = []
    starts = range(0, len(histories), batch_size)
    for start in tqdm(starts, desc="ranking", disable=not progress, leave=False):
        scores = model.score_next(histories[start:start + batch_size])
        batch_targets = torch.tensor(targets[start:start + batch_size], device=scores.device)
        ranks += ranks_of_targets(scores, batch_targets).tolist()
    model.train(was_training)
    return ranks


def evaluate_split(model: LRURec, dataset: SequenceDataset, split: str, progress: bool = False) -> dict[str, float]:
    """Recall/NDCG/MRR at k in KS for every user of `split` ("val" or "test"), full ranking."""
    _, histories, targets = split_inputs(dataset, split)
    return metrics_from_ranks(target_ranks(model, histories, targets, progress=progress), KS)


def main(argv=None) -> None:
    """Evaluate a checkpoint on validation and test and print (and optionally write) the metrics."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--data-dir", default=None, help="folder with the raw MovieLens files")
    parser.add_argument("--json", default=None, help="write the metrics here")
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    dataset = load_dataset(load_config(args.checkpoint).get("dataset", "ml-latest-small"), args.data_dir)
    result = {split: evaluate_split(model, dataset, split, progress=True) for split in ("val", "test")}
    columns = [f"{m}@{k}" for k in KS for m in ("R", "N", "M")]
    print(format_table(result, columns))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
