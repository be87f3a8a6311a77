"""The candidate pool: LRURec retrieves its top-P, the fixed prior keeps the best 20 for the LLM to rank.

With P = 20 this is the paper's stage one (LRURec's top-20). A film LRURec ranks 21st can then never be
recommended, however strongly the co-watch prior backs it; with P > 20 the prior (w_r * log-softmax
(LRURec) + w_c * co-watch, `recsys.ranker.fusion.prior_scores`) re-ranks the P and the best 20 go on, in
LRURec's order (so the letters follow the retriever's order, as with P = 20). P is chosen on the 610 validation users
by NDCG@10 of the prior's order (`recsys.ranker.prior.choose_pool`; `python -m recsys.ranker.prior --write`
saves it in served_config.json, `bench/candidate_pool.py` prints the evidence). Serving (`RetrievalStage.retrieve`) and
evaluation (`recsys.ranker.rows.split_rows`) both call `keep_best`, and so does training: the LLM learns on
the held-out candidates the same pool keeps (`recsys.ranker.prior.pooled_heldout_rows`).
"""

from __future__ import annotations

import torch

from recsys import NUM_CANDIDATES
from recsys.ranker.fusion import FusionWeights, prior_scores

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
