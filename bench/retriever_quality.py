"""Retriever quality on the test split beside the paper's LRURec row (Table 1, ML = ml-latest-small).

`python bench/retriever_quality.py --json bench/results/retriever_quality.json`
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.machine import machine_record  # noqa: E402
from recsys.results import write_json  # noqa: E402
from recsys import NUM_CANDIDATES  # noqa: E402
from recsys.data import load_dataset  # noqa: E402
from recsys.metrics import format_table, metrics_from_ranks  # noqa: E402
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_config, load_model  # noqa: E402
from recsys.retriever.evaluate import split_inputs, target_ranks  # noqa: E402

PAPER_LRUREC = {"M@5": 0.0390, "N@5": 0.0468, "R@5": 0.0705, "M@10": 0.0491, "N@10": 0.0705, "R@10": 0.1426}
COLUMNS = list(PAPER_LRUREC)


def main(argv=None) -> dict:
    """Evaluate the checkpoint on the test users, print ours beside the paper, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    model = load_model(args.checkpoint)
    machine = machine_record("float32")  # LRURec scores in fp32 on the CPU
    dataset = load_dataset(load_config(args.checkpoint).get("dataset", "ml-latest-small"), args.data_dir)
    _, histories, targets = split_inputs(dataset, "test")
    ranks = target_ranks(model, histories, targets)
    metrics = metrics_from_ranks(ranks, (5, 10, NUM_CANDIDATES))
    ours = {k: round(metrics[k], 4) for k in COLUMNS}
    coverage = round(metrics[f"R@{NUM_CANDIDATES}"], 4)
    print(f"LRURec on ml-latest-small, test split, {len(ranks)} users, full ranking")
    print(format_table({"paper (Table 1)": PAPER_LRUREC, "ours": ours}, COLUMNS))
    verdict = ["at/above" if ours[k] >= PAPER_LRUREC[k] else "BELOW" for k in COLUMNS]
    print(" " * 17 + "".join(f"{v:>9}" for v in verdict))
    print(f"coverage@{NUM_CANDIDATES} (target in top-{NUM_CANDIDATES}): {coverage:.4f}  (paper: about 0.20)")
    result = {"ours": ours, "paper": PAPER_LRUREC, f"coverage@{NUM_CANDIDATES}": coverage, "users": len(ranks)}
    write_json(args.json, result, machine)
    return result


if __name__ == "__main__":
    main()
