"""Final ranking: the verbalizer's log-probabilities plus a weighted share of the retriever's.

weight 0 is the paper's LlamaRec (the LLM alone); a large weight falls back to the retriever's order.
The weight is chosen on validation users and saved with the adapter.
"""

from __future__ import annotations

import torch

RETRIEVER_ORDER = 1000.0  # a weight this large reproduces the retriever's order
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, RETRIEVER_ORDER)


def fused_scores(llm_probabilities: torch.Tensor, retriever_scores: torch.Tensor, weight: float) -> torch.Tensor:
    """log p_LLM + weight * log softmax(retriever scores), over the same candidates (..., K) -> (..., K)."""
    llm = torch.log(llm_probabilities.clamp_min(1e-12))
    return llm + weight * torch.log_softmax(retriever_scores.float(), dim=-1)


def final_order(llm_probabilities: torch.Tensor, retriever_scores: torch.Tensor, weight: float) -> list[int]:
    """Candidate indices, best first, for one user's (K,) vectors; ties keep the retriever's order."""
    scores = fused_scores(llm_probabilities, retriever_scores, weight)
    return sorted(range(scores.numel()), key=lambda i: (-scores[i].item(), i))
