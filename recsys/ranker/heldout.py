"""Held-out ranker examples: candidates as the ranker sees them at inference, from retrievers that never saw
the positions.

At inference the ranker gets 20 of LRURec's top films for a position LRURec never trained on (its
top-20, or the 20 the prior keeps of its top-P: `recsys.ranker.pool`). Training on random negatives
(the paper's recipe) teaches a small LM a different task. Here one second LRURec per *cut point* c is
trained on every user's training items without their last c items; its top-100 (ids and scores, in
its order; `MAX_POOL`) for the positions between c and c - window items before the end is one example
each, kept when the target is among them. `HeldOutExamples.top(20)` gives the rows of the
valid-retrieval subset (target in the top-20, as at inference with the paper's stage one), on which the
prior is fitted; `recsys.ranker.prior.pooled_heldout_rows` gives the 20 the served pool keeps, on which
the LLM is trained. Cuts 30, 60 and 90 with a window of 30 cover each user's last 90 training positions
once, each scored by a retriever that stopped just before it.

The co-watch prior of an example is counted from what its retriever saw (its truncated sequences),
so no example's own target, nor anything after it, is counted (`recsys.ranker.cowatch`).

`python -m recsys.ranker.heldout` trains those retrievers (resumable, ~4 min each on 2 cores) and
writes `runs/heldout/heldout_examples.safetensors`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from recsys import NUM_CANDIDATES
from recsys.cli import add_dataclass_flags, dataclass_from_args
from recsys.data import SequenceDataset, load_dataset
from recsys.ranker.examples import RankingExample
from recsys.ranker.pool import MAX_POOL
from recsys.retriever.checkpoint import load_model
from recsys.retriever.model import LRURec

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_FILE = "heldout_examples.safetensors"
MIN_KEPT_ITEMS = 5  # a truncated sequence keeps at least this many items (3 to train on, then its own val/test)
VALIDATION_SHARE = 0.15  # share of users whose held-out examples choose checkpoints, weights and recipes


@dataclass
class HeldOutConfig:
    """How the held-out retrievers and their examples are made."""

    cuts: list[int] = field(default_factory=lambda: [30, 60, 90])  # one truncated retriever per cut point
    window: int = 30  # positions scored per cut: from c items before the end up to c - window
    data_dir: str | None = None
    output: str = str(REPO_ROOT / "runs" / "heldout")
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


def held_out_positions(dataset: SequenceDataset, counts: dict[int, int], skip_last: int = 0) -> list[tuple[int, int]]:
    """(user, position) pairs: history = train[:position], target = train[position].

    The positions run from the first held-out one up to, not including, the last `skip_last`
    training positions (those belong to a later cut's retriever).
    """
    return [(u, p) for u in sorted(dataset.sequences)
            for p in range(len(dataset.train(u)) - counts[u], len(dataset.train(u)) - skip_last)]


@torch.no_grad()
def candidate_examples(retriever: LRURec, dataset: SequenceDataset, positions: list[tuple[int, int]],
                       k: int = MAX_POOL, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The retriever's top-`k` (retriever order) for each position, kept when the target is among them.

    Returns users (N,), positions (N,), candidate_ids (N, k), answer_index (N,) as int32 and
    candidate_scores (N, k) float32 (the retriever's raw scores, best first); k is at most the catalog's size.
    """
    k = min(k, retriever.config.num_items)
    kept: dict[str, list] = {"users": [], "positions": [], "candidate_ids": [], "answer_index": [],
                             "candidate_scores": []}
    for start in range(0, len(positions), batch_size):
        batch = positions[start:start + batch_size]
        histories = [dataset.train(u)[:p] for u, p in batch]
        top_ids, top_scores = retriever.retrieve(histories, k)
        for (user, position), ids, scores in zip(batch, top_ids.tolist(), top_scores.tolist()):
            target = dataset.train(user)[position]
            if target in ids:
                kept["users"].append(user)
                kept["positions"].append(position)
                kept["candidate_ids"].append(ids)
                kept["answer_index"].append(ids.index(target))
                kept["candidate_scores"].append(scores)
    tensors = {name: torch.tensor(values, dtype=torch.float32 if name == "candidate_scores" else torch.int32)
               for name, values in kept.items()}
    for name in ("candidate_ids", "candidate_scores"):
        tensors[name] = tensors[name].reshape(-1, k)
    return tensors


@dataclass
class HeldOutExamples:
    """Held-out examples as tensors; row i is user users[i] at training position positions[i]."""

    users: torch.Tensor  # (N,) int
    positions: torch.Tensor  # (N,) int: history = train[:position], target = train[position]
    cuts: torch.Tensor  # (N,) int: the cut point of the retriever that produced the row
    candidate_ids: torch.Tensor  # (N, K) int, that retriever's top-K in its order (K = MAX_POOL; 20 in older files)
    candidate_scores: torch.Tensor  # (N, K) float32, that retriever's scores
    answer_index: torch.Tensor  # (N,) int

    def __len__(self) -> int:
        return int(self.users.numel())

    def select(self, mask: torch.Tensor) -> HeldOutExamples:
        """The rows where the boolean (N,) `mask` is true."""
        return HeldOutExamples(*(getattr(self, name)[mask] for name in self.__dataclass_fields__))

    def top(self, k: int = NUM_CANDIDATES) -> HeldOutExamples:
        """The rows whose target is in the retriever's top-`k`, with those `k` candidates only (ValueError when the
        rows hold fewer)."""
        if self.candidate_ids.shape[1] < k:
            raise ValueError(f"the held-out examples hold the retriever's top-{self.candidate_ids.shape[1]}, not "
                             f"{k}: re-create them with python -m recsys.ranker.heldout --resume")
        rows = self.select(self.answer_index < k)
        return replace(rows, candidate_ids=rows.candidate_ids[:, :k], candidate_scores=rows.candidate_scores[:, :k])

    def histories(self, dataset: SequenceDataset) -> list[list[int]]:
        """Each row's history (item ids, oldest first)."""
        return [dataset.train(u)[:p] for u, p in zip(self.users.tolist(), self.positions.tolist())]

    def ranking_examples(self, dataset: SequenceDataset) -> list[RankingExample]:
        """The rows whose target is in the retriever's top-20 as RankingExamples (that top-20 in its order)."""
        top = self.top()
        return [RankingExample(tuple(h), tuple(ids), a) for h, ids, a in
                zip(top.histories(dataset), top.candidate_ids.tolist(), top.answer_index.tolist())]


def load_held_out(folder: str | Path) -> HeldOutExamples:
    """The examples `build` wrote into `folder`; FileNotFoundError says how to make them."""
    path = Path(folder) / EXAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found. Create it with: python -m recsys.ranker.heldout")
    t = load_file(path)
    cuts = t["cuts"] if "cuts" in t else torch.zeros_like(t["users"])
    return HeldOutExamples(t["users"].long(), t["positions"].long(), cuts.long(), t["candidate_ids"].long(),
                           t["candidate_scores"].float(), t["answer_index"].long())


def is_validation_user(users: torch.Tensor, share: float = VALIDATION_SHARE, seed: int = 0) -> torch.Tensor:
    """(N,) bool: whether each user id belongs to the held-out validation users (a seeded, fixed share of all ids)."""
    generator = torch.Generator().manual_seed(seed)
    draw = torch.rand(int(users.max()) + 1, generator=generator)
    return draw[users] < share


def split_by_user(examples: HeldOutExamples, share: float = VALIDATION_SHARE,
                  seed: int = 0) -> tuple[HeldOutExamples, HeldOutExamples]:
    """(training rows, validation rows): every row of a validation user goes to validation."""
    validation = is_validation_user(examples.users, share, seed)
    return examples.select(~validation), examples.select(validation)


def truncated_sequences(dataset: SequenceDataset, cut: int) -> dict[int, list[int]]:
    """What the retriever of `cut` saw: each user's training items without its held-out last ones."""
    return truncated_dataset(dataset, held_out_counts(dataset, cut)).sequences


def build(config: HeldOutConfig) -> dict:
    """Train the truncated retrievers (or reuse them), write the held-out examples and a summary.

    Returns the summary."""
    from recsys.retriever.train import TrainConfig, train

    if any(c < config.window for c in config.cuts):
        raise ValueError(f"every cut must be >= the window ({config.window}), got {config.cuts}")
    output = Path(config.output)
    dataset = load_dataset("ml-latest-small", config.data_dir)
    parts, per_cut = [], {}
    for cut in config.cuts:
        counts = held_out_counts(dataset, cut)
        retriever_dir = output / f"cut-{cut}" / "retriever"
        if config.resume and (retriever_dir / "metrics.json").is_file():
            print(f"reusing the held-out retriever in {retriever_dir}")
        else:
            train(TrainConfig(output=str(retriever_dir), state_dir=str(output / f"cut-{cut}" / "retriever-state"),
                              seed=config.seed, eval_every=config.eval_every, patience=config.patience,
                              resume=config.resume), truncated_dataset(dataset, counts))
        positions = held_out_positions(dataset, counts, skip_last=cut - config.window)
        tensors = candidate_examples(load_model(retriever_dir), dataset, positions)
        tensors["cuts"] = torch.full_like(tensors["users"], cut)
        parts.append(tensors)
        in_top20 = int((tensors["answer_index"] < NUM_CANDIDATES).sum())
        per_cut[cut] = {"positions": len(positions), "examples": int(tensors["users"].numel()),
                        "coverage@20": round(in_top20 / max(len(positions), 1), 4),
                        f"coverage@{MAX_POOL}": round(tensors["users"].numel() / max(len(positions), 1), 4)}
        print(f"cut {cut}: {per_cut[cut]}")
    examples = {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
    output.mkdir(parents=True, exist_ok=True)
    save_file(examples, output / EXAMPLES_FILE)
    answers = torch.bincount(examples["answer_index"].long(), minlength=MAX_POOL)[:NUM_CANDIDATES]
    validation = is_validation_user(examples["users"].long())
    summary = {"config": asdict(config), "per_cut": per_cut, "examples": int(examples["users"].numel()),
               "examples_in_top20": int((examples["answer_index"] < NUM_CANDIDATES).sum()),
               "validation_examples": int(validation.sum()),
               "validation_examples_in_top20": int((validation & (examples["answer_index"] < NUM_CANDIDATES)).sum()),
               "validation_users": int(examples["users"][validation].unique().numel()),
               "users_with_examples": int(examples["users"].unique().numel()),
               "answer_position_share": [round(c / max(int(answers.sum()), 1), 4) for c in answers.tolist()]}
    (output / "heldout_examples.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "answer_position_share"}))
    return summary


def parse_args(argv=None) -> HeldOutConfig:
    """Flags: one per HeldOutConfig field."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, HeldOutConfig,
                        helps={"resume": "reuse finished retrievers, continue an interrupted one"})
    return dataclass_from_args(HeldOutConfig, parser.parse_args(argv))


if __name__ == "__main__":
    build(parse_args())
