"""A wider candidate pool: LRURec's top-K re-ranked by the served prior, keep 20. Validation only.

`python bench/candidate_pool.py --json bench/results/candidate_pool.json`

Stage one today hands the ranker LRURec's top-20, so a film LRURec ranks 21st can never be recommended,
however strongly the co-watch prior backs it. Here LRURec retrieves its top-K (K = 20, 30, 50, 100) for
each of the 610 validation users (the paper's validation split: input = training part, target = the
validation item), the served prior (`prior.json`: w_r * log-softmax(LRURec) + w_c * co-watch, counts
over every training part) scores all K, and the best 20 by the prior are kept, in the prior's order.
Reported over all 610 users: coverage@20 (target among the kept 20), NDCG@10 and Recall@10 of the
prior's order, each pool against K = 20 with a paired-bootstrap 95% interval. No test user is read: this
is the evidence a choice of K would be made on. K = 20 is the served system's ranking at LLM weight 0.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.data import load_dataset  # noqa: E402
from recsys.machine import machine_record  # noqa: E402
from recsys.metrics import ndcg_at, paired_bootstrap  # noqa: E402
from recsys.pipeline import default_adapter  # noqa: E402
from recsys.ranker.evaluate import read_cowatch, read_fusion_weights  # noqa: E402
from recsys.ranker.fusion import prior_scores  # noqa: E402
from recsys.results import write_json  # noqa: E402
from recsys.retriever.candidates import retrieve_split  # noqa: E402
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_model  # noqa: E402

POOLS = (20, 30, 50, 100)
KEEP = 20


def pooled_ranks(model, dataset, counts, weights, pool: int) -> torch.Tensor:
    """1-based rank (U,) of each validation user's target among the `KEEP` best of LRURec's top-`pool` by the prior
    (a large number when it is not kept)."""
    candidates = retrieve_split(model, dataset, "val", k=pool)
    histories = [dataset.val_input(u)[0] for u in candidates.users.tolist()]
    ids = candidates.candidate_ids.long()
    prior = prior_scores(candidates.candidate_scores.float(), counts.scores(histories, ids), weights)
    kept = ids.gather(1, prior.argsort(dim=-1, descending=True, stable=True)[:, :KEEP])
    hit = kept == candidates.targets.long().view(-1, 1)
    return torch.where(hit.any(1), hit.float().argmax(1) + 1, torch.full((len(kept),), 10 ** 6))


def main(argv=None) -> dict:
    """Print coverage, NDCG@10 and Recall@10 of each pool size on validation; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    machine = machine_record(torch.float32)
    dataset = load_dataset("ml-latest-small", args.data_dir)
    model = load_model(DEFAULT_CHECKPOINT)
    adapter = default_adapter()
    counts, weights = read_cowatch(adapter), read_fusion_weights(adapter)
    per_user = {}
    for pool in POOLS:
        ranks = pooled_ranks(model, dataset, counts, weights, pool).tolist()
        per_user[pool] = {"N@10": [ndcg_at(r, 10) for r in ranks], "R@10": [float(r <= 10) for r in ranks],
                          "coverage@20": [float(r <= KEEP) for r in ranks]}
    rows = []
    print(f"{len(per_user[POOLS[0]]['N@10'])} validation users; the prior's order of the {KEEP} kept")
    print(f"{'pool':>5} {'coverage@20':>12} {'N@10':>8} {'R@10':>8}   vs pool {POOLS[0]}: N@10 interval, R@10 interval")
    for pool in POOLS:
        means = {k: round(sum(v) / len(v), 4) for k, v in per_user[pool].items()}
        intervals = ({k: [round(x, 4) for x in paired_bootstrap(per_user[pool][k], per_user[POOLS[0]][k])]
                      for k in ("N@10", "R@10")} if pool != POOLS[0] else {})
        rows.append({"pool": pool, **means, "ci95_diff_vs_pool_20": intervals})
        print(f"{pool:>5} {means['coverage@20']:>12.4f} {means['N@10']:>8.4f} {means['R@10']:>8.4f}   "
              + (f"{intervals['N@10']}, {intervals['R@10']}" if intervals else ""))
    result = {"split": "val", "users": len(per_user[POOLS[0]]["N@10"]), "keep": KEEP, "weights": asdict(weights),
              "rows": rows, "machine": machine}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
