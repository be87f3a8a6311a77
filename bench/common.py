"""Helpers shared by the bench scripts (and by the tests that serve the app): a free port, the served ranker with its
machine record, a page-like client session (`PageSession`), `python app.py` served for a bench (`serving`), the
order-invariance agreement and the one-line machine summary.

Bench scripts run as `python bench/x.py`, so bench/ is on their path: `from common import ...`. The tests import
`bench.common` from the repository root. Heavy imports stay inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import signal
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
    """One browser tab's session with the app over Gradio's HTTP API, asking as the page asks.

    Every call carries the tab's session hash, so the session's state (its history) carries over from call to call
    as in a page. An event the app serves outside its queue (`queue=False`: history edits, search, sliders) is one
    POST to `/gradio_api/run/<api_name>`, as the page sends it; a queued one (Recommend, a race) joins the queue
    through `/gradio_api/call/<api_name>` (Gradio's "Querying Gradio Apps with Curl" routes) and its answer is read
    off its server-sent-event stream the moment it arrives, as the page's EventSource reads it. Differences from a
    page: a queued call opens a stream of its own where a page keeps one open, a streamed event's updates carry
    every output in full where a page gets diffs, and the follow-up events a page chains after some clicks
    (`.then`) are not sent. Output files are not fetched (a page fetches the results' CSV only when it is clicked).

    gradio_client is not used for timing: its reader hands each message over through a queue polled every 50 ms
    (`gradio_client.utils.stream_sse_v1plus`), which adds 0-50 ms to every call that no browser waits. One call at a
    time per session (a page's clicks on one tab do not overlap either): the stream carries the session's messages.
    """

    def __init__(self, url: str, timeout_s: float = 600.0):
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=f"{self.url}/gradio_api", timeout=timeout_s)
        self.session_hash = uuid.uuid4().hex
        self._config: dict | None = None

    @property
    def config(self) -> dict:
        """The app's config (components, dependencies and their properties), as the page reads it on load."""
        if self._config is None:
            self._config = self._checked(self.http.get(f"{self.url}/config"), "/config").json()
        return self._config

    def predict(self, *data, api_name: str) -> list:
        """The final outputs of one call of the endpoint `api_name` ("/add") with `data` (its inputs, the session's
        states left out), in the endpoint's output order with None for each state. RuntimeError if the app refuses
        the call or answers with an error."""
        dependency = self._dependency(api_name)
        if dependency.get("queue") is False:
            skipped = {c["id"] for c in self.config["components"] if c.get("skip_api")}
            wanted = [i for i in dependency["inputs"] if i not in skipped]
            if len(data) != len(wanted):
                raise TypeError(f"{api_name} takes {len(wanted)} inputs besides the session's states, got {len(data)}")
            given = iter(data)
            inputs = [None if i in skipped else next(given) for i in dependency["inputs"]]
            response = self.http.post(f"/run/{api_name.lstrip('/')}", json={
                "data": inputs, "session_hash": self.session_hash, "simple_format": True})
            return self._checked(response, api_name).json()["data"]
        *_, final = self.updates(*data, api_name=api_name)  # `updates` raises rather than end without outputs
        return final

    def updates(self, *data, api_name: str) -> Iterator[list]:
        """Call the queued endpoint `api_name` with `data` and yield its outputs at each update (as `predict`): every
        step of a generator, then the final outputs. RuntimeError if the app refuses the call (e.g. its queue is
        full), answers with an error, or the stream ends without a result."""
        name = api_name.lstrip("/")
        joined = self._checked(self.http.post(f"/call/{name}", json={"data": list(data),
                                                                     "session_hash": self.session_hash}), api_name)
        event = None
        with self.http.stream("GET", f"/call/{name}/{joined.json()['event_id']}") as response:
            if response.is_error:
                raise RuntimeError(f"{api_name}: HTTP {response.status_code} on its result stream")
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

    def _dependency(self, api_name: str) -> dict:
        """The app config's event named `api_name`; KeyError if it has none."""
        name = api_name.lstrip("/")
        for dependency in self.config["dependencies"]:
            if dependency.get("api_name") == name:
                return dependency
        raise KeyError(f"the app has no endpoint {api_name}")

    @staticmethod
    def _checked(response, what: str):
        """`response`, or RuntimeError naming `what` and the app's answer when it is an HTTP error."""
        if response.is_error:
            raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
        return response


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
def serving(app_args: list[str], start_timeout_s: float, ready: str | None = None,
            env: dict[str, str] | None = None, started: dict | None = None) -> Iterator[str]:
    """`python app.py` on a free loopback port with `app_args`, offline, with `env` added to its environment; yields
    its URL once it answers (and, with `ready`, once its log holds that text: e.g. `app.PRESETS_READY`), stops it
    after. `started`, when given, receives the app's "pid" and its "files" folder (its temporary files: Gradio's and
    the offered downloads). SystemExit with the end of the app's log when it does not start in `start_timeout_s`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    files = tempfile.TemporaryDirectory(prefix="llamarec-bench-")  # the app's log and Gradio's files, removed after
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": files.name, "TMPDIR": files.name,
           "ZEROGPU_OFFLOAD_DIR": str(Path(files.name) / "offload"), **(env or {})}
    log = open(Path(files.name) / "app.log", "w+")  # closed with the directory, below
    # a session of its own: the processes it forks (ZeroGPU's workers) are stopped with it
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *app_args], cwd=REPO_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if started is not None:
        started.update(pid=process.pid, files=Path(files.name))
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
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
        files.cleanup()
