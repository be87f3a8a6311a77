"""Verbalizer vs generation-based ranking: time per request across title lengths (paper Fig. 3).

`python bench/efficiency.py --json bench/results/efficiency.json`

For a few real test users (history + the retriever's top-20), with candidate titles cut to 5, 10,
20 and 40 tokens and uncut, it times on the same prompts in one run: the verbalizer (one forward
pass, 20 letter logits) and the generation baseline (greedy decoding of the ranked titles, KV
cache, stopped at EOS or at the length of all titles), each continuing from its instruction's
cached prefix as the app serves them. Then the verbalizer's throughput at batch 1
and 8, a ladder of speed-ups each timed before and after, and the time floor: a plain matmul timed
at each of the prompt's shapes, in the model's dtype with the run's threads (`recsys.floor`).
Writes JSON (with the machine: CPU, flags, dtype, threads, load at the start) and a figure like
the paper's Fig. 3.

Steps the hardware can only emulate are skipped, and the output says so: bf16 on a CPU without
AVX512-BF16 or AMX (slower than fp32 there, not faster), and 4-bit NF4 on any CPU. Asking for
them explicitly (--dtype bfloat16, --quantization 4bit) on such a CPU stops with a message;
--allow-emulated measures them anyway.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


from recsys import NUM_CANDIDATES
from recsys.data import load_dataset
from recsys.cli import add_dataclass_flags, dataclass_from_args
from floor import against_floor, prompt_floor
from recsys.kv_cache import last_position
from recsys.machine import auto_dtype, describe_machine, emulation, machine_record
from recsys.ranker.attention import ATTENTION
from recsys.ranker.generation import GENERATION_INSTRUCTION, answer_length, generate_ranking, generation_prompt
from recsys.ranker.model import RankerLoadConfig, describe, load_ranker, pick_device
from recsys.ranker.prompt import PromptConfig, build_prompt
from recsys.ranker.verbalizer import (PrefixCache, build_prefix_cache, letter_logits, letter_token_ids,
                                      read_next_tokens, tokenize_prompts)
from recsys.results import write_json
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_config, load_model
from floor import TimingConfig, median, time_call

ROOT = Path(__file__).resolve().parents[1]
TITLE_LENGTHS = ("5", "10", "20", "40", "uncut")  # the paper's sweep of title lengths, plus the titles as they are
HEADLINE = "20"  # the paper's headline point: recsys.paper.GENERATION_S of generation vs < 1 s verbalizer
UNCUT_TOKENS = 10**6
RATIO_GOALS = {"cpu": 20, "cuda": 50}


@dataclass
class EfficiencyConfig:
    """What to measure and how often (defaults keep the run to a few minutes on 2 CPU cores)."""

    base_model: str | None = None  # None = SmolLM2-135M-Instruct; e.g. meta-llama/Llama-2-7b-hf on a GPU
    adapter: str | None = None  # a LoRA adapter folder (timing is the same with or without)
    device: str = "auto"
    quantization: str = "none"  # "none" = plain weights in `dtype`; "4bit" = NF4 (bitsandbytes)
    dtype: str = "auto"  # "auto" = bfloat16 where computed natively (CUDA, AVX512-BF16/AMX), else float32
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    users: int = 3  # test users in the title-length sweep
    repeats: int = 3  # timed repeats of each verbalizer measurement
    generation_repeats: int = 1  # timed repeats of each generation (each takes seconds)
    batch_size: int = 8  # the larger batch of the throughput measurement
    seed: int = 0
    checkpoint: str = str(DEFAULT_CHECKPOINT)  # the retriever that proposes the candidates
    data_dir: str | None = None
    title_lengths: tuple[str, ...] = TITLE_LENGTHS
    speed_steps: bool = True
    allow_emulated: bool = False  # measure bf16 / 4-bit even where the hardware only emulates them
    figure: str = str(ROOT / "assets" / "efficiency.png")
    json: str | None = None


@dataclass
class Request:
    """One test user's ranking request: history and the retriever's candidates, as titles."""

    user: int
    history_titles: list[str]
    candidate_titles: list[str]


@dataclass
class SweepPoint:
    """Verbalizer and generation on the same prompts at one title length."""

    max_title_tokens: int | None
    mean_title_tokens: float  # of the candidate titles as shown
    mean_prompt_tokens: float  # of the verbalizer prompt
    verbalizer_ms: float
    generation_ms: float
    ratio: float
    generated_tokens: float  # median over requests
    answer_budget_tokens: float  # median length of all candidate titles, one per line (the stop rule)
    generation_prefill_ms: float
    generation_decode_ms: float
    ms_per_decoded_token: float
    same_prompts_as: str | None = None  # when every prompt equals another length's, its numbers are reused
    sample_output: str = field(default="", repr=False)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" -> bfloat16 where `device` computes it natively (`recsys.machine.auto_dtype`), else float32;
    or the dtype named."""
    if name == "auto":
        return auto_dtype(device)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def load_requests(config: EfficiencyConfig, count: int) -> list[Request]:
    """`count` seeded test users with their histories and the retriever's top-20 candidates."""
    dataset = load_dataset(load_config(config.checkpoint).get("dataset", "ml-latest-small"), config.data_dir)
    users = sorted(dataset.sequences)
    picked = torch.randperm(len(users), generator=torch.Generator().manual_seed(config.seed))[:count].tolist()
    users = [users[i] for i in picked]
    histories = [dataset.test_input(u)[0] for u in users]
    candidate_ids, _ = load_model(config.checkpoint).retrieve(histories, NUM_CANDIDATES)
    return [Request(u, dataset.catalog.titles(h), dataset.catalog.titles(ids.tolist()))
            for u, h, ids in zip(users, histories, candidate_ids)]


