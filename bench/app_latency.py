"""App latency: cold start of `python app.py` to serving, and click-to-result of Recommend as a page sees it.

`python bench/app_latency.py --json bench/results/app_latency.json`

Cold start is the wall time from spawning `python app.py` (default models and checkpoints) until its
page answers: imports, model loading and the pipeline's warm-up pass included. Each Recommend request
first loads a history (a preset or a real test user, not timed), then times the /recommend call as a
page sees it (`common.PageSession`: Gradio's HTTP API, each answer read the moment it arrives; queue, retrieval,
verbalizer, serialisation; a POST and a stream a call, where a page keeps one stream open); the server's own
retrieval, verbalizer and (where the fusion weighs it: Beauty) title-likelihood times are read from the result
summary. Histories are presets and test users in turn; test users alone on a data set without presets (Amazon:
`-- --dataset beauty`). Every response carries the teaching panels (the
opinions chart, what the verbalizer reads); `compare_base_p50_ms` times the same clicks with "compare
with the base model" ticked (one more forward pass). Extra app.py flags follow `--`, e.g. `-- --threads 1`;
the app runs with `--shared-results 0` (unless given), so that every click is computed, none answered from an
earlier one.
Goals on 2 idle CPU cores (warm model cache): cold start < 10 s, Recommend p50 < 500 ms and at most 2x the floor.

The floor: once the app has stopped, a plain matmul is timed at each of the served prompt's shapes (the
median prompt of the clicks, tokenized as the app does, less the cached instruction prefix the app does
not run again), in the app's dtype with the app's torch threads (`recsys.floor`). Recommend p50 / floor
and the server's verbalizer p50 / floor say how far the serving path is from what this machine's matmuls
allow. The JSON names the machine (CPU model, flags, the app's dtype and threads, load average at the
start).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass

import torch

from common import PageSession, serving

from floor import against_floor, prompt_floor
from recsys.machine import describe_machine, machine_record
from recsys.results import write_json


GOALS = {"cold_start_s": 10.0, "p50_ms": 500.0, "p50_over_floor": 2.0}
STAGE_TIMES = re.compile(r"\*\*(retrieval|verbalizer ranking|title likelihood)\*\* ([\d,.]+) ms", re.I)  # summary


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class ServedSetting:
    """What app.py runs with for the given flags: base model, device, dtype and torch threads."""

    base_model: str | None
    device: torch.device
    dtype: torch.dtype
    precision: str  # as the JSON records it: the dtype, or "4-bit NF4" on CUDA
    threads: int


def served_setting(app_args: list[str]) -> ServedSetting:
    """Read app.py's own flag parsing and defaults for `app_args` (the same rules the app applies)."""
    import app
    from recsys.ranker.model import RankerLoadConfig, cpu_dtype, pick_device, use_4bit

    args = app.parse_args(app_args)
    device = pick_device("auto")
    quantized = use_4bit(RankerLoadConfig(base_model=args.base_model), device)
    dtype = torch.bfloat16 if device.type == "cuda" else cpu_dtype(args.precision)
    precision = "4-bit NF4" if quantized else str(dtype).replace("torch.", "")
    return ServedSetting(args.base_model, device, dtype, precision, args.threads or app.default_threads())


def prompt_tokens(base_model: str | None, prompt_texts: list[str]) -> tuple[int, int]:
    """(median token count of the prompts the app showed, tokens of the cached instruction prefix), with the base
    model's tokenizer."""
    from recsys.ranker.model import load_tokenizer
    from recsys.ranker.verbalizer import shared_prefix_ids

    tokenizer = load_tokenizer(base_model)
    return (int(statistics.median(len(tokenizer(text).input_ids) for text in prompt_texts)),
            len(shared_prefix_ids(tokenizer)))


def served_floor(setting: ServedSetting, tokens: tuple[int, int]) -> dict:
    """`recsys.floor.prompt_floor` of a prompt of `tokens` = (all, cached prefix) for the served model, with the app's
    dtype and threads."""
    from transformers import AutoConfig

    from recsys.ranker.base_model import resolve_base_model

    config = AutoConfig.from_pretrained(resolve_base_model(setting.base_model))
    torch.set_num_threads(setting.threads)
    return prompt_floor(config, tokens[0], setting.dtype, setting.device, cached_tokens=tokens[1])


