"""Two-stage quality, ablated: which part of the final ranking each opinion (retriever, co-watch, LLM) earns.

`python bench/ranker_quality.py --json bench/results/ranker_quality.json`
`python bench/ranker_quality.py --dataset ml-100k --retriever runs/lrurec-ml-100k
--json bench/results/ranker_quality_ml-100k.json`

Rows, on the test users' valid-retrieval subset and on all test users, each with a paired bootstrap
(1,000 resamples over the subset's users) against the retriever's order: the retriever; the LLM
alone; retriever + LLM; retriever + co-watch; retriever + co-watch + LLM (the final). The LLM's own
contribution is the final minus retriever + co-watch, with its interval. Paper: Table 3 (subset,
N@10 / R@10) and Table 1 (all users), ML = ml-latest-small.

Because ~120 subset users give wide intervals, a secondary figure cross-fits validation and test:
the LLM's fusion weight is chosen on one split and scored on the other, and the 255 users are pooled.
For classic ml-100k the retriever and the co-watch counts are its own (same window, span and
weights as chosen on ml-latest-small); the adapter is the ml-latest-small one.

Amazon (`--dataset beauty`, `games`): the data set's served folder (zero-shot: the base model, no adapter) and its
candidates (`python -m recsys.retriever.candidates`), beside the paper's rows for that data set; where the folder
serves title likelihood, the final row includes it (its scores saved by `python -m recsys.ranker.title_weight`,
scored here for rows they lack) and its own contribution is reported too. About 0.5 s a row for the verbalizer and
1 s for product titles on 2 cores: `--max-users` samples.
"""

from __future__ import annotations


import argparse
from pathlib import Path


from common import load_served_ranker, machine_summary
from recsys import NUM_CANDIDATES, paper
from recsys.data import load_dataset
from recsys.data.sources import DATASETS
from recsys.folders import run_folder, served_folder
from recsys.metrics import format_table, ndcg_at, paired_bootstrap
from recsys.ranker.cowatch import CoWatchCounts
from recsys.ranker.evaluate import RETRIEVER, ablation, all_user_ranks, choose_weight, score_llm, subset_ndcgs
from recsys.ranker.prior import training_counts
from recsys.ranker.rows import pool_trade, served_rows, split_rows
from recsys.ranker.title_scores import with_title_scores
from recsys.results import write_json
from recsys.retriever.candidates import load_candidates
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

PAPER = {name: {"subset": paper.TABLE_3[name], "overall": paper.TABLE_1[name]} for name in paper.TABLE_1}
KEYS = ("M@5", "N@5", "R@5", "M@10", "N@10", "R@10")
LABELS = {"retriever": "retriever (LRURec order)", "llm_alone": "LLM alone", "retriever+llm": "retriever + LLM",
          "retriever+cowatch": "retriever + co-watch", "retriever+cowatch+llm": "retriever + co-watch + LLM (weight 1)",
          "final": "served (weights chosen on validation)"}


def cross_fitted(val_rows, test_rows, prior) -> dict:
    """Choose the LLM's weight on one split, score the other; pool both: final minus retriever NDCG@10 with interval."""
    ours, baseline, chosen = [], [], {}
    for choose_on, score_on, name in ((val_rows, test_rows, "test"), (test_rows, val_rows, "val")):
        weights, _ = choose_weight(choose_on, prior, "llm")
        chosen[name] = weights.llm
        ours += subset_ndcgs(score_on, weights)
        baseline += subset_ndcgs(score_on, RETRIEVER)
    low, high = paired_bootstrap(ours, baseline)
    mean_ours, mean_base = sum(ours) / len(ours), sum(baseline) / len(baseline)
    return {"users": len(ours), "llm_weight_chosen_on_the_other_split": chosen, "retriever_N@10": round(mean_base, 4),
            "final_N@10": round(mean_ours, 4), "gain": round(mean_ours / mean_base - 1, 4),
            "ci95_diff_N@10": [round(low, 4), round(high, 4)]}


def pool_effect(dataset, candidates, counts, weights, pool: int) -> dict | None:
    """What the candidate pool changes for all test users at the served weights (no LLM in them): overall NDCG@10
    and Recall@10 with the pool and with LRURec's top-20, and the paired-bootstrap interval of each difference.
    None when the served fusion uses an LLM opinion (its scores of the top-20 rows would be needed) or there is no
    pool."""
    if weights.llm or weights.titles or pool <= NUM_CANDIDATES or counts is None:
        return None
    per_user = {}
    for name, size in (("pool", pool), ("top20", NUM_CANDIDATES)):
        rows = split_rows(dataset, "test", candidates, counts, pool=size, weights=weights)
        ranks = all_user_ranks(rows, weights, candidates.users.tolist())  # paired user by user
        per_user[name] = {"N@10": [ndcg_at(r, 10) for r in ranks], "R@10": [float(r <= 10) for r in ranks]}
    return {key: {"pool": round(sum(per_user["pool"][key]) / len(per_user["pool"][key]), 4),
                  "top20": round(sum(per_user["top20"][key]) / len(per_user["top20"][key]), 4),
                  "ci95_diff": [round(x, 4) for x in paired_bootstrap(per_user["pool"][key], per_user["top20"][key])]}
            for key in ("N@10", "R@10")}


