"""The app on a ZeroGPU Space, under the real `spaces` package (bench/zerogpu: its ZeroGPU mode on this CPU,
a loopback device API, the GPU worker computing on the CPU).

Two apps are started as a Space starts them (`python app.py`, the committed checkpoints, the default base model):
one as it is, whose 135M model serves on the Space's CPU and asks for no GPU, and one told to serve on the GPU
(`--zerogpu gpu`, as a big model would), whose every model event forks a GPU worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.common import free_port
from recsys.demo.gpu import RECOMMEND_S, race_seconds
from recsys.ranker.base_model import converted_dir
from bench.zerogpu import zerogpu_env
from bench.zerogpu.device_api import DeviceApi

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240

pytest.importorskip("spaces", reason="the ZeroGPU package: pip install -r requirements-test.txt")
if not (converted_dir() / "model.safetensors").is_file():
    pytest.skip("default base model not prepared (python -m recsys.ranker.base_model --prepare)",
                allow_module_level=True)


@contextmanager
def served_app(api: DeviceApi, tmp: Path, *flags: str) -> Iterator:
    """`python app.py *flags` on a free port as on a ZeroGPU Space; yields a gradio_client Client of it (and the
    lines it printed, as a list that grows)."""
    from gradio_client import Client

    env = {**os.environ, **zerogpu_env(api.url), "GRADIO_TEMP_DIR": str(tmp),
           "ZEROGPU_OFFLOAD_DIR": str(tmp / "offload"), "PYTHONUNBUFFERED": "1"}
    port = free_port()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--precision", "bf16", *flags],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # its GPU workers in its group, stopped with it
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any("Running on local URL" in line for line in lines):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the app did not start under ZeroGPU:\n" + "".join(lines[-30:]))
            time.sleep(0.2)
        yield Client(f"http://127.0.0.1:{port}/", verbose=False), lines
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """Stop the app and the GPU workers it forked (a worker outlives its app otherwise)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def device_api() -> Iterator[DeviceApi]:
    with DeviceApi() as api:
        yield api


@pytest.fixture(scope="module")
def cpu_app(device_api, tmp_path_factory):
    with served_app(device_api, tmp_path_factory.mktemp("cpu")) as (client, _):
        yield client


@pytest.fixture(scope="module")
def gpu_app(device_api, tmp_path_factory):
    with served_app(device_api, tmp_path_factory.mktemp("gpu"), "--zerogpu", "gpu") as (client, lines):
        yield client, lines


@contextmanager
def requests(api: DeviceApi) -> Iterator[list[int]]:
    """The durations of the GPU requests made inside the block."""
    before = len(api.durations)
    asked: list[int] = []
    yield asked
    asked.extend(api.durations[before:])


def ranked_titles(client) -> list[str]:
    """Load the first preset in a fresh session, Recommend; the 20 titles in their final order."""
    client.reset_session()
    client.predict("Sci-fi fan", api_name="/load_preset")
    summary, _, results, *_ = client.predict(api_name="/recommend")
    assert "verbalizer ranking" in summary, summary
    return [row[results["headers"].index("Title")] for row in results["data"]]


def test_the_default_model_serves_on_the_spaces_cpu_and_asks_for_no_gpu(cpu_app, device_api):
    with requests(device_api) as asked:
        titles = ranked_titles(cpu_app)
        race = cpu_app.submit(api_name="/race")
        while len(race.outputs()) < 2 and not race.done():  # generating: a GPU would have been asked for by now
            time.sleep(0.1)
        race.cancel()
    assert len(titles) == 20 and asked == []


def test_a_recommend_in_a_gpu_worker_ranks_as_the_cpu_app(cpu_app, gpu_app, device_api):
    client, _ = gpu_app
    with requests(device_api) as asked:
        in_worker = ranked_titles(client)
    assert asked == [RECOMMEND_S]
    assert in_worker == ranked_titles(cpu_app)


def test_a_race_streams_from_the_worker_and_a_cancelled_one_frees_it(gpu_app, device_api):
    client, _ = gpu_app
    client.reset_session()
    client.predict("Sci-fi fan", api_name="/load_preset")
    with requests(device_api) as asked:
        job = client.submit(api_name="/race")
        updates = 0
        while updates < 3 and not job.done():  # the generated text arrives in pieces, each an update
            updates = len(job.outputs())
            time.sleep(0.1)
        job.cancel()
    assert updates >= 3, "the race did not stream"
    assert len(asked) == 1 and asked[0] <= race_seconds(10_000) and asked[0] > RECOMMEND_S
    assert ranked_titles(client)  # the worker is free again: the next event runs


@pytest.mark.parametrize("refusal, sentence", [
    ("quota", r"The GPU was not granted for this request \(.*quota.*\)\. Nothing else is affected: try again later"),
    ("illegal-duration", r"more GPU time at once than ZeroGPU allows here"),
])
def test_a_refused_request_reads_as_the_apps_own_sentence(gpu_app, device_api, refusal, sentence):
    client, lines = gpu_app
    client.reset_session()
    client.predict("Sci-fi fan", api_name="/load_preset")
    device_api.refuse = refusal
    try:
        summary, _, results, *_ = client.predict(api_name="/recommend")
        race_summary = client.predict(api_name="/race")[7]
    finally:
        device_api.refuse = None
    assert re.search(sentence, summary) and results["data"] == []
    assert "The GPU was not granted" in race_summary
    assert ranked_titles(client)  # granted again: the app keeps working


def test_a_history_that_cannot_be_used_asks_for_no_gpu(gpu_app, device_api):
    client, _ = gpu_app
    client.reset_session()
    with requests(device_api) as asked:
        summary, _, results, *_ = client.predict(api_name="/recommend")
    assert "history is empty" in summary.lower() and results["data"] == [] and asked == []


def test_the_start_up_reads_the_adapter_on_the_cpu(gpu_app):
    _, lines = gpu_app
    text = "".join(lines)
    assert "ZeroGPU tensors packing" in text  # the weights went to "cuda" at start-up, as on a Space
    assert "Cannot start the demo" not in text and "pin_memory" not in text


WORKER_FAILS = """
import spaces
from recsys.demo.gpu import gpu_event

def rank(history):
    if not history:
        raise ValueError("the candidates ran out")
    return "ranked"

event = gpu_event(rank, spaces, 5, lambda sentence: "answered: " + sentence)
print(event(["a film"]))
print(event([]))
"""


def test_a_failure_inside_the_worker_is_shown_as_what_it_was(device_api, tmp_path):
    """The package sends any exception but a `gr.Error` back as "ZeroGPU worker error" and its class name only; the
    event's answer names the kind and the message instead, and does not call it a refusal."""
    env = {**os.environ, **zerogpu_env(device_api.url), "ZEROGPU_OFFLOAD_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", WORKER_FAILS], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    # the package prints debugging lines of its own to stdout
    lines = [line for line in done.stdout.splitlines() if line == "ranked" or line.startswith("answered: ")]
    assert done.returncode == 0, done.stderr[-2000:]
    assert lines[0] == "ranked"
    assert lines[1].startswith("answered: The request failed on the GPU (ValueError: the candidates ran out)")
    assert "not granted" not in lines[1] and "withdrawn" not in lines[1]
