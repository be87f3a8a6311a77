"""Does the LLM's opinion follow the films or the letters? The same candidates, in the retriever's order and reversed.

`python bench/order_invariance.py --json bench/results/order_invariance.json` (add `--adapter none` for the base model)

For each test user of the valid-retrieval subset (a seeded sample), the verbalizer scores the 20
candidates listed in the retriever's order, then listed in reverse. Per user, the Spearman
correlation of the two score vectors is taken twice: film by film (each film's score in both
orders) and letter by letter (the score at letter A in both, at B in both, ...). A ranker that reads
the titles agrees film by film; one that learned a position prior agrees letter by letter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


from common import load_served_ranker, order_agreement
from recsys.data import load_dataset
from recsys.ranker.evaluate import score_llm
from recsys.ranker.rows import split_rows
from recsys.ranker.model import DEFAULT_ADAPTER
from recsys.results import write_json
from recsys.retriever.candidates import load_candidates
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT


def main(argv=None) -> dict:
    """Score a sample of test users in both orders, print the agreement, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER), help="peft adapter folder, or 'none'")
    parser.add_argument("--retriever", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    ranker, model, tokenizer, machine = load_served_ranker(args.adapter, args.base_model, args.precision)
    dataset = load_dataset("ml-latest-small")
    rows = split_rows(dataset, "test", load_candidates(args.retriever)["test"], None, args.users)
    prompt_config = ranker.prompt
    in_order = score_llm(model, tokenizer, dataset.catalog, rows, prompt_config).llm
    reverse = torch.arange(rows.candidate_ids.shape[1] - 1, -1, -1).expand(len(rows), -1)
    reversed_order = score_llm(model, tokenizer, dataset.catalog, rows, prompt_config, permutation=reverse).llm
    result = {"adapter": Path(args.adapter).name, "users": len(rows), **order_agreement(in_order, reversed_order),
              "machine": machine}
    print(f"{result['adapter']}, {len(rows)} test users, candidates in the retriever's order vs reversed:")
    print(f"  film by film Spearman {result['film_by_film_spearman']:+.3f}   letter by letter "
          f"{result['letter_by_letter_spearman']:+.3f}   same top film {result['same_top_film']:.0%}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
