"""Top-k metrics with one relevant item per user: Recall (hit rate), NDCG and MRR."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

KS = (1, 5, 10, 20, 50)


def ranks_of_targets(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target among its row's scores (B, N) -> (B,); ties count against the target."""
    target_scores = scores.gather(1, targets.view(-1, 1))
    return (scores >= target_scores).sum(dim=1)


def metrics_from_ranks(ranks: Iterable[float], ks: Sequence[int] = KS) -> dict[str, float]:
    """Mean Recall@k, NDCG@k and MRR@k over users, from each user's 1-based target rank.

    A rank of `math.inf` (target not retrieved) counts as a miss. Keys look like "R@10", "N@10", "M@10".
    """
    ranks = [float(r) for r in ranks]
    if not ranks:
        raise ValueError("no ranks to average")
    result: dict[str, float] = {}
    for k in ks:
        hits = [r for r in ranks if r <= k]
        result[f"R@{k}"] = len(hits) / len(ranks)
        result[f"N@{k}"] = sum(1 / math.log2(r + 1) for r in hits) / len(ranks)
        result[f"M@{k}"] = sum(1 / r for r in hits) / len(ranks)
    return result


def ndcg_at(rank: float, k: int) -> float:
    """One user's NDCG@k for a 1-based target rank (0 beyond k or when not retrieved)."""
    return 1 / math.log2(rank + 1) if rank <= k else 0.0


def paired_bootstrap(ours: Sequence[float], baseline: Sequence[float], resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(ours - baseline) over users resampled with replacement (paired)."""
    if len(ours) != len(baseline) or not ours:
        raise ValueError("need the same, non-zero number of users in both")
    differences = torch.tensor(ours, dtype=torch.float64) - torch.tensor(baseline, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(differences), (resamples, len(differences)), generator=generator)
    means = differences[picks].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return low, high


def spearman(a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor) -> float:
    """Spearman rank correlation of two equally long score vectors (ties broken by position)."""
    ranks = torch.stack([torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)])
    return torch.corrcoef(ranks.argsort(dim=1).argsort(dim=1).double())[0, 1].item()


def format_table(rows: dict[str, dict[str, float]], columns: Sequence[str]) -> str:
    """A plain-text table: one row per name, one column per metric key, 4 decimals."""
    name_width = max(len(n) for n in rows) + 2
    lines = [" " * name_width + "".join(f"{c:>9}" for c in columns)]
    for name, values in rows.items():
        cells = "".join(f"{values[c]:>9.4f}" if c in values else f"{'-':>9}" for c in columns)
        lines.append(f"{name:<{name_width}}{cells}")
    return "\n".join(lines)
