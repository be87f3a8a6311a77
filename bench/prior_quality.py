"""Stage two on the test users: the served prior's ranking (LRURec + co-watch, its candidate pool) and, where the folder
serves it, the served system (the prior plus the LLM's title likelihood), beside the paper's LRURec and LlamaRec,
with paired-bootstrap intervals against our LRURec.

`python bench/prior_quality.py --dataset beauty --json bench/results/prior_quality_beauty.json` (and games;
`--dataset ml-latest-small` reads the committed MovieLens folder, whose LLM weight validation set to 0 as well)

The prior's window, span, weights and pool were chosen on validation (`python -m recsys.ranker.prior --dataset
NAME --write`); this reads the test users once. Rows: all test users (Table 1's six metrics; the intervals pair each
user's NDCG@10 and Recall@10 under both orders) and the valid-retrieval subset, users whose target is in LRURec's
top-20 (Table 3: NDCG@10 and Recall@10; a pool may also rank targets LRURec put at 21..pool, counted overall only).
Title likelihood's scores are the ones `python -m recsys.ranker.title_weight` saved for the same rows (scored here,
about 1 s a row on 2 cores, where they are missing).
"""

from __future__ import annotations


import argparse

from common import machine_summary
from recsys import NUM_CANDIDATES, paper
from recsys.data import load_dataset
from recsys.folders import retriever_folder, served_folder
from recsys.machine import machine_record
from recsys.metrics import format_table, metrics_from_ranks, ndcg_at, paired_bootstrap
from recsys.ranker.artefacts import RankerArtefacts
from recsys.ranker.evaluate import all_user_ranks
from recsys.ranker.model import cpu_dtype
from recsys.ranker.rows import served_rows
from recsys.ranker.title_scores import with_title_scores
from recsys.results import write_json
from recsys.retriever.candidates import retrieve_split
from recsys.retriever.checkpoint import load_model
from recsys.retriever.evaluate import split_inputs, target_ranks

KEYS = ("M@5", "N@5", "R@5", "M@10", "N@10", "R@10")


def per_user(ranks: list[float]) -> dict[str, list[float]]:
    """Each user's NDCG@10 and Recall@10 from their target's rank."""
    return {"N@10": [ndcg_at(r, 10) for r in ranks], "R@10": [float(r <= 10) for r in ranks]}


def interval(ours: list[float], baseline: list[float]) -> list[float]:
    """Paired-bootstrap 95% interval of mean(ours - baseline), rounded."""
    return [round(x, 4) for x in paired_bootstrap(ours, baseline)]


def rounded(metrics: dict[str, float], keys: tuple[str, ...]) -> dict[str, float]:
    """`keys` of `metrics`, to 4 decimals."""
    return {k: round(metrics[k], 4) for k in keys}


