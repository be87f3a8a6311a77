"""The candidate pool, chosen: LRURec's top-K re-ranked by the served prior, 20 kept. Validation only.

`python bench/candidate_pool.py --json bench/results/candidate_pool.json`

The ranker sees 20 candidates. Taken as LRURec's top-20 (K = 20, the paper's stage one), a film LRURec ranks
21st could never be recommended, however strongly the co-watch prior backs it; the served pool
(`recsys.ranker.pool`) lets LRURec retrieve its top-K and keeps the 20 the prior scores best. This script
measures each K of `recsys.ranker.prior.POOL_GRID` (20, 30, 50, 100) on the 610 validation users (the paper's
validation split: input = training part, target = the validation item): LRURec retrieves its top-K, the served
prior (`served_config.json`: w_r * log-softmax(LRURec) + w_c * co-watch, counts over every training part) scores all K,
and the best 20 by the prior are kept, in the prior's order. Reported over all 610 users: coverage@20 (target
among the kept 20), NDCG@10 and Recall@10 of the prior's order, each pool against K = 20 with a paired-bootstrap
95% interval, and the K chosen (best NDCG@10, within 0.001 the smaller). No test user is read: this is the
evidence the served K is chosen on (`python -m recsys.ranker.prior --write` makes the same choice and saves it
as served_config.json's "pool").
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

import torch


from recsys.data import load_dataset
from recsys.machine import machine_record
from recsys.ranker.artefacts import RankerArtefacts
from recsys.ranker.model import DEFAULT_ADAPTER
from recsys.ranker.prior import choose_pool
from recsys.results import write_json
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_model


def main(argv=None) -> dict:
    """Print coverage, NDCG@10 and Recall@10 of each pool size on validation (`recsys.ranker.prior.choose_pool`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    machine = machine_record(torch.float32)
    dataset = load_dataset("ml-latest-small", args.data_dir)
    ranker = RankerArtefacts.load(DEFAULT_ADAPTER)
    chosen, rows = choose_pool(load_model(DEFAULT_CHECKPOINT), dataset, ranker.counts, ranker.fusion)
    print(f"{len(dataset.sequences)} validation users; the prior's order of the 20 it keeps from LRURec's top-K")
    print(f"{'K':>5} {'coverage@20':>12} {'N@10':>8} {'R@10':>8}   vs K = 20: N@10 interval, R@10 interval")
    for row in rows:
        intervals = row.get("ci95_diff_vs_20")
        print(f"{row['pool']:>5} {row['coverage@20']:>12.4f} {row['N@10']:>8.4f} {row['R@10']:>8.4f}   "
              + (f"{intervals['N@10']}, {intervals['R@10']}" if intervals else ""))
    print(f"chosen (best NDCG@10, within 0.001 the smaller): K = {chosen}")
    result = {"split": "val", "users": len(dataset.sequences), "weights": asdict(ranker.fusion), "rows": rows,
              "chosen": chosen, "machine": machine}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
