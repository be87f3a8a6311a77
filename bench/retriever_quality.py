"""Retriever quality on the test split beside the paper's LRURec row (Table 1), with a 95% bootstrap interval each.

`python bench/retriever_quality.py --json bench/results/retriever_quality.json` (ML = ml-latest-small)
`python bench/retriever_quality.py --dataset beauty --json bench/results/retriever_quality_beauty.json` (and games)

`--tie-order hash` orders interactions with equal timestamps by a stable hash of user and item
instead of the paper's item id (`recsys.data.preprocess.TIE_ORDERS`); `--tie-order item hash` measures
both and counts the test users whose target or history the choice changes:
`python bench/retriever_quality.py --tie-order item hash --json bench/results/retriever_tie_order.json`
"""

from __future__ import annotations

import argparse

from recsys import NUM_CANDIDATES, paper
from recsys.data import load_dataset
from recsys.data.preprocess import TIE_ORDERS
from recsys.data.sources import DATASETS
from recsys.folders import retriever_folder
from recsys.machine import machine_record
from recsys.metrics import format_table, metrics_from_ranks, paired_bootstrap
from recsys.results import write_json
from recsys.retriever.checkpoint import load_config, load_model
from recsys.retriever.evaluate import split_inputs, target_ranks

COLUMNS = list(paper.LRUREC_ALL_USERS)


def evaluate(model, dataset) -> dict:
    """Test-split metrics of `model` on `dataset`: the six paper columns with a 95% bootstrap interval each (users
    resampled), coverage@20 and the number of users."""
    _, histories, targets = split_inputs(dataset, "test")
    ranks = target_ranks(model, histories, targets)
    metrics = metrics_from_ranks(ranks, (5, 10, NUM_CANDIDATES))
    per_user = [metrics_from_ranks([rank], (5, 10)) for rank in ranks]
    intervals = {k: [round(bound, 4) for bound in paired_bootstrap([u[k] for u in per_user], [0.0] * len(ranks))]
                 for k in COLUMNS}
    return {"ours": {k: round(metrics[k], 4) for k in COLUMNS}, "interval_95": intervals,
            f"coverage@{NUM_CANDIDATES}": round(metrics[f"R@{NUM_CANDIDATES}"], 4), "users": len(targets)}


def users_changed(first, second) -> dict:
    """Test users whose target, or whose history only, differs between two orderings of one dataset."""
    target = sum(first.test_input(u)[1] != second.test_input(u)[1] for u in first.sequences)
    history = sum(first.test_input(u)[1] == second.test_input(u)[1] and first.test_input(u) != second.test_input(u)
                  for u in first.sequences)
    return {"target": target, "history_only": history}


def main(argv=None) -> dict:
    """Evaluate the checkpoint on the test users under each tie order, print ours beside the paper, write JSON.

    The JSON's top-level "ours" and coverage are the first tie order's; "by_tie_order" holds every order's.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small", choices=sorted(paper.TABLE_1))
    parser.add_argument("--checkpoint", default=None, help="LRURec folder (default: checkpoints/lrurec-DATASET)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--tie-order", nargs="+", choices=TIE_ORDERS, default=["item"],
                        help="order of equal timestamps: item (paper) and/or hash (neutral); default item")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    checkpoint = args.checkpoint or retriever_folder(args.dataset)
    model = load_model(checkpoint)
    machine = machine_record("float32")  # LRURec scores in fp32 on the CPU
    name = load_config(checkpoint).get("dataset", "ml-latest-small")
    if name != args.dataset:
        parser.error(f"{checkpoint} was trained on {name}, not {args.dataset}")
    if len(args.tie_order) > 1 and DATASETS[name].name.startswith("amazon"):
        parser.error(f"{name}'s files carry their order: only --tie-order item")
    paper_lrurec = paper.TABLE_1[name]["retriever"]
    datasets = {order: load_dataset(name, args.data_dir, order) for order in dict.fromkeys(args.tie_order)}
    by_order = {order: evaluate(model, dataset) for order, dataset in datasets.items()}
    rows = {"paper (Table 1)": paper_lrurec} | {f"ours, ties by {order}": r["ours"] for order, r in by_order.items()}
    first = by_order[args.tie_order[0]]
    print(f"LRURec on {name}, test split, {first['users']} users, full ranking")
    print(format_table(rows, COLUMNS))
    for order, result in by_order.items():
        verdict = ["at/above" if result["ours"][k] >= paper_lrurec[k] else "BELOW" for k in COLUMNS]
        print(f"{'ties by ' + order:<17}" + "".join(f"{v:>9}" for v in verdict))
        low = "".join(f"{result['interval_95'][k][0]:>9.4f}" for k in COLUMNS)
        high = "".join(f"{result['interval_95'][k][1]:>9.4f}" for k in COLUMNS)
        print(f"{'  95% interval':<17}{low}\n{'':<17}{high}")
        print(f"  coverage@{NUM_CANDIDATES} (target in top-{NUM_CANDIDATES}): "
              f"{result[f'coverage@{NUM_CANDIDATES}']:.4f}  (paper, Table 3's subset: about 0.20 on ML)")
    result = {**first, "dataset": name, "paper": paper_lrurec, "tie_order": args.tie_order[0], "by_tie_order": by_order}
    if len(datasets) > 1:
        first_dataset = datasets[args.tie_order[0]]
        result["test_users_changed"] = {order: users_changed(first_dataset, dataset)
                                        for order, dataset in datasets.items() if dataset is not first_dataset}
        print(f"test users changed against ties by {args.tie_order[0]}: {result['test_users_changed']}")
    write_json(args.json, result, machine)
    return result


if __name__ == "__main__":
    main()