def main(argv=None) -> dict:
    """Rank the test users with LRURec, the served prior and (where served) title likelihood; print them beside the
    paper; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="beauty", choices=sorted(paper.TABLE_1))
    parser.add_argument("--retriever", default=None, help="LRURec folder (default: checkpoints/lrurec-DATASET)")
    parser.add_argument("--prior", default=None, help="ranker folder with prior.json, cowatch.safetensors and "
                        "served_config.json (default: checkpoints/llamarec-DATASET; MovieLens: the committed one)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--base-model", default=None, help="the LLM whose title likelihood the folder serves "
                        "(default: SmolLM2-135M-Instruct)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    ranker = RankerArtefacts.load(args.prior or served_folder(args.dataset))
    if ranker.counts is None:
        raise SystemExit(f"{ranker.folder} holds no co-watch prior: python -m recsys.ranker.prior --dataset "
                         f"{args.dataset} --write")
    if ranker.fusion.llm or (ranker.fusion.titles and not ranker.base_titles):
        raise SystemExit(f"{ranker.folder} serves the verbalizer, or title likelihood with a trained adapter: "
                         "bench/ranker_quality.py scores those")
    machine = machine_record(f"LRURec float32, the LLM {cpu_dtype('auto')}" if ranker.fusion.titles else "float32")
    dataset = load_dataset(args.dataset, args.data_dir)
    model = load_model(args.retriever or retriever_folder(args.dataset))
    weights = ranker.fusion.prior
    candidates = retrieve_split(model, dataset, "test", k=ranker.pool)
    rows = served_rows(dataset, "test", candidates, ranker, ranker.counts)
    users = candidates.users.tolist()
    _, histories, targets = split_inputs(dataset, "test")
    full = target_ranks(model, histories, targets)  # LRURec's rank of every target among all items
    ranks = {"retriever": full, "prior": all_user_ranks(rows, weights, users)}
    labels = {"retriever": "ours: LRURec", "prior": "ours: LRURec + co-watch prior"}
    if ranker.fusion.titles:  # the served system: the prior plus title likelihood at the weight validation chose
        titled = with_title_scores(rows, ranker, dataset.catalog, "test", args.base_model)
        ranks["served"] = all_user_ranks(titled, ranker.fusion, users)
        labels["served"] = f"ours: + title likelihood ({ranker.fusion.titles:g})"
    subset = [r <= NUM_CANDIDATES for r in full]
    by_user = {name: per_user(r) for name, r in ranks.items()}
    in_subset = {name: {k: [v for v, s in zip(values, subset) if s] for k, values in by_user[name].items()}
                 for name in by_user}
    result = {
        "dataset": args.dataset, "users": len(users), "subset_users": sum(subset),
        "fusion": ranker.fusion.__dict__, "cowatch": ranker.counts.config.__dict__, "pool": ranker.pool,
        "overall": {name: rounded(metrics_from_ranks(r, (5, 10)), KEYS) for name, r in ranks.items()},
        "subset": {name: rounded(metrics_from_ranks([rank for rank, s in zip(r, subset) if s], (10,)), ("N@10", "R@10"))
                   for name, r in ranks.items()},
        **{f"ci95_{name}_minus_{baseline}": {
            "overall": {k: interval(by_user[name][k], by_user[baseline][k]) for k in ("N@10", "R@10")},
            "subset": {k: interval(in_subset[name][k], in_subset[baseline][k]) for k in ("N@10", "R@10")}}
           for name, baseline in (("prior", "retriever"), ("served", "retriever"), ("served", "prior"))
           if name in ranks},
        "paper": {"table_1": paper.TABLE_1[args.dataset], "table_3": paper.TABLE_3[args.dataset]},
    }
    best = list(ranks)[-1]  # what the app serves
    print(f"{args.dataset}, all {len(users)} test users (paper Table 1)")
    print(format_table({"paper LRURec": paper.TABLE_1[args.dataset]["retriever"],
                        "paper LlamaRec (Llama-2-7B)": paper.TABLE_1[args.dataset]["final"],
                        **{labels[name]: result["overall"][name] for name in ranks}}, KEYS))
    verdict = ["at/above" if result["overall"][best][k] >= paper.TABLE_1[args.dataset]["final"][k] else "BELOW"
               for k in KEYS]
    print(f"{best + ' vs paper LlamaRec':<32}" + "".join(f"{v:>9}" for v in verdict))
    print(f"\nvalid-retrieval subset, {sum(subset)} users (paper Table 3)")
    print(format_table({"paper LRURec": paper.TABLE_3[args.dataset]["retriever"],
                        "paper LlamaRec (Llama-2-7B)": paper.TABLE_3[args.dataset]["final"],
                        **{labels[name]: result["subset"][name] for name in ranks}}, ("N@10", "R@10")))
    for key, value in result.items():
        if key.startswith("ci95_"):
            print(f"\n{key[5:].replace('_', ' ')}, paired-bootstrap 95% intervals: {value}")
    print(f"fusion {ranker.fusion}, co-watch {ranker.counts.config}, pool {ranker.pool}\n{machine_summary(machine)}")
    write_json(args.json, result, machine)
    return result


if __name__ == "__main__":
    main()