def _clicks(client, users: list, presets: list[str], weights: tuple[float, float], indices: range,
            compare: bool) -> dict:
    """One user's Recommend clicks: for each index load a history (not timed; presets and test users in turn, test
    users only where the data set has no presets), then time /recommend as the client sees it, and (with `compare`)
    the same click with the base-model comparison ticked.

    Returns {"latencies", "stages" (server ms by stage: retrieval, verbalizer ranking and, where computed, title
    likelihood), "compared", "prompts"}.
    """
    latencies, stages, compared, prompts = [], [], [], []
    for index in indices:
        if (index % 2 == 0 and presets) or not users:
            client.predict(presets[(index // 2) % len(presets)], api_name="/load_preset")
        else:
            client.predict(users[(index * 37) % len(users)], api_name="/load_test_user")
        began = time.perf_counter()
        summary, _, table, _, prompt, *_ = client.predict(*weights, False, False, False, api_name="/recommend")
        latencies.append((time.perf_counter() - began) * 1000)
        if prompt:  # empty when the ranker failed (the summary says why)
            prompts.append(prompt)
        if len(table["data"]) == 0:
            raise SystemExit(f"Recommend returned no results: {summary}")
        stages.append({stage.lower(): float(v.replace(",", "")) for stage, v in STAGE_TIMES.findall(summary)})
        if compare:
            began = time.perf_counter()
            client.predict(*weights, True, False, False, api_name="/recommend")
            compared.append((time.perf_counter() - began) * 1000)
    return {"latencies": latencies, "stages": stages, "compared": compared, "prompts": prompts}


def measure(requests: int, app_args: list[str], start_timeout_s: float, concurrent: int = 1) -> dict:
    """Start the app, time the cold start and `requests` Recommend clicks, then the floor; returns the result dict.

    With `concurrent` > 1, that many users (one `PageSession` each) click at once, `requests` clicks in
    all; a click's latency then includes its wait in the app's model queue, and `clicks_per_s` is the throughput.
    The base-model comparison is timed only for one user.
    """
    from concurrent.futures import ThreadPoolExecutor

    setting = served_setting(app_args)
    machine = machine_record(setting.precision, setting.device, setting.threads)
    print(f"machine: {describe_machine(machine)}", flush=True)
    load_at_start = machine["load_average_1min_at_start"]
    start = time.perf_counter()
    with serving(app_args, start_timeout_s) as url:
        cold_start_s = time.perf_counter() - start
        clients = [PageSession(url) for _ in range(concurrent)]
        users = [value for _, value in _dropdown_choices(clients[0], "Test user (")]
        presets = [value for value, _ in _dropdown_choices(clients[0], "Preset history")]
        if not users and not presets:
            raise SystemExit("the app offers no preset and no test user to load")
        weights = served_weights(clients[0])
        began = time.perf_counter()
        with ThreadPoolExecutor(concurrent) as pool:
            parts = list(pool.map(lambda n: _clicks(clients[n], users, presets, weights, range(n, requests, concurrent),
                                                    compare=concurrent == 1), range(concurrent)))
        wall_s = time.perf_counter() - began
    latencies = [v for part in parts for v in part["latencies"]]
    stages = [v for part in parts for v in part["stages"]]
    compared = [v for part in parts for v in part["compared"]]
    prompts = [v for part in parts for v in part["prompts"]]
    if not prompts:
        raise SystemExit("no Recommend click returned a prompt: the ranker failed on every request (see the summaries)")
    floor = served_floor(setting, prompt_tokens(setting.base_model, prompts))  # with the app stopped: no contention
    # a click whose ranker failed has no verbalizer time (its summary says why)
    p50_ms = percentile(latencies, 50)
    verbalizer_ms = statistics.median(s["verbalizer ranking"] for s in stages if "verbalizer ranking" in s)
    titles_ms = [s["title likelihood"] for s in stages if "title likelihood" in s]
    floor.update(against_floor(floor, recommend_p50=p50_ms, server_verbalizer_p50=verbalizer_ms))
    return {"cold_start_s": round(cold_start_s, 2), "p50_ms": round(p50_ms, 1),
            "p95_ms": round(percentile(latencies, 95), 1), "mean_ms": round(statistics.mean(latencies), 1),
            "server_retrieval_p50_ms": round(statistics.median(s["retrieval"] for s in stages), 1),
            "server_verbalizer_p50_ms": round(verbalizer_ms, 1),
            "server_title_likelihood_p50_ms": round(statistics.median(titles_ms), 1) if titles_ms else None,
            "floor": floor,
            "compare_base_p50_ms": round(percentile(compared, 50), 1) if compared else None,
            "concurrent_users": concurrent, "clicks_per_s": round(requests / wall_s, 3),
            "requests": requests, "latencies_ms": [round(v, 1) for v in latencies],
            "cpu_cores": os.cpu_count(), "load_average_1min_at_start": load_at_start,
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "platform": platform.platform(), "app_args": app_args, "goals": GOALS, "machine": machine}


def _dropdown_choices(client, label: str) -> list[tuple]:
    """The (label, value) choices of the dropdown whose label starts with `label`, read from the app's config."""
    for component in client.config["components"]:
        props = component.get("props", {})
        if str(props.get("label", "")).startswith(label):
            return [tuple(choice) for choice in props.get("choices", [])]
    return []


def served_weights(client) -> tuple[float, float]:
    """The fusion sliders' initial values (the served LLM and co-watch weights), read from the app's config."""
    values = {}
    for component in client.config["components"]:
        props = component.get("props", {})
        if props.get("label") in ("LLM weight", "Co-watch weight"):
            values[props["label"]] = float(props["value"])
    if len(values) != 2:
        raise SystemExit("the app has no LLM and co-watch weight sliders")
    return values["LLM weight"], values["Co-watch weight"]


def main(argv=None) -> dict:
    """Run the measurement, print it beside the goals and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20, help="Recommend clicks to time")
    parser.add_argument("--concurrent", type=int, default=1,
                        help="users clicking at once (each its own session); the clicks are shared among them")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the app to serve")
    parser.add_argument("--json", default=None, help="write the result here")
    parser.add_argument("app_args", nargs="*", help="extra flags for app.py (after --), e.g. -- --adapter none")
    args = parser.parse_args(argv)
    # every click computed: a history asked before would otherwise come back shared, with no model call to time
    app_args = args.app_args if "--shared-results" in args.app_args else ["--shared-results", "0", *args.app_args]
    result = measure(args.requests, app_args, args.start_timeout, args.concurrent)
    floor, titles = result["floor"], result["server_title_likelihood_p50_ms"] is not None
    print(f"| metric | measured | goal |\n|---|---|---|\n"
          f"| cold start (s) | {result['cold_start_s']:.1f} | < {GOALS['cold_start_s']:.0f} |\n"
          f"| Recommend p50 (ms) | {result['p50_ms']:,.0f} | < {GOALS['p50_ms']:,.0f} |\n"
          f"| Recommend p95 (ms) | {result['p95_ms']:,.0f} | |\n"
          + (f"| Recommend + base model, p50 (ms) | {result['compare_base_p50_ms']:,.0f} | |\n"
             if result["compare_base_p50_ms"] is not None else "")
          + f"| Recommend clicks a second ({result['concurrent_users']} user(s) at once; the untimed history loads and "
            f"base-model clicks in between count in the wall time) | "
            f"{result['clicks_per_s']:.2f} | |\n"
          f"| of which retrieval / verbalizer, p50 (ms) | {result['server_retrieval_p50_ms']:,.0f} / "
          f"{result['server_verbalizer_p50_ms']:,.0f} | |\n"
          + (f"| title likelihood, p50 (ms; the fusion weighs it, so every Recommend computes it) | "
             f"{result['server_title_likelihood_p50_ms']:,.0f} | |\n"
             if result["server_title_likelihood_p50_ms"] is not None else "")
          + f"| floor: the prompt's matmuls alone (ms; {floor['prompt_tokens']} tokens, {floor['cached_tokens']} of "
          f"them cached, {floor['forward_gflops']} "
          f"GFLOP, {floor['dtype']}, {floor['threads']} thread(s)) | {floor['floor_ms']:,.0f} | |\n"
          f"| Recommend p50 / floor{' (title likelihood included, not in the floor)' if titles else ''} | "
          f"{floor['recommend_p50_over_floor']:.2f}x | <= {GOALS['p50_over_floor']:.0f}x |\n"
          f"| server verbalizer p50 / floor | {floor['server_verbalizer_p50_over_floor']:.2f}x | |\n"
          f"({result['requests']} requests, {result['cpu_cores']} CPU cores, "
          f"1-min load average at the start {result['load_average_1min_at_start']}, "
          f"at the end {result['load_average_1min_at_end']})")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
