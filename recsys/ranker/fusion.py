"""The one fusion rule: the final score of a candidate is a weighted sum of named opinions, each a log-score.

Opinions of one user's K candidates, each (K,) or (B, K):
- "retriever": log-softmax of LRURec's scores over the candidates,
- "cowatch":  the co-watch prior's score (`recsys.ranker.cowatch`),
- "llm":      log-softmax of the verbalizer's letter logits, mapped back to the candidates,
- "titles":   log-softmax of each candidate title's likelihood after the history (`recsys.ranker.title_likelihood`).

final = sum of weight x opinion over the names, and softmax(final) is the
final probability. Training uses the same sum with w_llm = 1 (the LLM learns the residual of the
fixed prior; Clark et al. 2019's product of experts), evaluation and the app rank by it, and the
fusion explorer moves the weights without a model call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

OPINIONS = ("retriever", "cowatch", "llm", "titles")
# the smallest probability an LLM opinion carries to the page (and back into the fusion: `pipeline.candidate_opinions`)
PROBABILITY_FLOOR = 1e-30


@dataclass(frozen=True)
class FusionWeights:
    """Weight of each opinion in the final score (the prior's weights are fitted on held-out training examples)."""

    retriever: float = 1.0
    cowatch: float = 0.0
    llm: float = 1.0
    titles: float = 0.0  # the LLM asked a second way: its title likelihood (no letters)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and value >= 0.0):  # also refuses NaN
                raise ValueError(f"fusion weight {name} must be a number >= 0, got {value!r}")

    @property
    def prior(self) -> FusionWeights:
        """These weights without the LLM's two opinions (verbalizer and title likelihood): the co-watch prior."""
        return replace(self, llm=0.0, titles=0.0)

LLM_ALONE = FusionWeights(retriever=0.0, cowatch=0.0, llm=1.0)  # the verbalizer's ranking, as the paper ranks


def retriever_opinion(retriever_scores: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the retriever's raw scores over the candidates (last dimension)."""
    return torch.log_softmax(retriever_scores.float(), dim=-1)


def llm_opinion(letter_logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the verbalizer's logits over the candidates (last dimension)."""
    return torch.log_softmax(letter_logits.float(), dim=-1)


def fused_scores(opinions: dict[str, torch.Tensor], weights: FusionWeights) -> torch.Tensor:
    """sum_name weight[name] * opinions[name]; an opinion with weight 0 may be missing. Shapes (K,) or (B, K)."""
    unknown = set(opinions) - set(OPINIONS)
    if unknown:
        raise ValueError(f"unknown opinions {sorted(unknown)}; expected some of {OPINIONS}")
    total = None
    for name in OPINIONS:
        weight = getattr(weights, name)
        if weight == 0.0:
            continue
        if name not in opinions:
            raise ValueError(f"the {name} opinion is missing but has weight {weight}")
        term = weight * opinions[name].float()
        total = term if total is None else total + term
    if total is None:  # every weight 0: no opinion, keep the retriever's order
        return torch.zeros_like(next(iter(opinions.values())).float())
    return total


def prior_scores(retriever_scores: torch.Tensor, cowatch_scores: torch.Tensor, weights: FusionWeights) -> torch.Tensor:
    """The fixed prior the LLM is trained on top of: the fused score without the LLM, (B, K)."""
    return fused_scores({"retriever": retriever_opinion(retriever_scores), "cowatch": cowatch_scores},
                        weights.prior)


def order(scores: torch.Tensor) -> list[int]:
    """Candidate indices of one user's (K,) fused scores, best first; ties keep the retriever's order."""
    values = scores.tolist()
    return sorted(range(len(values)), key=lambda i: (-values[i], i))


def describe_fusion(weights: FusionWeights) -> str:
    """The final score in words, e.g. "0.46 x log p(retriever) + 1.49 x co-watch + 1 x log p(LLM)"."""
    terms = [f"{weights.retriever:g} × log p(retriever)" if weights.retriever else "",
             f"{weights.cowatch:g} × co-watch" if weights.cowatch else "",
             f"{weights.llm:g} × log p(LLM)" if weights.llm else "",
             f"{weights.titles:g} × log p(LLM, title likelihood)" if weights.titles else ""]
    return " + ".join(t for t in terms if t) or "no opinion (the retriever's order)"
