"""Where the served verbalizer pass spends its time: torch's profiler over the app's forward, ops grouped by kind.

`python bench/forward_profile.py --json bench/results/forward_profile.json`

Loads the app's pipeline (default checkpoints, the committed adapter folded into bf16 base weights where the
CPU computes bf16 natively: `recsys.ranker.folded`), takes the served prompts of a few test users and profiles
the verbalizer's forward after the cached instruction prefix, exactly as `Pipeline.recommend` runs it, with the
adapter and with it switched off (the base model: the same products over the base weights). Operator
self-times are summed by kind (matrix products, attention, dtype copies, elementwise, the rest) and
divided by the number of passes; beside them the matmul floor of the same prompt (`recsys.floor`). The
profiler adds a little overhead of its own, so the total is a bit above an unprofiled pass.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import nullcontext

import torch


from floor import prompt_floor
from recsys.machine import describe_machine, machine_record
from recsys.pipeline import Pipeline, PipelineConfig
from recsys.ranker.artefacts import default_adapter
from recsys.ranker.model import RankerLoadConfig
from recsys.ranker.verbalizer import forward_letter_logits, tokenize_prompts
from recsys.results import write_json

KINDS = {  # operator name -> kind; anything else is "other"
    "aten::mm": "matrix products", "aten::addmm": "matrix products",  # the projections and the LM head
    # the served kernel's products, softmax and mask (`recsys.ranker.attention`), then torch's SDPA kernels
    "aten::bmm": "attention", "aten::_softmax": "attention", "aten::masked_fill_": "attention",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::_scaled_dot_product_attention_math": "attention",
    "aten::copy_": "dtype casts and copies", "aten::_to_copy": "dtype casts and copies",
    "aten::mul": "elementwise", "aten::add": "elementwise", "aten::silu": "elementwise", "aten::pow": "elementwise",
    "aten::mean": "elementwise", "aten::rsqrt": "elementwise", "aten::neg": "elementwise", "aten::cat": "elementwise",
    "aten::sum": "elementwise", "aten::where": "elementwise",
}


def profile_passes(pipeline: Pipeline, prompts: list[str], base: bool, repeats: int) -> dict:
    """Milliseconds a pass by kind of operator (self CPU time), over `repeats` passes of each prompt."""
    llm = pipeline.llm
    prefix = llm.prefix_cache(base=base)
    with llm.without_adapter() if base else nullcontext(), torch.inference_mode():
        for text in prompts[:1]:  # warm-up
            forward_letter_logits(llm.model, tokenize_prompts(llm.tokenizer, [text], "cpu", prefix), llm.letter_ids)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(repeats):
                for text in prompts:
                    forward_letter_logits(llm.model, tokenize_prompts(llm.tokenizer, [text], "cpu", prefix),
                                          llm.letter_ids)
    passes = repeats * len(prompts)
    kinds: dict[str, float] = {}
    for event in profiler.key_averages():
        kind = KINDS.get(event.key, "other")
        kinds[kind] = kinds.get(kind, 0.0) + event.self_cpu_time_total / 1000 / passes
    return {kind: round(ms, 1) for kind, ms in sorted(kinds.items(), key=lambda item: -item[1])}


def main(argv=None) -> dict:
    """Profile the served pass with and without the adapter; print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=5, help="test users whose served prompts are profiled")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = every usable core (as the app)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = machine_record()  # at the start: the load average before this process adds its own
    pipeline = Pipeline.load(PipelineConfig(ranker=RankerLoadConfig(adapter=default_adapter())))
    users = pipeline.test_users
    prompts = []
    for user in users.ids()[: args.users]:
        result = pipeline.recommend(list(users[user].history))
        prompts.append(result.prompt.text)
    tokens = int(statistics.median(len(pipeline.llm.tokenizer(p).input_ids) for p in prompts))
    cached = len(pipeline.llm.prefix_cache().token_ids)
    floor = prompt_floor(pipeline.llm.model.config, tokens, next(pipeline.llm.model.parameters()).dtype, "cpu",
                         cached_tokens=cached)
    served = profile_passes(pipeline, prompts, base=False, repeats=args.repeats)
    base = profile_passes(pipeline, prompts, base=True, repeats=args.repeats) if pipeline.llm.can_compare_base else {}
    kinds = list(dict.fromkeys([*served, *base]))
    print(f"verbalizer pass after the cached prefix, ms a pass ({len(prompts)} prompts x {args.repeats}, median "
          f"{tokens} tokens of which {cached} cached)")
    print(f"{'kind':<26} {'served (adapter)':>17} {'base model':>11}")
    for kind in kinds:
        print(f"{kind:<26} {served.get(kind, 0.0):>17.1f} {base.get(kind, 0.0):>11.1f}")
    print(f"{'total':<26} {sum(served.values()):>17.1f} {sum(base.values()):>11.1f}")
    print(f"{'matmul floor':<26} {floor['floor_ms']:>17.1f}")
    print(f"machine: {describe_machine(machine)}")
    result = {"served_ms": served, "base_ms": base, "served_total_ms": round(sum(served.values()), 1),
              "base_total_ms": round(sum(base.values()), 1), "floor": floor, "prompts": len(prompts),
              "repeats": args.repeats, "median_tokens": tokens, "cached_tokens": cached, "machine": machine}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
