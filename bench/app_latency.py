"""App latency: cold start of `python app.py` to serving, and click-to-result of Recommend over gradio_client.

`python bench/app_latency.py --json bench/results/app_latency.json`

Cold start is the wall time from spawning `python app.py` (default models and checkpoints) until its
page answers: imports, model loading and the pipeline's warm-up pass included. Each Recommend request
first loads a history (a preset or a real test user, not timed), then times the /recommend call as a
client sees it (queue, retrieval, verbalizer, serialisation); the server's own retrieval and verbalizer
times are read from the result summary. Every response carries the teaching panels (LLM beside the
retriever chart, what the verbalizer reads); `compare_base_p50_ms` times the same clicks with "compare
with the base model" ticked (one more forward pass). Extra app.py flags follow `--`, e.g. `-- --threads 1`.
Goals on 2 idle CPU cores (warm model cache): cold start < 10 s, Recommend p50 < 500 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from recsys.results import write_json  # noqa: E402
GOALS = {"cold_start_s": 10.0, "p50_ms": 500.0}
STAGE_TIMES = re.compile(r"\*\*(?:retrieval|verbalizer ranking)\*\* ([\d,.]+) ms", re.I)  # from the summary
PRESETS = ["Sci-fi fan", "Animation & family", "Crime classics", "Romantic comedies", "Horror night", "World cinema"]


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Poll `url` until it answers 200; raise if the app exits or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {process.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"app.py did not serve {url} within {timeout_s:.0f} s")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure(requests: int, app_args: list[str], start_timeout_s: float) -> dict:
    """Start the app, time the cold start and `requests` Recommend clicks; returns the result dict."""
    from gradio_client import Client

    load_at_start = round(os.getloadavg()[0], 2)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": tempfile.mkdtemp()}
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *app_args], cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_until_serving(url, process, start_timeout_s)
        except (RuntimeError, TimeoutError) as error:
            log.seek(0)
            raise SystemExit(f"{error}\n--- app log ---\n{log.read()[-3000:]}") from error
        cold_start_s = time.perf_counter() - start
        client = Client(url, verbose=False)
        users = [value for _, value in _user_choices(client)]
        latencies, stages, compared = [], [], []
        share = _default_share(client)
        for index in range(requests):
            if index % 2 == 0 or not users:
                client.predict(PRESETS[(index // 2) % len(PRESETS)], api_name="/load_preset")
            else:
                client.predict(users[(index * 37) % len(users)], api_name="/load_test_user")
            began = time.perf_counter()
            summary, table, *_ = client.predict(share, False, api_name="/recommend")
            latencies.append((time.perf_counter() - began) * 1000)
            if len(table["data"]) == 0:
                raise SystemExit(f"Recommend returned no results: {summary}")
            stages.append([float(v.replace(",", "")) for v in STAGE_TIMES.findall(summary)])
            began = time.perf_counter()
            client.predict(share, True, api_name="/recommend")
            compared.append((time.perf_counter() - began) * 1000)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"cold_start_s": round(cold_start_s, 2), "p50_ms": round(percentile(latencies, 50), 1),
            "p95_ms": round(percentile(latencies, 95), 1), "mean_ms": round(statistics.mean(latencies), 1),
            "server_retrieval_p50_ms": round(statistics.median(s[0] for s in stages), 1),
            "server_verbalizer_p50_ms": round(statistics.median(s[1] for s in stages), 1),
            "compare_base_p50_ms": round(percentile(compared, 50), 1),
            "requests": requests, "latencies_ms": [round(v, 1) for v in latencies],
            "cpu_cores": os.cpu_count(), "load_average_1min_at_start": load_at_start,
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            "platform": platform.platform(), "app_args": app_args, "goals": GOALS}


def _user_choices(client) -> list[tuple[str, int]]:
    """The test-user dropdown's (label, user id) choices, read from the app's config."""
    for component in client.config["components"]:
        props = component.get("props", {})
        if props.get("label") == "Test user (ml-latest-small)":
            return [tuple(choice) for choice in props.get("choices", [])]
    return []


def _default_share(client) -> float:
    """The fusion slider's initial value (the validation-chosen LLM share), read from the app's config."""
    for component in client.config["components"]:
        props = component.get("props", {})
        if str(props.get("label", "")).startswith("Fusion:"):
            return float(props["value"])
    raise SystemExit("the app has no fusion slider")


def main(argv=None) -> dict:
    """Run the measurement, print it beside the goals and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20, help="Recommend clicks to time")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the app to serve")
    parser.add_argument("--json", default=None, help="write the result here")
    parser.add_argument("app_args", nargs="*", help="extra flags for app.py (after --), e.g. -- --adapter none")
    args = parser.parse_args(argv)
    result = measure(args.requests, args.app_args, args.start_timeout)
    print(f"| metric | measured | goal |\n|---|---|---|\n"
          f"| cold start (s) | {result['cold_start_s']:.1f} | < {GOALS['cold_start_s']:.0f} |\n"
          f"| Recommend p50 (ms) | {result['p50_ms']:,.0f} | < {GOALS['p50_ms']:,.0f} |\n"
          f"| Recommend p95 (ms) | {result['p95_ms']:,.0f} | |\n"
          f"| Recommend + base model, p50 (ms) | {result['compare_base_p50_ms']:,.0f} | |\n"
          f"| of which retrieval / verbalizer, p50 (ms) | {result['server_retrieval_p50_ms']:,.0f} / "
          f"{result['server_verbalizer_p50_ms']:,.0f} | |\n"
          f"({result['requests']} requests, {result['cpu_cores']} CPU cores, "
          f"1-min load average at the start {result['load_average_1min_at_start']}, "
          f"at the end {result['load_average_1min_at_end']})")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
