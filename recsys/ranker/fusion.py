"""Final ranking: the verbalizer's log-probabilities plus a weighted share of the retriever's.

weight 0 is the paper's LlamaRec (the LLM alone); a large weight falls back to the retriever's order.
The weight is chosen on validation users and saved with the adapter.
"""

from __future__ import annotations

import torch

RETRIEVER_ORDER = 1000.0  # a weight this large reproduces the retriever's order
WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, RETRIEVER_ORDER)


def llm_share(weight: float) -> float:
    """The fusion weight as the LLM's share s in [0, 1]: s log p_LLM + (1 - s) log p_retriever orders as weight does."""
    return 1.0 / (1.0 + weight)


def order_at_share(llm_probabilities: torch.Tensor, retriever_scores: torch.Tensor, share: float) -> list[int]:
    """Candidate indices, best first, by s log p_LLM + (1 - s) log softmax(retriever); ties keep the retriever's order.

    s = 0 is the retriever's order, s = 1 the LLM alone (the fusion explorer's slider).
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the LLM's share must lie in [0, 1], got {share}")
    llm = torch.log(llm_probabilities.clamp_min(1e-12))
    scores = share * llm + (1.0 - share) * torch.log_softmax(retriever_scores.float(), dim=-1)
    return sorted(range(scores.numel()), key=lambda i: (-scores[i].item(), i))


def final_order(llm_probabilities: torch.Tensor, retriever_scores: torch.Tensor, weight: float) -> list[int]:
    """Candidate indices, best first, by log p_LLM + weight * log softmax(retriever) for one user's (K,) vectors."""
    return order_at_share(llm_probabilities, retriever_scores, llm_share(weight))
