"""Ranking rows: the tasks a ranker is scored on, one per user of a split (or per held-out position), each with its
20 candidates and every opinion's scores of them.

`split_rows` builds a split's rows as the app serves them: LRURec's top-`pool`, of which the prior keeps 20
(`recsys.ranker.pool.keep_best`); `served_rows` reads the pool and weights from a ranker folder. Evaluation
(`recsys.ranker.evaluate`), training validation and the benchmarks score and rank these rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from recsys import NUM_CANDIDATES
from recsys.data import SequenceDataset
from recsys.ranker.artefacts import RankerArtefacts
from recsys.ranker.cowatch import CoWatchCounts
from recsys.ranker.examples import RankingExample
from recsys.ranker.fusion import FusionWeights, retriever_opinion
from recsys.ranker.pool import keep_best
from recsys.retriever.candidates import SplitCandidates


@dataclass
class RankingRows:
    """Ranking tasks (one per user, or per held-out position) with every opinion's scores of their 20 candidates."""

    histories: list[list[int]]  # item ids, oldest first
    candidate_ids: torch.Tensor  # (N, K) the retriever's order
    retriever_scores: torch.Tensor  # (N, K) raw retriever scores
    cowatch: torch.Tensor  # (N, K) co-watch scores
    target_index: torch.Tensor  # (N,) 0-based position of the target among the candidates; -1: a pool dropped it
    total_users: int  # users of the whole split, for overall metrics (misses outside the rows)
    llm: torch.Tensor | None = None  # (N, K) the LLM's log-probabilities once scored
    titles: torch.Tensor | None = None  # (N, K) the title-likelihood opinion once scored (`score_titles`)
    users: torch.Tensor | None = None  # (N,) the user of each row (split rows); None for held-out examples
    retriever_rank: torch.Tensor | None = None  # (N,) the target's rank in the retriever's own ranking (inf: beyond
    # its pool); None: its place among the candidates, which are then the retriever's top ones in its order

    def __len__(self) -> int:
        return len(self.histories)

    def retriever_ranks(self) -> torch.Tensor:
        """(N,) float: each target's rank in the retriever's own ranking."""
        return self.retriever_rank if self.retriever_rank is not None else (self.target_index + 1).float()

    def subset(self) -> torch.Tensor:
        """(N,) bool: the paper's valid-retrieval subset, rows whose target is in the retriever's top-20."""
        return self.retriever_ranks() <= NUM_CANDIDATES

    def opinions(self) -> dict[str, torch.Tensor]:
        """The named opinions (N, K) for `recsys.ranker.fusion`; "llm" only once scored."""
        named = {"retriever": retriever_opinion(self.retriever_scores), "cowatch": self.cowatch}
        if self.llm is not None:
            named["llm"] = self.llm
        if self.titles is not None:
            named["titles"] = self.titles
        return named

    def ranking_examples(self) -> list[RankingExample]:
        """Rows as training examples (candidates in the rows' order); every row must hold its target."""
        if (self.target_index < 0).any():
            raise ValueError("a training example needs its target among the candidates")
        return [RankingExample(tuple(h), tuple(ids), a) for h, ids, a in
                zip(self.histories, self.candidate_ids.tolist(), self.target_index.tolist())]

    def select(self, index: list[int]) -> RankingRows:
        """The rows at `index`, in that order."""
        picked = torch.as_tensor(index, dtype=torch.long)
        return replace(self, histories=[self.histories[i] for i in index], candidate_ids=self.candidate_ids[picked],
                       retriever_scores=self.retriever_scores[picked], cowatch=self.cowatch[picked],
                       target_index=self.target_index[picked],
                       llm=None if self.llm is None else self.llm[picked],
                       titles=None if self.titles is None else self.titles[picked],
                       users=None if self.users is None else self.users[picked],
                       retriever_rank=None if self.retriever_rank is None else self.retriever_rank[picked])


def sample_rows(rows: list[int], max_users: int | None = None, seed: int = 0) -> list[int]:
    """`rows`, or a seeded sample of `max_users` of them (in their order) when given."""
    if max_users is not None and max_users < len(rows):
        generator = torch.Generator().manual_seed(seed)
        picked = torch.randperm(len(rows), generator=generator)[:max_users].tolist()
        rows = sorted(rows[i] for i in picked)
    return rows


