"""Two-stage quality: the retriever's order vs LlamaRec re-ranking on the test users, beside the paper.

`python bench/ranker_quality.py --json bench/results/ranker_quality.json`
Paper: Table 3 (valid-retrieval subset, N@10 / R@10) and Table 1 (all users), ML = ml-latest-small.
`ci95_diff_N@10` is a paired bootstrap (1,000 resamples over the subset's users) of two-stage minus
the retriever's order, subset NDCG@10: with ~120 users it is wide.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.machine import machine_record  # noqa: E402
from recsys.results import write_json  # noqa: E402
from recsys.data import load_dataset  # noqa: E402
from recsys.metrics import format_table  # noqa: E402
from recsys.ranker.evaluate import (ndcg_difference_interval, read_fusion_weight, read_prompt_config,  # noqa: E402
                                    score_subset, subset_rows, two_stage_metrics)
from recsys.ranker.model import DEFAULT_ADAPTER, RankerLoadConfig, load_ranker  # noqa: E402
from recsys.retriever.candidates import load_candidates  # noqa: E402
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402

PAPER = {"subset": {"retriever": {"N@10": 0.3367, "R@10": 0.6654}, "two_stage": {"N@10": 0.3766, "R@10": 0.7560}},
         "overall": {"retriever": {"M@10": 0.0491, "N@10": 0.0705, "R@10": 0.1426},
                     "two_stage": {"M@10": 0.0529, "N@10": 0.0759, "R@10": 0.1524}}}
KEYS = ("M@10", "N@10", "R@10")


def main(argv=None) -> dict:
    """Score the test subset with the verbalizer, print ours beside the paper, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER), help="peft adapter folder, or 'none'")
    parser.add_argument("--retriever", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-users", type=int, default=None, help="a seeded sample of the subset (faster)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="unquantized CPU weights (auto: bf16 where the CPU has it natively, as the app)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    adapter = None if args.adapter == "none" else args.adapter
    model, tokenizer = load_ranker(RankerLoadConfig(base_model=args.base_model, adapter=adapter,
                                                    cpu_precision=args.precision))
    machine = machine_record("4-bit NF4" if getattr(model, "is_loaded_in_4bit", False) else model.dtype, model.device)
    dataset = load_dataset("ml-latest-small", args.data_dir)
    candidates = load_candidates(args.retriever)["test"]
    rows = subset_rows(candidates, args.max_users)
    scored = score_subset(model, tokenizer, dataset.catalog, dataset, "test", candidates, read_prompt_config(adapter), rows,
                          batch_size=8)
    weight = read_fusion_weight(adapter)
    metrics = two_stage_metrics(scored, weight)
    llm_only = two_stage_metrics(scored, 0.0)
    result = {part: {stage: {k: round(metrics[part][stage][k], 4) for k in KEYS} for stage in ("retriever", "two_stage")}
              for part in ("subset", "overall")}
    for part in ("subset", "overall"):
        result[part]["llm_only"] = {k: round(llm_only[part]["two_stage"][k], 4) for k in KEYS}
    low, high = ndcg_difference_interval(scored, weight)
    result.update(users=len(rows), total_users=scored.total_users, fusion_weight=weight, paper=PAPER,
                  **{"ci95_diff_N@10": [round(low, 4), round(high, 4)]}, precision=args.precision,
                  load_average=[round(x, 2) for x in os.getloadavg()],
                  adapter=Path(args.adapter).name, base_model=args.base_model or "SmolLM2-135M-Instruct")
    for part, title in (("subset", "valid-retrieval subset (paper Table 3)"), ("overall", "all test users (paper Table 1)")):
        rows_to_print = {"paper LRURec": PAPER[part]["retriever"], "paper LlamaRec (7B)": PAPER[part]["two_stage"],
                         "ours retriever": result[part]["retriever"], "ours LLM only": result[part]["llm_only"],
                         f"ours two-stage (w={weight:g})": result[part]["two_stage"]}
        print(f"\n{title}: {len(rows)} of {scored.total_users} users in the subset")
        print(format_table(rows_to_print, KEYS))
    gain = result["subset"]["two_stage"]["N@10"] / max(result["subset"]["retriever"]["N@10"], 1e-9) - 1
    print(f"\nsubset NDCG@10 change over the retriever's order: {gain:+.1%} (paper, 7B: +11.9%); "
          f"paired-bootstrap 95% interval of the difference [{low:+.4f}, {high:+.4f}] over {len(rows)} users")
    write_json(args.json, result, machine)
    return result


if __name__ == "__main__":
    main()
