"""What the serving path's choices cost, each against its alternative in one run: the LM head on a sliced or a gathered
last position, the adapter unfolded or folded, SDPA or grouped attention, one prompt a pass or eight, the results
chart validated by plotly or not.

`python bench/serving_costs.py --json bench/results/serving_costs.json`   # ~1 min on 2 cores

Loads the app's pipeline (default checkpoints, bf16 base weights where the CPU computes bf16 natively, frozen as
served) and the served prompts of `--users` test users, then times (median of `--repeats` after a warm-up):
- the LM head's product on the last position of a (B, T, hidden) state, sliced (`logits_to_keep=1`) or gathered
  (`recsys.kv_cache.last_position`), for B = 1 and B = 8, and for B = 1 with the head's weight not frozen (as in
  `bench/efficiency.py`'s plain base model, where torch folds the sliced product too);
- one verbalizer pass after the cached prefix (`read_next_tokens`), as served (adapter folded, grouped-query
  attention), with the adapter unfolded (peft's LoRA over the base weights: `FoldedAdapter.unfolded`), and with
  torch's SDPA for attention (`recsys.ranker.attention`);
- the verbalizer per prompt at B = 1 and in one padded pass of B = `--users`;
- the opinions chart built as served (one spec, unvalidated) and the same spec validated by plotly.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import nullcontext

import plotly.graph_objects as go
import torch

from recsys import plots
from recsys.machine import describe_machine, machine_record
from recsys.pipeline import Pipeline, PipelineConfig, ServingConfig
from recsys.ranker.attention import ATTENTION
from recsys.ranker.verbalizer import read_next_tokens
from recsys.results import write_json
from floor import TimingConfig, time_call


def main(argv=None) -> dict:
    """Time each choice beside its alternative; print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=8, help="test users whose served prompts are timed")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    pipeline = Pipeline.load(PipelineConfig(serving=ServingConfig(shared_results=0)))
    model = pipeline.llm.model
    machine = machine_record(next(model.parameters()).dtype)
    timing = TimingConfig(warmup=1, repeats=args.repeats)
    users = pipeline.test_users
    prompts = [pipeline.recommend(list(users[u].history)).prompt for u in users.ids()[: args.users]]
    prefix = pipeline.llm.prefix_cache()

    def ms(fn) -> float:
        with torch.inference_mode():
            return round(1000 * time_call(fn, "cpu", timing).median_seconds, 1)

    rows = []
    head = model.get_output_embeddings()
    for batch in (1, 8):
        hidden = torch.randn(batch, 280, head.in_features, dtype=head.weight.dtype)
        rows.append({"what": f"LM head on the last position, B = {batch}", "alternative": "sliced (logits_to_keep=1)",
                     "alternative_ms": ms(lambda h=hidden: head(h[:, -1:, :])), "served": "gathered (last_position)",
                     "served_ms": ms(lambda h=hidden: head(h[:, torch.tensor([-1]), :]))})
    hidden = torch.randn(1, 280, head.in_features, dtype=head.weight.dtype)
    frozen = head.weight.requires_grad
    head.weight.requires_grad_(True)
    rows.append({"what": "LM head, B = 1, weight not frozen", "alternative": "sliced (logits_to_keep=1)",
                 "alternative_ms": ms(lambda: head(hidden[:, -1:, :])), "served": "gathered (last_position)",
                 "served_ms": ms(lambda: head(hidden[:, torch.tensor([-1]), :]))})
    head.weight.requires_grad_(frozen)

    def one_pass_each(unfolded: bool = False, attention: str = ATTENTION) -> float:
        model.set_attn_implementation(attention)
        try:
            with pipeline.llm.unfolded() if unfolded else nullcontext():
                return statistics.median(ms(lambda p=p: read_next_tokens(model, pipeline.llm.tokenizer, [p],
                                                                         pipeline.llm.letter_ids, prefix=prefix))
                                         for p in prompts)
        finally:
            model.set_attn_implementation(ATTENTION)

    folded, unfolded, sdpa = one_pass_each(), one_pass_each(unfolded=True), one_pass_each(attention="sdpa")
    rows.append({"what": "verbalizer pass after the cached prefix (median prompt)", "alternative": "adapter unfolded",
                 "alternative_ms": unfolded, "served": "adapter folded", "served_ms": folded})
    rows.append({"what": "verbalizer pass after the cached prefix (median prompt)", "alternative": "torch's SDPA",
                 "alternative_ms": sdpa, "served": "grouped attention", "served_ms": folded})
    batched = ms(lambda: read_next_tokens(model, pipeline.llm.tokenizer, prompts, pipeline.llm.letter_ids,
                                          prefix=prefix))
    rows.append({"what": "verbalizer per prompt", "alternative": "one prompt a pass", "alternative_ms": folded,
                 "served": f"{len(prompts)} prompts in one padded pass", "served_ms": round(batched / len(prompts), 1)})
    letters = [chr(65 + i) for i in range(20)]
    titles = [pipeline.catalog.title(i) for i in range(1, 21)]
    opinions = {name: [(i + 1) / 210 for i in range(20)] for name in ("Final", "LLM", "Co-watch", "Retriever")}
    figure = plots.opinions_figure(letters, titles, opinions, list(range(20)), highlight=3)
    spec = figure.to_plotly_json()
    rows.append({"what": "opinions chart (20 candidates x 4 opinions)", "alternative": "validated by plotly",
                 "alternative_ms": ms(lambda: go.Figure(spec)), "served": "one spec, unvalidated",
                 "served_ms": ms(lambda: plots.opinions_figure(letters, titles, opinions, list(range(20)), 3))})
    print(f"{'what':<58} {'alternative':<28} {'ms':>8}   {'served':<28} {'ms':>8} {'ratio':>7}")
    for row in rows:
        row["ratio"] = round(row["alternative_ms"] / row["served_ms"], 2)
        print(f"{row['what']:<58} {row['alternative']:<28} {row['alternative_ms']:>8.1f}   {row['served']:<28} "
              f"{row['served_ms']:>8.1f} {row['ratio']:>6.2f}x")
    print(f"machine: {describe_machine(machine)}")
    result = {"rows": rows, "prompts": len(prompts), "repeats": args.repeats, "machine": machine}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