def main(argv=None) -> dict:
    """Score the validation and test subsets with the verbalizer, print the ablation beside the paper, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--adapter", default=None, help="ranker folder, or 'none' (default: the committed MovieLens "
                        "adapter; Amazon: checkpoints/llamarec-DATASET)")
    parser.add_argument("--dataset", default="ml-latest-small", choices=sorted(DATASETS))
    parser.add_argument("--retriever", default=None, help="folder with candidates.safetensors (default: the "
                        "committed MovieLens retriever; Amazon: runs/candidates-DATASET)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-users", type=int, default=None, help="a seeded sample of each subset (faster)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="unquantized CPU weights (auto: bf16 where the CPU has it natively, as the app)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    movies = DATASETS[args.dataset].domain == "movie"
    args.adapter = args.adapter or str(served_folder(args.dataset))
    args.retriever = args.retriever or str(DEFAULT_CHECKPOINT if movies else run_folder("candidates", args.dataset))
    ranker, model, tokenizer, machine = load_served_ranker(args.adapter, args.base_model, args.precision)
    dataset = load_dataset(args.dataset, args.data_dir)
    weights = ranker.fusion
    counts: CoWatchCounts | None = ranker.counts
    if counts is not None and args.dataset == "ml-100k":  # its own counts, the MovieLens adapter's window and span
        counts = training_counts(dataset, counts.config)
    candidates = load_candidates(args.retriever)
    scored = {split: score_llm(model, tokenizer, dataset.catalog,
                               served_rows(dataset, split, candidates[split], ranker, counts, args.max_users),
                               ranker.prompt)
              for split in ("val", "test")}
    if weights.titles:  # the base model's title likelihood, from the scores `recsys.ranker.title_weight` saved
        scored = {split: with_title_scores(rows, ranker, dataset.catalog, split, args.base_model, args.precision)
                  for split, rows in scored.items()}
    result = {"test": ablation(scored["test"], weights), "val": ablation(scored["val"], weights),
              "cross_fitted_val_test": cross_fitted(scored["val"], scored["test"], weights.prior),
              "users": int(scored["test"].subset().sum()), "rows": len(scored["test"]),
              "total_users": scored["test"].total_users, "fusion": weights.__dict__,
              "pool": {split: pool_trade(rows) for split, rows in scored.items()},
              "pool_vs_top20_all_test_users": pool_effect(dataset, candidates["test"], counts, weights,
                                                          ranker.pool if counts is not None else NUM_CANDIDATES),
              "dataset": args.dataset, "paper": PAPER.get(args.dataset),
              "adapter": Path(args.adapter).name, "base_model": args.base_model or "SmolLM2-135M-Instruct",
              "machine": machine}
    test = result["test"]
    for part, title in (("subset", "valid-retrieval subset (paper Table 3)"),
                        ("overall", "all test users (paper Table 1)")):
        table = {}
        if args.dataset in PAPER:
            table.update({"paper LRURec": PAPER[args.dataset][part]["retriever"],
                          "paper LlamaRec (Llama-2-7B)": PAPER[args.dataset][part]["final"]})
        table.update({f"ours: {LABELS[name]}": test[name][part] for name in LABELS if name in test})
        print(f"\n{args.dataset}, {title}: {result['users']} of {scored['test'].total_users} test users in the subset; "
              f"the pool {result['pool']['test']}")
        print(format_table(table, KEYS))
    base = test["retriever"]["subset"]["N@10"]
    print("\nsubset NDCG@10 over the retriever's order, paired-bootstrap 95% interval of the difference:")
    for name in LABELS:
        if name in test and name != "retriever":
            gain = test[name]["subset"]["N@10"] / base - 1
            print(f"  {LABELS[name]:<38} {gain:+7.1%}  {test[name]['ci95_vs_retriever_N@10']}")
    if "llm_contribution" in test:
        print(f"  the LLM's own contribution (at its trained weight 1, over retriever + co-watch): "
              f"{test['llm_contribution']}")
    if "titles_contribution" in test:
        print(f"  title likelihood's own contribution (the final minus the final without it): "
              f"{test['titles_contribution']}")
    print(f"  cross-fitted validation + test: {result['cross_fitted_val_test']}")
    print(f"  the candidate pool against LRURec's top-20, all test users: {result['pool_vs_top20_all_test_users']}")
    print(machine_summary(machine))
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
