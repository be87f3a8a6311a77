"""Stage two without the LLM: the served prior's ranking (LRURec + co-watch, its candidate pool) on the test users,
beside the paper's LRURec and LlamaRec, with paired-bootstrap intervals against our LRURec.

`python bench/prior_quality.py --dataset beauty --json bench/results/prior_quality_beauty.json` (and games;
`--dataset ml-latest-small` reads the committed MovieLens folder, whose LLM weight validation set to 0 as well)

The prior's window, span, weights and pool were chosen on validation (`python -m recsys.ranker.prior --dataset
NAME --write`); this reads the test users once. Rows: all test users (Table 1's six metrics; the intervals pair each
user's NDCG@10 and Recall@10 under both orders) and the valid-retrieval subset, users whose target is in LRURec's
top-20 (Table 3: NDCG@10 and Recall@10; a pool may also rank targets LRURec put at 21..pool, counted overall only).
"""

from __future__ import annotations


import argparse
from pathlib import Path

from common import machine_summary
from recsys import NUM_CANDIDATES, paper
from recsys.data import load_dataset
from recsys.machine import machine_record
from recsys.metrics import format_table, metrics_from_ranks, ndcg_at, paired_bootstrap
from recsys.ranker.artefacts import RankerArtefacts
from recsys.ranker.evaluate import all_user_ranks
from recsys.ranker.model import DEFAULT_ADAPTER
from recsys.ranker.rows import served_rows
from recsys.results import write_json
from recsys.retriever.candidates import retrieve_split
from recsys.retriever.checkpoint import load_model
from recsys.retriever.evaluate import split_inputs, target_ranks

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
KEYS = ("M@5", "N@5", "R@5", "M@10", "N@10", "R@10")


def per_user(ranks: list[float]) -> dict[str, list[float]]:
    """Each user's NDCG@10 and Recall@10 from their target's rank."""
    return {"N@10": [ndcg_at(r, 10) for r in ranks], "R@10": [float(r <= 10) for r in ranks]}


def interval(ours: list[float], baseline: list[float]) -> list[float]:
    """Paired-bootstrap 95% interval of mean(ours - baseline), rounded."""
    return [round(x, 4) for x in paired_bootstrap(ours, baseline)]


def main(argv=None) -> dict:
    """Rank the test users with the served prior and with LRURec; print both beside the paper; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty", choices=sorted(paper.TABLE_1))
    parser.add_argument("--retriever", default=None, help="LRURec folder (default: checkpoints/lrurec-DATASET)")
    parser.add_argument("--prior", default=None, help="ranker folder with prior.json, cowatch.safetensors and "
                        "served_config.json (default: checkpoints/llamarec-DATASET; MovieLens: the committed one)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    machine = machine_record("float32")
    dataset = load_dataset(args.dataset, args.data_dir)
    model = load_model(args.retriever or CHECKPOINTS / f"lrurec-{args.dataset}")
    ranker = RankerArtefacts.load(args.prior or (DEFAULT_ADAPTER if args.dataset == "ml-latest-small"
                                                 else CHECKPOINTS / f"llamarec-{args.dataset}"))
    if ranker.counts is None:
        raise SystemExit(f"{ranker.folder} holds no co-watch prior: python -m recsys.ranker.prior --dataset "
                         f"{args.dataset} --write")
    weights = ranker.fusion.prior
    candidates = retrieve_split(model, dataset, "test", k=ranker.pool)
    rows = served_rows(dataset, "test", candidates, ranker, ranker.counts)
    users = candidates.users.tolist()
    _, histories, targets = split_inputs(dataset, "test")
    full = target_ranks(model, histories, targets)  # LRURec's rank of every target among all items
    served = all_user_ranks(rows, weights, users)
    subset = [r <= NUM_CANDIDATES for r in full]
    ours = {"retriever": metrics_from_ranks(full, (5, 10)), "prior": metrics_from_ranks(served, (5, 10))}
    ours_subset = {name: metrics_from_ranks([r for r, s in zip(ranks, subset) if s], (10,))
                   for name, ranks in (("retriever", full), ("prior", served))}
    by_user = {"retriever": per_user(full), "prior": per_user(served)}
    in_subset = {name: {k: [v for v, s in zip(values, subset) if s] for k, values in by_user[name].items()}
                 for name in by_user}
    result = {
        "dataset": args.dataset, "users": len(users), "subset_users": sum(subset),
        "fusion": weights.__dict__, "cowatch": ranker.counts.config.__dict__, "pool": ranker.pool,
        "overall": {name: {k: round(m[k], 4) for k in KEYS} for name, m in ours.items()},
        "subset": {name: {k: round(m[k], 4) for k in ("N@10", "R@10")} for name, m in ours_subset.items()},
        "ci95_prior_minus_retriever": {
            "overall": {k: interval(by_user["prior"][k], by_user["retriever"][k]) for k in ("N@10", "R@10")},
            "subset": {k: interval(in_subset["prior"][k], in_subset["retriever"][k]) for k in ("N@10", "R@10")}},
        "paper": {"table_1": paper.TABLE_1[args.dataset], "table_3": paper.TABLE_3[args.dataset]},
    }
    print(f"{args.dataset}, all {len(users)} test users (paper Table 1)")
    print(format_table({"paper LRURec": paper.TABLE_1[args.dataset]["retriever"],
                        "paper LlamaRec (Llama-2-7B)": paper.TABLE_1[args.dataset]["final"],
                        "ours: LRURec": result["overall"]["retriever"],
                        "ours: LRURec + co-watch prior": result["overall"]["prior"]}, KEYS))
    verdict = ["at/above" if result["overall"]["prior"][k] >= paper.TABLE_1[args.dataset]["final"][k] else "BELOW"
               for k in KEYS]
    print(f"{'prior vs paper LlamaRec':<32}" + "".join(f"{v:>9}" for v in verdict))
    print(f"\nvalid-retrieval subset, {sum(subset)} users (paper Table 3)")
    print(format_table({"paper LRURec": paper.TABLE_3[args.dataset]["retriever"],
                        "paper LlamaRec (Llama-2-7B)": paper.TABLE_3[args.dataset]["final"],
                        "ours: LRURec": result["subset"]["retriever"],
                        "ours: LRURec + co-watch prior": result["subset"]["prior"]}, ("N@10", "R@10")))
    print(f"\nprior minus LRURec, paired-bootstrap 95% intervals: {result['ci95_prior_minus_retriever']}")
    print(f"fusion {weights}, co-watch {ranker.counts.config}, pool {ranker.pool}\n{machine_summary(machine)}")
    write_json(args.json, result, machine)
    return result


if __name__ == "__main__":
    main()
