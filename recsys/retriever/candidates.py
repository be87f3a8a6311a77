"""LRURec's top-K candidates of every validation and test user, as compact integer arrays for the ranker.

`python -m recsys.retriever.candidates --k 50` writes `candidates.safetensors` (per split: users, targets,
candidate ids (U, K) in retriever order, their scores) and `candidates.json` (coverage at 20 and at K)
into the checkpoint folder. K is 20 for the paper's stage one, or the prior's candidate pool
(`recsys.ranker.pool`), from which evaluation keeps the 20 the prior ranks best, as the app does.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recsys import NUM_CANDIDATES
from recsys.data import SequenceDataset, load_dataset
from recsys.errors import CheckpointError
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_config, load_model
from recsys.retriever.evaluate import split_inputs
from recsys.retriever.model import LRURec

CANDIDATES_FILE = "candidates.safetensors"


@dataclass
class SplitCandidates:
    """Retriever candidates of one split; row i belongs to users[i]."""

    users: torch.Tensor  # (U,) int32 user ids
    targets: torch.Tensor  # (U,) int32 held-out item ids
    candidate_ids: torch.Tensor  # (U, K) int32 item ids, retriever order (best first)
    candidate_scores: torch.Tensor  # (U, K) float32 retriever scores

    def coverage(self, k: int | None = None) -> float:
        """Share of users whose target is among their first `k` candidates (all by default); at k = 20 the
        valid-retrieval subset."""
        return (self.candidate_ids[:, :k] == self.targets[:, None]).any(dim=1).float().mean().item()

    def target_positions(self) -> torch.Tensor:
        """(U,) 0-based position of the target in each row, -1 when not retrieved."""
        hit = self.candidate_ids == self.targets[:, None]
        return torch.where(hit.any(dim=1), hit.int().argmax(dim=1), torch.full_like(self.targets, -1))


@torch.no_grad()
def retrieve_split(model: LRURec, dataset: SequenceDataset, split: str, k: int = NUM_CANDIDATES,
                   batch_size: int = 128) -> SplitCandidates:
    """Top-k (history masked) for every user of `split`."""
    users, histories, targets = split_inputs(dataset, split)
    ids, scores = [], []
    for start in range(0, len(histories), batch_size):
        top_ids, top_scores = model.retrieve(histories[start:start + batch_size], k)
        ids.append(top_ids)
        scores.append(top_scores)
    return SplitCandidates(torch.tensor(users, dtype=torch.int32), torch.tensor(targets, dtype=torch.int32),
                           torch.cat(ids).to(torch.int32), torch.cat(scores).float())


def save_candidates(candidates: dict[str, SplitCandidates], folder: str | Path) -> Path:
    """Write all splits to `folder`/candidates.safetensors and the coverage to candidates.json."""
    folder = Path(folder)
    tensors = {f"{split}.{name}": getattr(c, name).contiguous()
               for split, c in candidates.items() for name in ("users", "targets", "candidate_ids", "candidate_scores")}
    save_file(tensors, folder / CANDIDATES_FILE)
    summary: dict[str, float | dict[str, int]] = {
        f"{split}_coverage@{k}": round(c.coverage(k), 4) for split, c in candidates.items()
        for k in sorted({NUM_CANDIDATES, c.candidate_ids.shape[1]}) if k <= c.candidate_ids.shape[1]}
    summary["users"] = {split: int(c.users.numel()) for split, c in candidates.items()}
    (folder / "candidates.json").write_text(json.dumps(summary, indent=2) + "\n")
    return folder / CANDIDATES_FILE


def load_candidates(folder: str | Path = DEFAULT_CHECKPOINT) -> dict[str, SplitCandidates]:
    """Read the candidates written by `save_candidates`; CheckpointError says how to make them when missing."""
    path = Path(folder) / CANDIDATES_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found. Create it with: python -m recsys.retriever.candidates "
                              f"--checkpoint {folder}")
    tensors = load_file(path)
    splits = {key.split(".")[0] for key in tensors}
    return {s: SplitCandidates(*(tensors[f"{s}.{n}"]
                                 for n in ("users", "targets", "candidate_ids", "candidate_scores")))
            for s in sorted(splits)}


def main(argv=None) -> None:
    """Compute and save the candidates of the validation and test users; print the coverage."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None,
                        help="where to write them (default: the checkpoint folder; an Amazon data set's are too big "
                             "to commit: e.g. runs/candidates-beauty)")
    parser.add_argument("--k", type=int, default=NUM_CANDIDATES,
                        help="candidates per user: 20, or the prior's pool (served_config.json 'pool', e.g. 50)")
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    dataset = load_dataset(load_config(args.checkpoint).get("dataset", "ml-latest-small"), args.data_dir)
    candidates = {split: retrieve_split(model, dataset, split, args.k) for split in ("val", "test")}
    output = Path(args.output or args.checkpoint)
    output.mkdir(parents=True, exist_ok=True)
    path = save_candidates(candidates, output)
    for split, c in candidates.items():
        print(f"{split}: {c.users.numel()} users, coverage@{args.k} = {c.coverage():.4f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
