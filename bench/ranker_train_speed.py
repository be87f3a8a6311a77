"""Ranker training speed by recipe: seconds per example (forward + backward) on real held-out prompts.

`python bench/ranker_train_speed.py --json bench/results/ranker_train_speed.json` (needs `runs/heldout`,
written by `python -m recsys.ranker.heldout`)

For each setting (the prompt with or without release years; LoRA on all 30 decoder layers or the top 10;
on q/v or on all seven linear layers) the base model is loaded as training loads it (bf16 base weights
where the CPU computes bf16 natively, fp32 LoRA weights), and the letter loss of `--examples` held-out
prompts is run forward and backward one at a time. The first two are warm-up and not counted.
"""

from __future__ import annotations

import argparse
import statistics
import time


from common import machine_summary
from recsys.data import load_dataset
from recsys.machine import machine_record
from recsys.ranker.heldout import load_held_out
from recsys.ranker.model import LoraSettings, RankerLoadConfig, add_lora, load_base_model, load_tokenizer
from recsys.ranker.prompt import PromptConfig
from recsys.ranker.train import ExampleDataset, collate_letters, letter_loss
from recsys.ranker.verbalizer import letter_token_ids
from recsys.results import write_json

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SETTINGS = (  # (name, years in the prompt, LoRA on the top N layers or all, LoRA target modules)
    ("with years, q/v on all layers (the previous recipe)", True, None, ("q_proj", "v_proj")),
    ("no years, q/v on all layers", False, None, ("q_proj", "v_proj")),
    ("no years, q/v on the top 10 layers", False, 10, ("q_proj", "v_proj")),
    ("no years, all linear layers of the top 10 (the committed recipe)", False, 10, ALL_LINEAR),
)
WARM_UP = 2


def main(argv=None) -> dict:
    """Time each setting, print a table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heldout", default="runs/heldout")
    parser.add_argument("--examples", type=int, default=12)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    dataset = load_dataset("ml-latest-small")
    examples = load_held_out(args.heldout).ranking_examples(dataset)[: args.examples]
    tokenizer = load_tokenizer(None)
    letter_ids, pad = letter_token_ids(tokenizer), collate_letters(tokenizer.pad_token_id)
    rows, machine = [], None
    for name, years, top_layers, targets in SETTINGS:
        config = RankerLoadConfig(cpu_precision="auto",
                                  lora=LoraSettings(target_modules=targets, top_layers=top_layers))
        model = add_lora(load_base_model(config, for_training=True), config.lora).train()
        machine = machine or machine_record(next(model.parameters()).dtype)
        data = ExampleDataset(examples, tokenizer, dataset.catalog, PromptConfig(max_history=10, years=years),
                              "letters")
        seconds = []
        for item in data:
            start = time.perf_counter()
            letter_loss(model, pad([item]), letter_ids).backward()
            seconds.append(time.perf_counter() - start)
        rows.append({"setting": name, "prompt_tokens": round(statistics.mean(len(d["input_ids"]) for d in data)),
                     "seconds_per_example": round(statistics.mean(seconds[WARM_UP:]), 3)})
        print(f"{name}: {rows[-1]['prompt_tokens']} tokens, {rows[-1]['seconds_per_example']:.3f} s/example")
    print(machine_summary(machine))
    result = {"examples": len(examples), "warm_up": WARM_UP, "settings": rows, "machine": machine}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
