"""The candidate pool: LRURec retrieves its top-P, the fixed prior keeps the best 20 for the LLM to rank.

With P = 20 this is the paper's stage one (LRURec's top-20). A film LRURec ranks 21st can then never be
recommended, however strongly the co-watch prior backs it; with P > 20 the prior (w_r * log-softmax
(LRURec) + w_c * co-watch, `recsys.ranker.fusion.prior_scores`) re-ranks the P and the best 20 go on, in
LRURec's order (so the letters follow the retriever as before). P is chosen on the 610 validation users
by NDCG@10 of the prior's order (`choose_pool`; `python -m recsys.ranker.prior --write` saves it in
prior.json, `bench/candidate_pool.py` prints the evidence). Serving (`Pipeline.retrieve`) and
evaluation (`recsys.ranker.evaluate.split_rows`) both call `keep_best`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from recsys import NUM_CANDIDATES
from recsys.data import SequenceDataset
from recsys.data.errors import one_line
from recsys.metrics import ndcg_at, paired_bootstrap
from recsys.ranker.cowatch import CoWatchCounts
from recsys.ranker.fusion import FusionWeights, prior_scores
from recsys.retriever.candidates import retrieve_split
from recsys.retriever.model import LRURec

POOL_GRID = (20, 30, 50, 100)
PRIOR_FILE = "prior.json"  # the prior's choices, beside the adapter (`python -m recsys.ranker.prior --write`)


def keep_best(retriever_scores: torch.Tensor, cowatch_scores: torch.Tensor, weights: FusionWeights,
              keep: int = NUM_CANDIDATES) -> torch.Tensor:
    """Indices (B, keep) into each row's P pooled candidates (B, P; retriever order) of the `keep` best by the
    prior, returned in the retriever's order. Ties in the prior go to the retriever's order; P <= keep keeps all."""
    if retriever_scores.shape[-1] <= keep:
        return torch.arange(retriever_scores.shape[-1]).expand(retriever_scores.shape).clone()
    prior = prior_scores(retriever_scores, cowatch_scores, weights)
    best = prior.argsort(dim=-1, descending=True, stable=True)[..., :keep]
    return best.sort(dim=-1).values


def pooled_ndcg(model: LRURec, dataset: SequenceDataset, counts: CoWatchCounts, weights: FusionWeights,
                pool: int, split: str = "val") -> dict[str, list[float]]:
    """Per user of `split`: NDCG@10, Recall@10 and coverage@20 of the prior's order of the 20 kept from LRURec's
    top-`pool` (a target not kept counts as a miss)."""
    candidates = retrieve_split(model, dataset, split, k=pool)
    histories = [(dataset.val_input(u) if split == "val" else dataset.test_input(u))[0]
                 for u in candidates.users.tolist()]
    ids = candidates.candidate_ids.long()
    scores = candidates.candidate_scores.float()
    cowatch = counts.scores(histories, ids)
    kept = keep_best(scores, cowatch, weights)
    prior = prior_scores(scores.gather(1, kept), cowatch.gather(1, kept), weights)
    ranked = ids.gather(1, kept).gather(1, prior.argsort(dim=-1, descending=True, stable=True))
    hit = ranked == candidates.targets.long().view(-1, 1)
    ranks = torch.where(hit.any(1), hit.float().argmax(1) + 1, torch.full((len(ranked),), float("inf"))).tolist()
    return {"N@10": [ndcg_at(r, 10) for r in ranks], "R@10": [float(r <= 10) for r in ranks],
            "coverage@20": [float(r <= NUM_CANDIDATES) for r in ranks]}


def choose_pool(model: LRURec, dataset: SequenceDataset, counts: CoWatchCounts, weights: FusionWeights,
                pools=POOL_GRID) -> tuple[int, list[dict]]:
    """(the pool size with the best mean validation NDCG@10, within 0.001 the smaller; every size's means and
    paired-bootstrap intervals against a pool of 20)."""
    per_user = {pool: pooled_ndcg(model, dataset, counts, weights, pool) for pool in pools}
    rows = []
    for pool in pools:
        row = {"pool": pool, **{k: round(sum(v) / len(v), 4) for k, v in per_user[pool].items()}}
        if pool != NUM_CANDIDATES and NUM_CANDIDATES in per_user:
            row["ci95_diff_vs_20"] = {k: [round(x, 4) for x in paired_bootstrap(per_user[pool][k],
                                                                                 per_user[NUM_CANDIDATES][k])]
                                      for k in ("N@10", "R@10")}
        rows.append(row)
    best = max(row["N@10"] for row in rows)
    return min(row["pool"] for row in rows if row["N@10"] >= best - 0.001), rows


def read_pool(folder: str | Path | None) -> int:
    """How many of LRURec's top films the prior re-ranks to keep 20 (prior.json "pool"; 20, the paper's stage one,
    when `folder` or the key is absent)."""
    path = Path(folder or ".") / PRIOR_FILE
    fix = "Re-create it with: python -m recsys.ranker.prior --write"
    if not folder or not path.is_file():
        return NUM_CANDIDATES
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # ValueError covers bad JSON and bad UTF-8
        raise ValueError(f"{path} is corrupt ({one_line(error)}). {fix}") from error
    pool = saved.get("pool", NUM_CANDIDATES) if isinstance(saved, dict) else None
    if not isinstance(pool, int) or isinstance(pool, bool) or pool < NUM_CANDIDATES:
        raise ValueError(f"{path}: pool must be a whole number >= {NUM_CANDIDATES}, got {pool!r}. {fix}")
    return pool
