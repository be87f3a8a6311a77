"""The candidate pool: LRURec retrieves its top-P, the fixed prior keeps the best 20 for the LLM to rank.

With P = 20 this is the paper's stage one (LRURec's top-20). A film LRURec ranks 21st can then never be
recommended, however strongly the co-watch prior backs it; with P > 20 the prior (w_r * log-softmax
(LRURec) + w_c * co-watch, `recsys.ranker.fusion.prior_scores`) re-ranks the P and the best 20 go on, in
LRURec's order (so the letters follow the retriever as before). P is chosen on the 610 validation users
by NDCG@10 of the prior's order (`recsys.ranker.prior.choose_pool`; `python -m recsys.ranker.prior --write`
saves it in prior.json, `bench/candidate_pool.py` prints the evidence). Serving (`Pipeline.retrieve`) and
evaluation (`recsys.ranker.evaluate.split_rows`) both call `keep_best`, and so does training: the LLM learns on
the held-out candidates the same pool keeps (`recsys.ranker.prior.pooled_heldout_rows`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from recsys import NUM_CANDIDATES
from recsys.data.errors import one_line
from recsys.ranker.fusion import FusionWeights, prior_scores

PRIOR_FILE = "prior.json"  # the prior's choices, beside the adapter (`python -m recsys.ranker.prior --write`)
MAX_POOL = 100  # the largest pool the prior may choose; held-out examples keep LRURec's top-MAX_POOL


def keep_best(retriever_scores: torch.Tensor, cowatch_scores: torch.Tensor, weights: FusionWeights,
              keep: int = NUM_CANDIDATES) -> torch.Tensor:
    """Indices (B, keep) into each row's P pooled candidates (B, P; retriever order) of the `keep` best by the
    prior, returned in the retriever's order. Ties in the prior go to the retriever's order; P <= keep keeps all."""
    if retriever_scores.shape[-1] <= keep:
        return torch.arange(retriever_scores.shape[-1]).expand(retriever_scores.shape).clone()
    prior = prior_scores(retriever_scores, cowatch_scores, weights)
    best = prior.argsort(dim=-1, descending=True, stable=True)[..., :keep]
    return best.sort(dim=-1).values


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
