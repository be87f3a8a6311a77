"""Helpers shared by the bench scripts (and by the tests that serve the app): a free port, the served ranker with its
machine record, the order-invariance agreement and the one-line machine summary.

Bench scripts run as `python bench/x.py`, so bench/ is on their path: `from common import ...`. The tests import
`bench.common` from the repository root. Heavy imports stay inside the functions that need them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_served_ranker(adapter: str, base_model: str | None, precision: str):
    """(RankerArtefacts, model, tokenizer, machine record) of the ranker folder `adapter` ('none': the base model with
    no adapter) on `base_model` with CPU weights in `precision`, the adapter folded as the app serves it on CPU; the
    machine record names the model's dtype."""
    from recsys.machine import machine_record
    from recsys.ranker.artefacts import RankerArtefacts
    from recsys.ranker.folded import fold_served_adapter
    from recsys.ranker.model import RankerLoadConfig, load_ranker

    ranker = RankerArtefacts.load(None if adapter == "none" else adapter)
    model, tokenizer = load_ranker(RankerLoadConfig(base_model=base_model, adapter=ranker.adapter,
                                                    cpu_precision=precision))
    fold_served_adapter(model)
    return ranker, model, tokenizer, machine_record(next(model.parameters()).dtype)


class PageSession:
    """One browser tab's session with the app over Gradio's HTTP API (the `/gradio_api/call/<api_name>` routes of
    Gradio's "Querying Gradio Apps with Curl" guide).

    Every call carries the tab's session hash, so the session's state (its history) carries over from call to call
    as in a page, and each answer is read off its server-sent-event stream the moment it arrives, as the page's
    EventSource reads it. gradio_client is not used for timing: its reader hands each message over through a queue
    polled every 50 ms (`gradio_client.utils.stream_sse_v1plus`), which adds 0-50 ms to every call that no browser
    waits. Output files are not fetched (a page fetches the results' CSV only when it is clicked).
    """

    def __init__(self, url: str, timeout_s: float = 600.0):
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=f"{self.url}/gradio_api", timeout=timeout_s)
        self.session_hash = uuid.uuid4().hex
        self._config: dict | None = None

    @property
    def config(self) -> dict:
        """The app's config (components and their properties), as the page reads it on load."""
        if self._config is None:
            response = self.http.get(f"{self.url}/config")
            response.raise_for_status()
            self._config = response.json()
        return self._config

    def updates(self, *data, api_name: str) -> Iterator[list]:
        """Call the endpoint `api_name` ("/recommend") with `data` (its inputs, the session's state left out) and yield
        its outputs at each update: every step of a generator, then the final outputs. RuntimeError if the app
        answers with an error or the stream ends without a result."""
        import json

        name = api_name.lstrip("/")
        joined = self.http.post(f"/call/{name}", json={"data": list(data), "session_hash": self.session_hash})
        joined.raise_for_status()
        event = None
        with self.http.stream("GET", f"/call/{name}/{joined.json()['event_id']}") as response:
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line.removeprefix("event:").strip()
                elif line.startswith("data:") and event in ("generating", "complete", "error"):
                    payload = json.loads(line.removeprefix("data:"))
                    if event == "error":
                        raise RuntimeError(f"{api_name} failed: {payload}")
                    yield payload
                    if event == "complete":
                        return
        raise RuntimeError(f"{api_name}: the stream ended without a result")

    def predict(self, *data, api_name: str) -> list:
        """The final outputs of one call (`updates`), a list in the endpoint's output order."""
        *_, final = self.updates(*data, api_name=api_name)  # `updates` raises rather than end without outputs
        return final


def order_agreement(in_order, reversed_order) -> dict[str, float]:
    """Mean film-by-film and letter-by-letter Spearman, and top-film agreement, of (N, K) scores of the candidates
    listed in the retriever's order and listed reversed (both tensors index the films in the retriever's order)."""
    from recsys.metrics import spearman

    film = [spearman(a, b) for a, b in zip(in_order, reversed_order)]
    letter = [spearman(a, b.flip(0)) for a, b in zip(in_order, reversed_order)]  # letter j showed film K-1-j
    top = (in_order.argmax(dim=1) == reversed_order.argmax(dim=1)).float().mean().item()
    return {"film_by_film_spearman": round(sum(film) / len(film), 3),
            "letter_by_letter_spearman": round(sum(letter) / len(letter), 3), "same_top_film": round(top, 3)}


def machine_summary(machine: dict) -> str:
    """The short machine line printed under a quality table: CPU, dtype, torch threads and load at the start."""
    return (f"machine: {machine['cpu_model']}, {machine['dtype']}, {machine['torch_threads']} threads, "
            f"load {machine['load_average_1min_at_start']}")


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


def wait_until_logged(text: str, log: Path, process: subprocess.Popen, timeout_s: float) -> None:
    """Poll the app's `log` until it holds `text`; raise if the app exits or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with code {process.returncode} before logging {text!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the app did not log {text!r} within {timeout_s:.0f} s")
        time.sleep(0.2)


@contextmanager
def serving(app_args: list[str], start_timeout_s: float, ready: str | None = None) -> Iterator[str]:
    """`python app.py` on a free loopback port with `app_args`, offline; yields its URL once it answers (and, with
    `ready`, once its log holds that text: e.g. `app.PRESETS_READY`), stops it after. SystemExit with the end of the
    app's log when it does not start in `start_timeout_s`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": tempfile.mkdtemp()}
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *app_args], cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_until_serving(url, process, start_timeout_s)
            if ready is not None:
                wait_until_logged(ready, Path(log.name), process, start_timeout_s)
        except (RuntimeError, TimeoutError) as error:
            log.seek(0)
            raise SystemExit(f"{error}\n--- app log ---\n{log.read()[-3000:]}") from error
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
