"""Torch threads for the app, chosen by measurement: Recommend latency and throughput for 1 and 4 users at once.

`python bench/threads.py --json bench/results/threads.json`

For each torch thread count (default: 1 up to the usable cores) and each number of users clicking at once
(default 1 and 4), `bench/app_latency.py`'s measurement starts `python app.py --threads T`, times the
Recommend clicks (each user its own session; the model computes one pass at a time, Recommends waiting together
sharing one padded pass, so with 4 users a click's latency includes its wait for the model) and the matmul floor
at those threads. The table prints p50, p95 and clicks a second side by side; the JSON keeps every run with its
machine record. app.py's default (`app.default_threads`) should be the count that wins here for both loads.
"""

from __future__ import annotations

import argparse
import os

from app_latency import measure

from recsys.machine import describe_machine
from recsys.results import write_json


def main(argv=None) -> dict:
    """Measure every (threads, users) pair, print the table and optionally write JSON."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=list(range(1, cores + 1)),
                        help="torch thread counts to try (default: 1 up to the usable cores)")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4], help="users clicking at once")
    parser.add_argument("--requests", type=int, default=20, help="Recommend clicks per run (shared among the users)")
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args(argv)
    runs = []
    for users in args.users:
        for threads in args.threads:
            print(f"--- {threads} thread(s), {users} user(s) at once", flush=True)
            result = measure(args.requests, ["--threads", str(threads)], 300.0, concurrent=users)
            runs.append({"threads": threads, "users": users, **result})
    print("| users at once | torch threads | Recommend p50 (ms) | p95 (ms) | server verbalizer p50 (ms) | "
          "floor (ms) | clicks a second | load at start |\n|---|---|---|---|---|---|---|---|")
    for run in runs:
        print(f"| {run['users']} | {run['threads']} | {run['p50_ms']:,.0f} | {run['p95_ms']:,.0f} | "
              f"{run['server_verbalizer_p50_ms']:,.0f} | {run['floor']['floor_ms']:,.0f} | {run['clicks_per_s']:.2f} | "
              f"{run['load_average_1min_at_start']} |")
    for users in args.users:
        best = min((run for run in runs if run["users"] == users), key=lambda run: run["p50_ms"])
        print(f"fastest p50 with {users} user(s) at once: {best['threads']} thread(s)")
    print(f"machine: {describe_machine(runs[0]['machine'])}")
    result = {"runs": runs, "cores": cores}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