def histories_of(dataset: SequenceDataset, split: str, users: list[int]) -> list[list[int]]:
    """Input histories (item ids) of `users` for "val" or "test"."""
    return [(dataset.val_input(u) if split == "val" else dataset.test_input(u))[0] for u in users]


def split_rows(dataset: SequenceDataset, split: str, candidates: SplitCandidates, counts: CoWatchCounts | None,
               max_users: int | None = None, seed: int = 0, pool: int = NUM_CANDIDATES,
               weights: FusionWeights | None = None) -> RankingRows:
    """A split's ("val" or "test") users to rank, as RankingRows, co-watch scored with `counts` (zeros without).

    With `pool` 20 (the paper's stage one): the valid-retrieval subset, each row LRURec's top-20. With a
    larger pool (`candidates` must hold LRURec's top-`pool`; `counts` and the prior `weights` required):
    each user's 20 are the prior's best of the pool (`recsys.ranker.pool.keep_best`, as the app), and the
    rows are the subset users (a target the pool dropped gets target_index -1, a miss) plus the users whose
    target LRURec ranked 21..pool and the prior kept. `retriever_rank` keeps LRURec's own rank of each
    target, so the retriever's row stays LRURec's ranking. A seeded sample of `max_users` rows when given.
    """
    available = candidates.candidate_ids.shape[1]
    if available < pool:
        raise ValueError(f"the candidates hold LRURec's top-{available}, the pool needs {pool}: re-create them with "
                         f"python -m recsys.retriever.candidates --k {pool}")
    ids, scores = candidates.candidate_ids[:, :pool].long(), candidates.candidate_scores[:, :pool].float()
    histories = histories_of(dataset, split, candidates.users.tolist())
    cowatch = counts.scores(histories, ids) if counts else torch.zeros(ids.shape)
    if pool > NUM_CANDIDATES:
        if counts is None or weights is None:
            raise ValueError("a candidate pool needs the co-watch counts and the prior's weights")
        kept = keep_best(scores, cowatch, weights)
    else:
        kept = torch.arange(NUM_CANDIDATES).expand(len(ids), -1)
    ids, scores, cowatch = ids.gather(1, kept), scores.gather(1, kept), cowatch.gather(1, kept)
    position = candidates.target_positions().long()
    retriever_rank = torch.where((position >= 0) & (position < pool), position + 1.0, torch.tensor(math.inf))
    hit = ids == candidates.targets.long().view(-1, 1)
    target_index = torch.where(hit.any(dim=1), hit.int().argmax(dim=1), torch.tensor(-1))
    rows = sample_rows(((retriever_rank <= NUM_CANDIDATES) | (target_index >= 0)).nonzero().flatten().tolist(),
                       max_users, seed)
    picked = torch.tensor(rows, dtype=torch.long)
    return RankingRows([histories[i] for i in rows], ids[picked], scores[picked], cowatch[picked], target_index[picked],
                       int(candidates.users.numel()), users=candidates.users[picked].long(),
                       retriever_rank=retriever_rank[picked])


def pool_trade(rows: RankingRows) -> dict[str, int]:
    """What a candidate pool did to the rows' targets: subset targets it dropped, targets beyond LRURec's top-20 it
    brought in (both 0 without a pool)."""
    subset, kept = rows.subset(), rows.target_index >= 0
    return {"subset_targets_dropped": int((subset & ~kept).sum()), "targets_brought_in": int((~subset & kept).sum())}


def served_rows(dataset: SequenceDataset, split: str, candidates: SplitCandidates, ranker: RankerArtefacts,
                counts: CoWatchCounts | None, max_users: int | None = None) -> RankingRows:
    """`split_rows` as the app serves `ranker`: its served candidate pool and fusion weights, with `counts` (the
    ranker's own, or a data set's); LRURec's top-20 without counts."""
    pool = ranker.pool if counts is not None else NUM_CANDIDATES
    return split_rows(dataset, split, candidates, counts, max_users, pool=pool, weights=ranker.fusion)
