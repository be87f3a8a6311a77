"""Which thread runs the model: the served verbalizer pass on the thread that loaded the model, on another thread,
and through the app's `ModelRunner` serving on the loading thread while another thread asks.

`python bench/model_thread.py --json bench/results/model_thread.json`

Each way runs in a fresh process (the default pipeline, `--shared-results 0` semantics: every Recommend computed)
over the same test users; the figure is the median of the Recommends' `ranking_ms` (prompt + verbalizer pass). Every
thread that computes gets an OpenMP team of its own, and with more OpenMP threads than cores libgomp shortens their
spinning between parallel regions (`recsys.model_runner`). The ways alternate for `--rounds` rounds, so that a
drift of the machine shows as a spread, not as a difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from recsys.machine import describe_machine, machine_record
from recsys.results import write_json

WAYS = ("loading thread", "another thread", "runner on the loading thread")


def measure(way: str, users: int) -> float:
    """Median `ranking_ms` of `users` test users' Recommends computed `way` (in this process)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from recsys.machine import usable_cores
    from recsys.pipeline import Pipeline, PipelineConfig, ServingConfig

    torch.set_num_threads(usable_cores()[0])
    pipeline = Pipeline.load(PipelineConfig(serving=ServingConfig(shared_results=0)))
    test_users = pipeline.test_users
    assert test_users is not None
    histories = [list(test_users[u].history) for u in test_users.ids()[:users]]

    def timed() -> float:
        return statistics.median(pipeline.recommend(h).ranking_ms or 0.0 for h in histories)

    if way == "loading thread":
        return timed()
    if way == "another thread":
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(timed).result()
    result: list[float] = []

    def ask() -> None:
        pipeline.runner.started.wait()
        result.append(timed())
        pipeline.runner.stop()

    asker = threading.Thread(target=ask)
    asker.start()
    pipeline.runner.serve()
    asker.join()
    return result[0]


def main(argv=None) -> dict:
    """Every way, `--rounds` times, each in its own process; prints the table and optionally writes JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10, help="test users a measurement recommends for")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--way", choices=WAYS, default=None, help=argparse.SUPPRESS)  # one measurement, in-process
    args = parser.parse_args(argv)
    if args.way:
        print(json.dumps({"ms": measure(args.way, args.users)}))
        return {}
    machine = machine_record()
    print(f"machine: {describe_machine(machine)}", flush=True)
    figures: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--way", way, "--users",
                                  str(args.users)], capture_output=True, text=True, check=True)
            figures[way].append(round(json.loads(out.stdout.strip().splitlines()[-1])["ms"], 1))
    print("| the verbalizer pass runs on | median ranking_ms, each round |\n|---|---|")
    for way, values in figures.items():
        print(f"| {way} | {' / '.join(f'{v:,.0f}' for v in values)} ms |")
    result = {"users": args.users, "rounds": args.rounds, "ranking_ms": figures, "machine": machine}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
