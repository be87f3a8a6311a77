"""Two-stage evaluation: each user's 20 candidates (LRURec's top-20, or the prior's best 20 of LRURec's top-50:
`recsys.ranker.pool`) ranked by the fused opinions (retriever, co-watch, LLM).

`python -m recsys.ranker.evaluate --adapter checkpoints/llamarec-smollm2-135m-ml-latest-small --json out.json`
`accelerate launch --num_processes 2 -m recsys.ranker.evaluate ...` shards the users over 2 processes (GPUs, or
CPU processes with `--cpu`) and gathers their scores: the same metrics as one process.

Metrics follow the paper: on the valid-retrieval subset (users whose held-out item is in LRURec's top-20; a
target the pool dropped is a miss) and overall (every user; a target outside the 20 a miss). Every caller
(training validation, evaluation, benchmarks) scores the LLM through `score_llm`, the app through the same
`recsys.ranker.verbalizer.letter_logits`, and ranks by `recsys.ranker.fusion`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm

from recsys.data import Catalog, load_dataset
from recsys.distributed import is_main_process, sharded
from recsys.metrics import format_table, metrics_from_ranks, ndcg_at, paired_bootstrap
from recsys.ranker.artefacts import RankerArtefacts
from recsys.ranker.fusion import FusionWeights, fused_scores, llm_opinion
from recsys.ranker.folded import fold_served_adapter
from recsys.ranker.model import DEFAULT_ADAPTER, RankerLoadConfig, load_ranker
from recsys.ranker.prompt import PromptConfig, evidence_notes, prompt_from_ids
from recsys.ranker.rows import RankingRows, pool_trade, served_rows
from recsys.ranker.title_likelihood import TitleConfig, title_log_likelihoods, title_texts
from recsys.ranker.verbalizer import build_prefix_cache, letter_logits, letter_token_ids
from recsys.results import write_json
from recsys.retriever.candidates import load_candidates
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

EVAL_KS = (1, 5, 10)


def score_llm(model, tokenizer, catalog: Catalog, rows: RankingRows, prompt_config: PromptConfig,
              batch_size: int = 1, progress: bool = True, permutation: torch.Tensor | None = None) -> RankingRows:
    """The rows with the LLM's log-probabilities (N, K) filled in: one verbalizer pass per prompt.

    `batch_size` 1 (the default) scores exactly as the app does: one unpadded prompt per pass after the
    cached instruction prefix (`build_prefix_cache`), so that every figure measured here is the one a
    user gets; larger batches are left-padded and can differ in the last bits of bf16.
    The prompt lists the candidates in the retriever's order, or in `permutation[i]` order for row i
    ((N, K) indices; the scores come back in the retriever's order either way). Under `accelerate launch` each
    process scores its share of the rows and all get every row back (`recsys.distributed.sharded`).
    """
    letter_ids = letter_token_ids(tokenizer)
    was_training = model.training
    model.eval()
    prefix = build_prefix_cache(model, tokenizer, prompt_config.instruction)  # as the app: the shared instruction's
    # keys/values computed once

    def score(mine: list[int]) -> list[torch.Tensor]:
        scores = []
        for start in tqdm(range(0, len(mine), batch_size), desc="verbalizer", disable=not progress, leave=False):
            index = mine[start:start + batch_size]
            orders = [permutation[i] if permutation is not None else torch.arange(rows.candidate_ids.shape[1])
                      for i in index]
            prompts = [prompt_from_ids(tokenizer, catalog, rows.histories[i], rows.candidate_ids[i][o].tolist(),
                                       prompt_config,
                                       notes=evidence_notes(rows.cowatch[i], o) if prompt_config.evidence else None)
                       for i, o in zip(index, orders)]
            logits = letter_logits(model, tokenizer, [p.text for p in prompts], letter_ids, prefix).cpu()
            for row, o in zip(llm_opinion(logits), orders):
                back = torch.empty_like(row)
                back[o] = row  # the candidate shown at letter j is candidate o[j] of the retriever's order
                scores.append(back)
        return scores

    scored = sharded(len(rows), score)
    model.train(was_training)
    return replace(rows, llm=torch.stack(scored))


def score_titles(model, tokenizer, catalog: Catalog, rows: RankingRows, config: TitleConfig,
                 progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's candidates' title log-likelihoods after its history: (sums (N, K), token counts (N, K)), the
    app's computation (`title_log_likelihoods`, one user at a time); `title_opinion` turns them into the opinion.
    Sharded across processes under `accelerate launch`, as `score_llm`."""
    was_training = model.training
    model.eval()

    def score(mine: list[int]) -> list[torch.Tensor]:
        pairs = []
        for i in tqdm(mine, desc="title likelihood", disable=not progress, leave=False):
            history = title_texts(tokenizer, catalog, rows.histories[i][-config.max_history:], config)
            titles = title_texts(tokenizer, catalog, rows.candidate_ids[i].tolist(), config)
            pairs.append(torch.stack(title_log_likelihoods(model, tokenizer, history, titles, config.domain)))
        return pairs

    scored = torch.stack(sharded(len(rows), score))  # (N, 2, K): sums and token counts
    model.train(was_training)
    return scored[:, 0], scored[:, 1]


RETRIEVER = FusionWeights(retriever=1.0, cowatch=0.0, llm=0.0)


def target_ranks(rows: RankingRows, weights: FusionWeights) -> torch.Tensor:
    """1-based rank (N,) float of each row's target in the fused order; ties go to the retriever's order; inf
    where the target is not among the row's candidates. RETRIEVER's ranks are the retriever's own ranking
    (`RankingRows.retriever_ranks`: its order of the candidates unless a pool re-ranked them); so do weights
    without co-watch and LLM."""
    if weights.cowatch == weights.llm == weights.titles == 0:  # the retriever alone (any weight) ranks as it does
        return rows.retriever_ranks()
    scores = fused_scores(rows.opinions(), weights)
    target_index = rows.target_index.clamp_min(0).view(-1, 1)
    target = scores.gather(1, target_index)
    index = torch.arange(scores.shape[1]).view(1, -1)
    ahead = (scores > target) | ((scores == target) & (index < target_index))
    return torch.where(rows.target_index >= 0, ahead.sum(dim=1) + 1.0, torch.tensor(math.inf))


def all_user_ranks(rows: RankingRows, weights: FusionWeights, users: list[int]) -> list[float]:
    """Each of `users`' target ranks in the fused order of split rows, in the order of `users` (inf for a user
    without a row), so that two systems' ranks pair user by user."""
    if rows.users is None:
        raise ValueError("all_user_ranks needs split rows (each row's user)")
    ranks = dict(zip(rows.users.tolist(), target_ranks(rows, weights).tolist()))
    return [ranks.get(user, math.inf) for user in users]


def ranking_metrics(rows: RankingRows, weights: FusionWeights) -> dict[str, dict[str, float]]:
    """{"subset": metrics over the valid-retrieval subset, "overall": over every user of the split} at k in
    EVAL_KS for the fused order."""
    ranks = target_ranks(rows, weights)
    misses = [math.inf] * (rows.total_users - len(rows))
    return {"subset": metrics_from_ranks(ranks[rows.subset()].tolist(), EVAL_KS),
            "overall": metrics_from_ranks(ranks.tolist() + misses, EVAL_KS)}


def subset_ndcgs(rows: RankingRows, weights: FusionWeights) -> list[float]:
    """NDCG@10 of each valid-retrieval subset row's target in the fused order."""
    return [ndcg_at(r, 10) for r in target_ranks(rows, weights)[rows.subset()].tolist()]


def ndcg10(rows: RankingRows, weights: FusionWeights) -> float:
    """Mean subset NDCG@10 of the fused order."""
    values = subset_ndcgs(rows, weights)
    return sum(values) / len(values)


def rows_ndcgs(rows: RankingRows, weights: FusionWeights) -> list[float]:
    """NDCG@10 of every row's target in the fused order (a target the pool dropped: 0)."""
    return [ndcg_at(r, 10) for r in target_ranks(rows, weights).tolist()]


def rows_ndcg10(rows: RankingRows, weights: FusionWeights) -> float:
    """Mean NDCG@10 of the fused order over every row (`rows_ndcgs`), what validation chooses weights by. Rows
    without a pool (each target among its retriever's top-20) are all subset rows: `ndcg10`."""
    return sum(rows_ndcgs(rows, weights)) / len(rows)


WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # an LLM opinion's weight on top of the prior, chosen on validation


def choose_weight(rows: RankingRows, base: FusionWeights, opinion: str = "llm",
                  grid=WEIGHT_GRID) -> tuple[FusionWeights, dict[float, float]]:
    """`opinion`'s weight ("llm" or "titles") on top of `base` with the best NDCG@10 over the rows (`rows_ndcg10`)
    among `grid` (ties: the smaller), and the NDCG@10 at every weight of WEIGHT_GRID. The rows must hold the
    opinion's scores.

    The point estimate, not a gain beyond its interval: weight 0 is on the grid and wins ties, and a small weight
    chosen on noise costs little (RESULTS.md, "How choices are made"; replacing a committed artefact is held to the
    interval instead)."""
    by_weight = {w: rows_ndcg10(rows, replace(base, **{opinion: w})) for w in WEIGHT_GRID}
    best = max(by_weight[w] for w in grid)
    return replace(base, **{opinion: min(w for w in grid if by_weight[w] == best)}), by_weight


def weight_gain(rows: RankingRows, base: FusionWeights, opinion: str, weight: float) -> dict:
    """NDCG@10 over every row (`rows_ndcg10`, what `choose_weight` chooses by) of `base` with `opinion` ("llm" or
    "titles") at `weight`, minus `base` with it at 0, with its paired-bootstrap 95% interval over the rows: how far
    validation's choice stands from leaving the opinion out."""
    without = replace(base, **{opinion: 0.0})
    ours, others = rows_ndcgs(rows, replace(base, **{opinion: weight})), rows_ndcgs(rows, without)
    return {"weight": weight, "rows_N@10": round(sum(ours) / len(ours), 4),
            "diff": round((sum(ours) - sum(others)) / len(ours), 4),
            "ci95_diff": [round(x, 4) for x in paired_bootstrap(ours, others)]}


def ablation_weights(final: FusionWeights) -> dict[str, FusionWeights]:
    """The ablation rows of a served fusion: the retriever's order, each opinion added, the LLM on top of the
    prior at the weight it was trained with (1), and the served fusion (whose LLM weight validation chose)."""
    return {"retriever": RETRIEVER, "llm_alone": FusionWeights(retriever=0.0, cowatch=0.0, llm=1.0),
            "retriever+llm": replace(final.prior, cowatch=0.0, llm=final.llm or 1.0),
            "retriever+cowatch": final.prior,
            "retriever+cowatch+llm": replace(final.prior, llm=1.0), "final": final}


def ndcg_interval(rows: RankingRows, ours: FusionWeights, baseline: FusionWeights = RETRIEVER,
                  resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Paired-bootstrap 95% interval of subset NDCG@10, `ours` minus `baseline`, over the rows."""
    return paired_bootstrap(subset_ndcgs(rows, ours), subset_ndcgs(rows, baseline), resamples, seed)


def ablation(rows: RankingRows, final: FusionWeights) -> dict:
    """Every ablation row's subset and overall metrics, with its paired interval against the retriever's order,
    and the LLM's own contribution with its interval: retriever + co-watch + LLM (at its trained weight 1)
    minus retriever + co-watch; where the final weighs title likelihood (and the rows hold it), its contribution
    too: the final minus the final without it."""
    result = {}
    for name, weights in ablation_weights(final).items():
        if weights.llm and rows.llm is None:
            continue
        metrics = ranking_metrics(rows, weights)
        entry: dict[str, Any] = {part: {k: round(v, 4) for k, v in metrics[part].items()} for part in metrics}
        entry["weights"] = weights.__dict__
        if name != "retriever":
            entry["ci95_vs_retriever_N@10"] = [round(x, 4) for x in ndcg_interval(rows, weights)]
        result[name] = entry
    if rows.titles is not None and final.titles:
        without = replace(final, titles=0.0)
        result["titles_contribution"] = {"N@10": round(ndcg10(rows, final) - ndcg10(rows, without), 4),
                                         "titles_weight": final.titles,
                                         "ci95_N@10": [round(x, 4) for x in ndcg_interval(rows, final, without)]}
    if rows.llm is not None:
        prior, with_llm = final.prior, replace(final.prior, llm=1.0)
        gain = ndcg10(rows, with_llm) - ndcg10(rows, prior)
        result["llm_contribution"] = {"N@10": round(gain, 4), "llm_weight": 1.0,
                                      "ci95_N@10": [round(x, 4) for x in ndcg_interval(rows, with_llm, prior)]}
    return result


def print_ablation(result: dict, title: str) -> None:
    """Print an `ablation` result as subset and overall tables."""
    columns = [f"{m}@{k}" for k in EVAL_KS for m in ("M", "N", "R")]
    print(title)
    for part in ("subset", "overall"):
        print(f"[{part}]")
        print(format_table({n: r[part] for n, r in result.items() if isinstance(r, dict) and part in r}, columns))
    for name, entry in result.items():
        if isinstance(entry, dict) and "ci95_vs_retriever_N@10" in entry:
            print(f"  {name}: subset NDCG@10 minus the retriever's, 95% interval {entry['ci95_vs_retriever_N@10']}")
    if "llm_contribution" in result:
        print(f"  the LLM's own contribution: {result['llm_contribution']}")


def main(argv=None) -> dict:
    """Evaluate on validation or test users; print the ablation tables and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None, help="hub name or folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER), help="peft adapter folder, or 'none'")
    parser.add_argument("--retriever", default=str(DEFAULT_CHECKPOINT), help="folder with candidates.safetensors")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--max-users", type=int, default=None, help="evaluate a seeded sample of the subset")
    parser.add_argument("--batch-size", type=int, default=1, help="1 = exactly as the app scores")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="unquantized CPU weights (auto: bf16 where the CPU has it natively, as the app)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    ranker = RankerArtefacts.load(None if args.adapter == "none" else args.adapter)
    dataset = load_dataset("ml-latest-small", args.data_dir)
    weights = ranker.fusion
    candidates = load_candidates(args.retriever)[args.split]
    rows = served_rows(dataset, args.split, candidates, ranker, ranker.counts, args.max_users)
    model, tokenizer = load_ranker(RankerLoadConfig(base_model=args.base_model, adapter=ranker.adapter,
                                                   cpu_precision=args.precision))
    fold_served_adapter(model)  # as the app serves it
    rows = score_llm(model, tokenizer, dataset.catalog, rows, ranker.prompt, args.batch_size)
    result = ablation(rows, weights)
    result.update(users=int(rows.subset().sum()), rows=len(rows), total_users=rows.total_users,
                  fusion=weights.__dict__, **pool_trade(rows))
    if is_main_process():  # under `accelerate launch` every process holds the gathered rows; one reports
        print_ablation(result, f"{args.split}: {result['users']} users in the valid-retrieval subset of "
                               f"{rows.total_users}; fusion {weights}")
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