def title_limit(title_length: str) -> int | None:
    """The token limit a title-length label stands for (None for "uncut")."""
    return None if title_length == "uncut" else int(title_length)


def prompt_config(title_length: str) -> PromptConfig:
    """The prompt budgets with titles cut to `title_length` tokens ("uncut": not cut)."""
    return PromptConfig(max_title_tokens=title_limit(title_length) or UNCUT_TOKENS)


def sweep_point(model, tokenizer, requests: list[Request], title_length: str, letter_ids: list[int],
                config: EfficiencyConfig, prefixes: tuple[PrefixCache, PrefixCache]) -> SweepPoint:
    """Median verbalizer and generation time per request (prompt building included) at one title length.

    As the app serves them, each method continues from its own instruction's cached prefix
    (`prefixes` = (verbalizer's, generation's))."""
    prompt_cfg = prompt_config(title_length)
    verbalizer_seconds, results = [], []
    title_tokens, prompt_tokens, budgets = [], [], []
    for request in requests:
        history, candidates = request.history_titles, request.candidate_titles
        prompt = build_prompt(tokenizer, history, candidates, prompt_cfg)
        prompt_tokens.append(prompt.num_tokens)
        title_tokens += [len(tokenizer(t, add_special_tokens=False).input_ids) for t in prompt.candidate_titles]
        budgets.append(answer_length(tokenizer, prompt.candidate_titles))
        verbalize = lambda history=history, candidates=candidates: read_next_tokens(  # noqa: E731
            model, tokenizer, [build_prompt(tokenizer, history, candidates, prompt_cfg)], letter_ids,
            prefix=prefixes[0])
        verbalizer_seconds += time_call(verbalize, model.device, TimingConfig(0, config.repeats)).seconds
        generate = lambda history=history, candidates=candidates: generate_ranking(  # noqa: E731
            model, tokenizer, generation_prompt(tokenizer, history, candidates, prompt_cfg), prefix=prefixes[1])
        results += time_call(generate, model.device, TimingConfig(0, config.generation_repeats)).outputs
    decoded = sum(max(r.num_generated_tokens - 1, 0) for r in results)  # the prefill yields the first token
    verbalizer_ms = 1000 * median(verbalizer_seconds)
    generation_ms = 1000 * median([r.seconds for r in results])
    return SweepPoint(
        max_title_tokens=title_limit(title_length),
        mean_title_tokens=round(sum(title_tokens) / len(title_tokens), 2),
        mean_prompt_tokens=round(sum(prompt_tokens) / len(prompt_tokens), 1),
        verbalizer_ms=round(verbalizer_ms, 1), generation_ms=round(generation_ms, 1),
        ratio=round(generation_ms / verbalizer_ms, 2),
        generated_tokens=median([r.num_generated_tokens for r in results]),
        answer_budget_tokens=median(budgets),
        generation_prefill_ms=round(1000 * median([r.prefill_seconds for r in results]), 1),
        generation_decode_ms=round(1000 * median([r.decode_seconds for r in results]), 1),
        ms_per_decoded_token=round(1000 * sum(r.decode_seconds for r in results) / max(decoded, 1), 1),
        sample_output=results[0].text[:300])


