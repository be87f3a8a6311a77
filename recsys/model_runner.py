"""Where the model's work runs: one piece at a time, and on CPU on one thread.

Every computation on the shared model (a verbalizer pass, a race's token, a retrieval) goes through a `ModelRunner`.
By default it runs on the caller's thread under a lock, so overlapping users never touch the model, its adapter
switches or the tokenizer's settings at once. Once `serve` runs on a thread (the app's main thread on CPU), every
piece runs there instead: torch's OpenMP threads then belong to that one thread. Each thread that computes gets a
team of OpenMP threads of its own, and with more of them than cores, libgomp shortens the time its threads spin
between parallel regions, so that every region pays for waking them: on 2 cores the same Recommends took a median
~310 ms on the thread that loaded the model, ~400 ms on another thread (`bench/model_thread.py`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import torch

from recsys.forking import renew_after_fork

T = TypeVar("T")


class ModelRunner:
    """Runs callables that use the model one at a time: inline under a lock, or on the thread running `serve`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # re-entrant: a piece of work may call the runner again
        renew_after_fork(self, ModelRunner._renew_lock)
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._serving: int | None = None  # the ident of the thread running `serve`
        self._stop = threading.Event()
        self.started = threading.Event()  # set once `serve` runs

    def _renew_lock(self) -> None:
        self.lock = threading.RLock()

    @property
    def serving(self) -> bool:
        """Whether a thread runs every piece of work (`serve`)."""
        return self._serving is not None

    def __call__(self, work: Callable[[], T]) -> T:
        """`work()`, alone on the model and in inference mode (serving never needs gradients); its exception is
        raised here."""
        if self._serving is None or threading.get_ident() == self._serving:
            with self.lock, torch.inference_mode():
                return work()
        done: Future = Future()
        self._jobs.put((work, done))
        return done.result()

    def serve(self) -> None:
        """Run every piece of work submitted from now on, on this thread, until `stop`."""
        self._stop.clear()
        self._serving = threading.get_ident()
        self.started.set()
        try:
            while not self._stop.is_set():
                try:
                    work, done = self._jobs.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._run(work, done)
        finally:
            self._serving = None
            self.started.clear()
            while not self._jobs.empty():  # work submitted as serving ended still runs, here
                self._run(*self._jobs.get())

    def _run(self, work: Callable[[], Any], done: Future) -> None:
        if done.set_running_or_notify_cancel():
            try:
                with self.lock, torch.inference_mode():  # thread-local: the caller's mode does not reach this thread
                    done.set_result(work())
            except Exception as error:  # noqa: BLE001 (handed to the caller that submitted it)
                done.set_exception(error)

    def stop(self) -> None:
        """End `serve` (work submitted later runs inline again)."""
        self._stop.set()
