"""Two served stage ones side by side, user by user: which one does validation prefer?

`python bench/served_pair.py --dataset games --a checkpoints/lrurec-games checkpoints/llamarec-games
--b runs/served-games-b64/retriever runs/served-games-b64 --json bench/results/served_pair_games_b64.json`

Each side is a retriever folder and the ranker folder whose prior was chosen for it (its co-watch counts, weights
and candidate pool: `python -m recsys.ranker.prior --write`). Every user of each split is ranked as the app ranks
(the prior's order of the 20 it keeps of LRURec's top-`pool`, no LLM: `recsys.ranker.prior.pooled_ndcg`, the
measure the prior's own pool choice uses), and NDCG@10 and Recall@10 of B minus A get a paired-bootstrap 95%
interval. A retriever that is better alone need not be better once the prior is added: this is the comparison that
decides which one is served (on validation; the test rows are the record).
"""

from __future__ import annotations

import argparse

from common import machine_summary
from recsys.data import load_dataset
from recsys.data.sources import DATASETS
from recsys.machine import machine_record
from recsys.metrics import format_table, paired_bootstrap
from recsys.ranker.artefacts import RankerArtefacts
from recsys.ranker.prior import pooled_ndcg
from recsys.results import write_json
from recsys.retriever.checkpoint import load_model

KEYS = ("N@10", "R@10")


def main(argv=None) -> dict:
    """Rank each split's users with both sides, print means and B-minus-A intervals, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--a", nargs=2, required=True, metavar=("RETRIEVER", "RANKER"), help="the served side")
    parser.add_argument("--b", nargs=2, required=True, metavar=("RETRIEVER", "RANKER"), help="the challenger")
    parser.add_argument("--splits", nargs="+", default=["val", "test"], choices=["val", "test"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    machine = machine_record("float32")
    dataset = load_dataset(args.dataset, args.data_dir)
    sides = {}
    for name, (retriever, ranker_folder) in (("A", args.a), ("B", args.b)):
        ranker = RankerArtefacts.load(ranker_folder)
        if ranker.counts is None:
            raise SystemExit(f"{ranker_folder} holds no co-watch prior: python -m recsys.ranker.prior --dataset "
                             f"{args.dataset} --write")
        sides[name] = (load_model(retriever), ranker)
    result: dict = {"dataset": args.dataset, "a": args.a, "b": args.b,
                    "served": {name: {"pool": r.pool, "cowatch": r.counts.config.__dict__ if r.counts else None,
                                      "fusion": r.fusion.__dict__} for name, (_, r) in sides.items()}}
    for split in args.splits:
        per_user = {name: pooled_ndcg(model, dataset, ranker.counts, ranker.fusion, ranker.pool, split)
                    for name, (model, ranker) in sides.items()}
        entry = {"users": len(per_user["A"]["N@10"])}
        for key in KEYS:
            a, b = per_user["A"][key], per_user["B"][key]
            low, high = paired_bootstrap(b, a)
            entry[key] = {"A": round(sum(a) / len(a), 4), "B": round(sum(b) / len(b), 4),
                          "ci95_b_minus_a": [round(low, 4), round(high, 4)]}
        result[split] = entry
    print(f"{args.dataset}: A = {' + '.join(args.a)}, B = {' + '.join(args.b)}")
    print(format_table({f"{split} {key}": {"A": result[split][key]["A"], "B": result[split][key]["B"],
                                           "B-A low": result[split][key]["ci95_b_minus_a"][0],
                                           "B-A high": result[split][key]["ci95_b_minus_a"][1]}
                        for split in args.splits for key in KEYS}, ("A", "B", "B-A low", "B-A high")))
    print(machine_summary(machine))
    write_json(args.json, result, machine)
    return result


if __name__ == "__main__":
    main()