def title_sweep(model, tokenizer, requests: list[Request], letter_ids: list[int],
                config: EfficiencyConfig, prefixes: tuple[PrefixCache, PrefixCache]) -> dict[str, SweepPoint]:
    """`sweep_point` at every title length; a length whose prompts all equal an earlier one's reuses its numbers."""
    points: dict[str, SweepPoint] = {}
    seen: dict[tuple[str, ...], str] = {}
    for title_length in config.title_lengths:
        texts = tuple(build_prompt(tokenizer, r.history_titles, r.candidate_titles, prompt_config(title_length)).text
                      for r in requests)
        if texts in seen:
            earlier = points[seen[texts]]
            points[title_length] = SweepPoint(**{**asdict(earlier), "same_prompts_as": seen[texts],
                                                 "max_title_tokens": title_limit(title_length)})
        else:
            seen[texts] = title_length
            points[title_length] = sweep_point(model, tokenizer, requests, title_length, letter_ids, config,
                                               prefixes)
        print(f"  title length {title_length:>5}: verbalizer {points[title_length].verbalizer_ms:8.1f} ms, "
              f"generation {points[title_length].generation_ms:9.1f} ms, ratio {points[title_length].ratio:6.1f}",
              flush=True)
    return points


def throughput(model, tokenizer, texts: list[str], letter_ids: list[int], config: EfficiencyConfig,
               prefix: PrefixCache) -> dict:
    """Verbalizer requests per second on `texts` (after the cached prefix), one prompt a forward vs all in one batch."""
    timing = TimingConfig(0, config.repeats)
    one_by_one = time_call(lambda: [letter_logits(model, tokenizer, [t], letter_ids, prefix) for t in texts],
                           model.device, timing)
    batched = time_call(lambda: letter_logits(model, tokenizer, texts, letter_ids, prefix), model.device, timing)
    return {"batch_1": round(len(texts) / one_by_one.median_seconds, 3),
            f"batch_{len(texts)}": round(len(texts) / batched.median_seconds, 3),
            "unit": "requests/s", "title_len": HEADLINE, "prompts": len(texts)}


def _letter_logits_variant(model, tokenizer, texts: list[str], letter_ids: list[int], grad_context,
                           all_positions: bool):
    with grad_context():
        batch = tokenize_prompts(tokenizer, texts, model.device)
        keep = {"logits_to_keep": 0} if all_positions else last_position(model.device)
        outputs = model(**batch, **keep, use_cache=False)
        return outputs.logits[:, -1, :].float()[:, letter_ids]


