"""Race streaming: does showing the generated text token by token slow the generation it times?

`python bench/race_streaming.py --runs 3 --json bench/results/race_streaming.json` (app.py flags after `--`,
e.g. `-- --threads 1`)

The same preset history is raced `--runs` times each way, alternating so that drift in the machine's load
falls on both: *plain* calls `Pipeline.race` directly, with no one watching; *streamed* clicks Race in the
served app through gradio_client and reads every update as a browser does (generation on its own thread,
the text decoded and sent every `STREAM_INTERVAL_S`). Both report the generation time the app measures
inside its decoding loop, and greedy decoding writes the same tokens both ways, so the times compare like
for like. The client runs in the server's process, so its own work competes for the same cores: an upper
bound on what a browser elsewhere costs. Run it on an idle machine; the JSON records the load average at the
start and the end.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile

import torch
from gradio_client import Client

import app
from common import free_port
from recsys.demo.handlers import DemoHandlers
from recsys.demo.race import STREAM_INTERVAL_S, RaceView
from recsys.machine import describe_machine, machine_record
from recsys.results import write_json


GENERATION = re.compile(r"\*\*Generation\*\* ([\d,]+) ms for (\d+) tokens")  # from the race summary
# position of the race summary among /race's outputs as gradio_client returns them (the session states left out)
RACE_SUMMARY = [f for f in RaceView._fields if f not in ("last", "race_streaming")].index("race_summary")


def streamed_race(client) -> dict:
    """Click Race over `client` and read every update: {"generation_ms", "tokens", "updates"}."""
    job = client.submit(api_name="/race")
    updates = sum(1 for _ in job)
    summary = job.result()[RACE_SUMMARY]
    match = GENERATION.search(summary)
    if match is None:
        raise RuntimeError(f"the race did not finish: {summary}")
    return {"generation_ms": float(match[1].replace(",", "")), "tokens": int(match[2]), "updates": updates}


def summarize(runs: list[dict]) -> dict:
    """Median generation time, time per token and tokens of a list of runs."""
    ms = statistics.median(r["generation_ms"] for r in runs)
    tokens = statistics.median(r["tokens"] for r in runs)
    return {"generation_ms_median": ms, "ms_per_token": ms / tokens if tokens else None, "tokens": tokens,
            "runs": runs}


def main(argv=None) -> None:
    """Race plain and streamed, alternating; print a table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="races each way (default 3)")
    parser.add_argument("--preset", default="Sci-fi fan", help="the preset history to race on")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("app_args", nargs="*", help="app.py flags, after --")
    args = parser.parse_args(argv)
    app_args = app.parse_args(args.app_args)
    torch.set_num_threads(app_args.threads or app.default_threads())
    pipeline = app.load_pipeline(app_args)
    history = DemoHandlers.of(pipeline).history.presets[args.preset]
    machine = machine_record(next(pipeline.llm.model.parameters()).dtype)
    print(f"machine: {describe_machine(machine)}", flush=True)

    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp()
    demo = app.build_demo(pipeline)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    plain, streamed = [], []
    try:
        # gradio_client, not `common.PageSession`: it receives a streamed event's updates as diffs, as a page does
        # (Gradio's HTTP API sends every output in full at each update: more work for the server than a page makes)
        client = Client(url, verbose=False, download_files=False)
        client.predict(args.preset, api_name="/load_preset")
        for run in range(1, args.runs + 1):
            race = pipeline.race(pipeline.recommend(history))
            if race.error:
                raise RuntimeError(f"the generation baseline failed: {race.error}")
            plain.append({"generation_ms": race.generation_ms, "tokens": race.num_generated_tokens})
            streamed.append(streamed_race(client))
            print(f"run {run}: plain {plain[-1]['generation_ms']:,.0f} ms, streamed "
                  f"{streamed[-1]['generation_ms']:,.0f} ms ({streamed[-1]['updates']} updates)", flush=True)
    finally:
        demo.close()

    result = {"preset": args.preset, "stream_interval_s": STREAM_INTERVAL_S, "plain": summarize(plain),
              "streamed": summarize(streamed), "load_average_1min_at_end": round(os.getloadavg()[0], 2)}
    result["streamed_over_plain"] = (result["streamed"]["generation_ms_median"]
                                     / result["plain"]["generation_ms_median"])
    print("\n| | generation (median) | per token | tokens |\n|---|---|---|---|")
    for mode in ("plain", "streamed"):
        row = result[mode]
        print(f"| {mode} | {row['generation_ms_median']:,.0f} ms | {row['ms_per_token']:.1f} ms | {row['tokens']:g} |")
    print(f"\nstreamed / plain = {result['streamed_over_plain']:.3f} over {args.runs} runs each "
          f"(load average at the end {result['load_average_1min_at_end']})")
    write_json(args.json, result, machine)


if __name__ == "__main__":
    main()
