"""What serving on ZeroGPU's GPU costs a Recommend, beside serving on the Space's CPU: the real `spaces` package in
its ZeroGPU mode on this CPU (bench/zerogpu), the default model.

`python bench/zerogpu_costs.py --json bench/results/zerogpu_costs.json`

Each placement serves the same test users' histories (none asked before, so no shared result answers): "plain" the app
on a CPU with no `spaces` package at work (a CPU Space; the floor of the other two), "cpu" as the app serves a model
under 1B parameters on ZeroGPU (the server process, no GPU asked for), "gpu" as it serves a bigger one
(every Recommend asks the device API for a GPU and forks a worker that receives the weights, then computes; here on
this CPU). The difference is what a GPU call adds besides the computation: its scheduling, the worker's fork and
start and the weights' transfer, here from memory and disk; on a Space the transfer goes to a real GPU, and a GPU
computes faster, which this cannot show.
"""

from __future__ import annotations

import argparse
import statistics
import time

from app_latency import served_weights
from common import PageSession, machine_summary, serving
from zerogpu import zerogpu_env
from zerogpu.device_api import DeviceApi
from recsys.data.test_users import load_test_users
from recsys.machine import machine_record
from recsys.results import write_json
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

PLACEMENTS = ("cpu", "gpu")  # on ZeroGPU; "plain" is the same app with no `spaces` package at work (a CPU Space)


def recommend_times(url: str, users: list[int]) -> list[float]:
    """Seconds of each Recommend, as a page waits for it, after loading each test user."""
    session = PageSession(url)
    weights = served_weights(session)
    seconds = []
    for user in users:
        session.predict(str(user), api_name="/load_test_user")
        began = time.perf_counter()
        summary = session.predict(*weights, False, False, False, api_name="/recommend")[0]
        seconds.append(time.perf_counter() - began)
        if "verbalizer ranking" not in summary:
            raise RuntimeError(f"Recommend failed for test user {user}: {summary}")
    return seconds


def main(argv=None) -> dict:
    """Start the app once per placement under the harness, time Recommends, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=12, help="test users a placement serves (the first is warm-up)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    machine = machine_record()
    users = load_test_users(DEFAULT_CHECKPOINT).ids()[: args.users + 1]
    result: dict = {}
    for placement in ("plain", *PLACEMENTS):
        flags = ["--precision", "bf16"] + ([] if placement == "plain" else ["--zerogpu", placement])
        with DeviceApi() as api, serving(flags, 300, env=None if placement == "plain" else zerogpu_env(api.url)) as url:
            began = time.perf_counter()
            seconds = recommend_times(url, users)[1:]  # the first pays for first-use costs
            result[placement] = {"p50_s": round(statistics.median(seconds), 3), "max_s": round(max(seconds), 3),
                                 "recommends": len(seconds), "gpu_requests": len(api.durations),
                                 "requested_s": sorted(set(api.durations)),
                                 "wall_s": round(time.perf_counter() - began, 1)}
    added = result["gpu"]["p50_s"] - result["cpu"]["p50_s"]
    result["gpu_call_adds_s"] = round(added, 3)
    print(f"Recommend under the real spaces package on this CPU, default model, {len(users) - 1} test users each")
    print(f"{'placement':<10}{'p50 (s)':>10}{'max (s)':>10}{'GPU requests':>14}   (plain: a CPU Space, no ZeroGPU)")
    for placement in ("plain", *PLACEMENTS):
        row = result[placement]
        print(f"{placement:<10}{row['p50_s']:>10.3f}{row['max_s']:>10.3f}{row['gpu_requests']:>14}")
    print(f"a GPU call adds {added:.2f} s a Recommend here ({result['gpu']['p50_s'] / result['cpu']['p50_s']:.1f}x the "
          f"CPU's whole Recommend), besides its quota\n{machine_summary(machine)}")
    write_json(args.json, result, machine)
    return result


if __name__ == "__main__":
    main()