def speed_steps(model, tokenizer, texts: list[str], letter_ids: list[int], config: EfficiencyConfig) -> list[dict]:
    """The verbalizer's speed-ups, cumulative, each timed per request on the same prompt(s).

    Starts from a plain full-precision forward (no_grad, eager attention, LM head on every position)
    and adds inference_mode, last-position LM head, SDPA, the app's grouped attention, the cached instruction
    prefix, batching and bf16, in that order. The batch repeats the first prompt, so that per-request times compare
    like for like (padding costs show in `throughput`, on different prompts). The bf16 rows are
    skipped, with a row saying why, where the device only emulates bf16 (unless allow_emulated);
    otherwise the model is left in bf16 when it was not quantized.
    """
    one, batch = texts[:1], texts[:1] * config.batch_size
    timing = TimingConfig(1, config.repeats)
    quantized = getattr(model, "is_loaded_in_4bit", False)
    if not quantized:
        model.float()
    rows = []

    def measure(step: str, fn, requests: int = 1) -> None:
        ms = 1000 * time_call(fn, model.device, timing).median_seconds / requests
        rows.append({"step": step, "ms_per_request": round(ms, 1),
                     "dtype": str(next(model.parameters()).dtype).replace("torch.", "")})
        print(f"  {step:<58} {ms:9.1f} ms/request", flush=True)

    model.set_attn_implementation("eager")
    measure("no_grad, eager attention, LM head on every position",
            lambda: _letter_logits_variant(model, tokenizer, one, letter_ids, torch.no_grad, True))
    measure("+ inference_mode",
            lambda: _letter_logits_variant(model, tokenizer, one, letter_ids, torch.inference_mode, True))
    measure("+ LM head on the last position only (`last_position`)",
            lambda: _letter_logits_variant(model, tokenizer, one, letter_ids, torch.inference_mode, False))
    model.set_attn_implementation("sdpa")
    measure("+ SDPA attention", lambda: letter_logits(model, tokenizer, one, letter_ids))
    model.set_attn_implementation(ATTENTION)
    measure("+ grouped-query attention (the app's kernel, `recsys.ranker.attention`)",
            lambda: letter_logits(model, tokenizer, one, letter_ids))
    prefix = build_prefix_cache(model, tokenizer)
    measure(f"+ cached instruction prefix ({len(prefix.token_ids)} tokens; what the app runs)",
            lambda: letter_logits(model, tokenizer, one, letter_ids, prefix))
    measure(f"+ batch of {len(batch)} (time per request)",
            lambda: letter_logits(model, tokenizer, batch, letter_ids, prefix), len(batch))
    bf16_emulated = None if config.allow_emulated else emulation(model.device, torch.bfloat16)
    if not quantized and bf16_emulated:
        rows.append({"step": "+ bf16 weights and activations", "skipped": bf16_emulated})
        print(f"  {'+ bf16 weights and activations':<58} skipped: {bf16_emulated}", flush=True)
    elif not quantized:
        full_precision = letter_logits(model, tokenizer, texts, letter_ids)
        model.to(torch.bfloat16)
        prefix = build_prefix_cache(model, tokenizer)
        measure("+ bf16 weights and activations",
                lambda: letter_logits(model, tokenizer, batch, letter_ids, prefix), len(batch))
        rows[-1]["agreement_with_fp32"] = agreement(full_precision, letter_logits(model, tokenizer, texts, letter_ids))
        print(f"  {'':<58} bf16 vs fp32 on {len(texts)} prompts: {rows[-1]['agreement_with_fp32']}")
        measure("bf16, batch 1, no prefix cache (for reference)",
                lambda: letter_logits(model, tokenizer, one, letter_ids))
    return rows


def agreement(reference: torch.Tensor, other: torch.Tensor) -> dict:
    """How closely two (B, 20) letter-logit tensors agree: top-1 share, largest probability gap, rank correlation."""
    p, q = torch.softmax(reference, -1), torch.softmax(other, -1)
    ranks_p, ranks_q = p.argsort(-1).argsort(-1).float(), q.argsort(-1).argsort(-1).float()
    spearman = torch.nn.functional.cosine_similarity(ranks_p - ranks_p.mean(-1, keepdim=True),
                                                     ranks_q - ranks_q.mean(-1, keepdim=True), dim=-1)
    return {"top1_agreement": round((p.argmax(-1) == q.argmax(-1)).float().mean().item(), 3),
            "max_abs_probability_difference": round((p - q).abs().max().item(), 4),
            "mean_spearman": round(spearman.mean().item(), 4)}


def time_floor(model, tokenizer, text: str, measured_ms: float, cached_tokens: int = 0) -> dict:
    """`recsys.floor.prompt_floor` of `text` in the model's compute dtype (bf16 for 4-bit), `cached_tokens` of it
    not run again, beside the measured time."""
    dtype = next(model.parameters()).dtype
    dtype = torch.bfloat16 if getattr(model, "is_loaded_in_4bit", False) else dtype  # NF4 computes in bf16
    floor = prompt_floor(model.config, len(tokenizer(text).input_ids), dtype, model.device,
                         cached_tokens=cached_tokens)
    return {**floor, "measured_ms": round(measured_ms, 1),
            "measured_over_floor": against_floor(floor, measured=measured_ms)["measured_over_floor"]}


def plot(points: dict[str, SweepPoint], setting: str, path: str | Path) -> Path:
    """Grouped bars like the paper's Fig. 3: seconds per request (log scale) against title length, both methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(points)
    x = range(len(labels))
    verbalizer = [points[k].verbalizer_ms / 1000 for k in labels]
    generation = [points[k].generation_ms / 1000 for k in labels]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=150)
    width = 0.38
    ax.bar([i - width / 2 for i in x], verbalizer, width, label="verbalizer (LlamaRec, one forward pass)",
           color="#2b8cbe")
    ax.bar([i + width / 2 for i in x], generation, width, label="generation (greedy, ranked titles)", color="#e34a33")
    for i, key in zip(x, labels):
        ax.annotate(f"x{points[key].ratio:.0f}", (i + width / 2, generation[i]), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=8 * max(generation))  # headroom for the legend above the bars
    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{k}\n(mean {points[k].mean_title_tokens:.1f})" for k in labels])
    ax.set_xlabel("titles cut to N tokens (mean candidate title tokens)")
    ax.set_ylabel("seconds per request")
    ax.set_title(f"Ranking 20 candidates, verbalizer vs generation\n{setting}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def print_sweep(points: dict[str, SweepPoint]) -> None:
    """The title-length table."""
    print(f"{'title':>6} {'mean tok':>8} {'prompt':>7} {'verbalizer ms':>14} {'generation ms':>14} {'ratio':>7} "
          f"{'gen tok':>8} {'budget':>7} {'prefill ms':>11} {'ms/token':>9}")
    for key, p in points.items():
        note = f"  (same prompts as {p.same_prompts_as})" if p.same_prompts_as else ""
        print(f"{key:>6} {p.mean_title_tokens:>8.1f} {p.mean_prompt_tokens:>7.0f} {p.verbalizer_ms:>14.1f} "
              f"{p.generation_ms:>14.1f} {p.ratio:>7.1f} {p.generated_tokens:>8.0f} {p.answer_budget_tokens:>7.0f} "
              f"{p.generation_prefill_ms:>11.1f} {p.ms_per_decoded_token:>9.1f}{note}")


def run(config: EfficiencyConfig) -> dict:
    """Measure everything, print the tables, write the figure and (when asked) the JSON; return the result."""
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    load_config_ = RankerLoadConfig(base_model=config.base_model, adapter=config.adapter, device=config.device,
                                    quantization=config.quantization)
    target = pick_device(config.device)
    reason = None if config.allow_emulated else emulation(target, pick_dtype(config.dtype, target), config.quantization)
    if reason:
        raise SystemExit(f"not measured: {reason}. Pass --allow-emulated to measure it anyway.")
    model, tokenizer = load_ranker(load_config_)
    facts = describe(load_config_)
    gpu = model.device.type == "cuda"
    quantized = getattr(model, "is_loaded_in_4bit", False)
    if not quantized:
        model.to(pick_dtype(config.dtype, model.device))
    precision = facts["quantization"] if quantized else str(next(model.parameters()).dtype).replace("torch.", "")
    threads = torch.get_num_threads()
    machine = machine_record(precision, model.device)
    print(f"machine: {describe_machine(machine)}", flush=True)
    device = facts["device"] if gpu else f"CPU, {threads} thread{'s' if threads > 1 else ''}"
    if not torch.cuda.is_available():
        device += " (no GPU available)"
        print("No GPU available: measuring on the CPU. The paper's setting (Llama-2-7B on a GPU) needs "
              "--base-model meta-llama/Llama-2-7b-hf on a CUDA machine.")
    print(f"device: {device}; model: {facts['base_model']} ({precision}); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    if not gpu and os.getloadavg()[0] > os.cpu_count() and threads > 1:
        print("warning: the CPU is busy; threads that wait on each other make every timing slower and noisier. "
              "Try --threads 1.")
    requests = load_requests(config, max(config.users, config.batch_size))
    letter_ids = letter_token_ids(tokenizer)
    warm = requests[0]
    prefixes = (build_prefix_cache(model, tokenizer), build_prefix_cache(model, tokenizer, GENERATION_INSTRUCTION))
    warm_prompt = build_prompt(tokenizer, warm.history_titles, warm.candidate_titles)
    read_next_tokens(model, tokenizer, [warm_prompt], letter_ids, prefix=prefixes[0])
    generate_ranking(model, tokenizer, generation_prompt(tokenizer, warm.history_titles, warm.candidate_titles),
                     max_new_tokens=8, prefix=prefixes[1])

    print(f"title-length sweep on {config.users} test users:", flush=True)
    points = title_sweep(model, tokenizer, requests[: config.users], letter_ids, config, prefixes)
    print_sweep(points)
    headline_texts = [build_prompt(tokenizer, r.history_titles, r.candidate_titles, prompt_config(HEADLINE)).text
                      for r in requests[: config.batch_size]]
    rates = throughput(model, tokenizer, headline_texts, letter_ids, config, prefixes[0])
    print(f"verbalizer throughput at title length {HEADLINE}: "
          + ", ".join(f"{k.replace('_', ' ')}: {v:.2f} requests/s" for k, v in rates.items() if k.startswith("batch")))
    single_ms = 1000 * time_call(lambda: letter_logits(model, tokenizer, headline_texts[:1], letter_ids, prefixes[0]),
                                 model.device, TimingConfig(1, config.repeats)).median_seconds
    floor = time_floor(model, tokenizer, headline_texts[0], single_ms, len(prefixes[0].token_ids))
    print(f"floor: {floor['forward_gflops']} GFLOP for {floor['prompt_tokens']} tokens ({floor['cached_tokens']} of "
          "them cached), each matmul timed at its "
          f"shape ({floor['dtype']}, {floor['threads']} thread(s)): {floor['floor_ms']} ms "
          f"({floor['achieved_gflops_per_second']} GFLOP/s); verbalizer measured {floor['measured_ms']} ms = "
          f"{floor['measured_over_floor']}x the floor")
    steps = []
    if config.speed_steps:
        print("verbalizer speed-ups (cumulative, same prompt):")
        del model  # the ladder starts from the weights as stored, not from a bf16 copy of them
        model, tokenizer = load_ranker(load_config_)
        steps = speed_steps(model, tokenizer, headline_texts, letter_ids, config)

    kind = "cuda" if gpu else "cpu"
    headline = points.get(HEADLINE)
    result = {
        "by_title_len": {k: asdict(p) for k, p in points.items()},
        "throughput": rates,
        "speed_steps": steps,
        "floor": floor,
        "device": device,
        "machine": machine,
        "gpu_available": torch.cuda.is_available(),
        "base_model": facts["base_model"],
        "precision": precision,
        "threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "users": [r.user for r in requests[: config.users]],
        "repeats": {"verbalizer": config.repeats, "generation": config.generation_repeats},
        "goal": {"ratio_at_title_len_20": RATIO_GOALS[kind], "measured": headline.ratio if headline else None,
                 "met": bool(headline and headline.ratio >= RATIO_GOALS[kind])},
        "seconds": round(time.perf_counter() - started, 1),
    }
    figure = plot(points, f"{facts['base_model']}, {precision}, {device}", config.figure)
    print(f"figure: {figure}")
    if config.json:
        write_json(config.json, result)
        print(f"json: {config.json}")
    print(f"done in {result['seconds']:.0f} s")
    return result


def main(argv=None) -> dict:
    """Parse flags into an EfficiencyConfig and `run` it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(parser, EfficiencyConfig, choices={"quantization": ["none", "4bit", "auto"],
                                                           "dtype": ["auto", "float32", "bfloat16"]},
                        helps={"base_model": "hub name or folder (default SmolLM2-135M)",
                               "device": "auto, cpu, cuda, cuda:1, ...",
                               "threads": "CPU threads (0 = torch default)",
                               "checkpoint": "retriever checkpoint for the candidates",
                               "title_lengths": "token limits and/or 'uncut'",
                               "allow_emulated": "also measure bf16 / 4-bit where the hardware only emulates them "
                                                 "(minutes a step)"})
    return run(dataclass_from_args(EfficiencyConfig, parser.parse_args(argv)))


if __name__ == "__main__":
    main()
