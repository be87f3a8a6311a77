"""Requests that arrive while the model is busy run together: one padded forward pass for all that waited.

Combining without a thread of its own: every caller queues its item, then takes the batcher's lock; whoever holds it
asks the model (`executor`, e.g. `recsys.model_runner.ModelRunner`) to run the oldest `max_batch` waiting items in
one call, taken only once the model is free, and hands each caller its result; a caller whose item another one
already ran returns at once. With one caller at a time nothing changes (a batch of one); with a class clicking
Recommend together, the clicks that arrived during a pass share the next one.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from recsys.forking import renew_after_fork


@dataclass
class Batched:
    """One item's result and how it was computed."""

    result: Any
    batch_size: int  # items in the pass that computed it
    run_ms: float  # time of that pass (the model's work, shared by the batch)
    waited_ms: float  # time from `submit` until its pass began (other users' passes, the race's tokens)


@dataclass
class _Job:
    item: Any
    submitted: float
    outcome: Batched | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Runs `run(items) -> results` (same length and order) over the items waiting whenever the model is free, up to
    `max_batch` at a time, through `executor` (a callable that runs a piece of work on the model; default: inline).
    `max_batch` 1 runs every item alone."""

    def __init__(self, run: Callable[[Sequence[Any]], Sequence[Any]],
                 executor: Callable[[Callable[[], None]], None] | None = None, max_batch: int = 8):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run, self.max_batch = run, max_batch
        self.executor = executor or (lambda work: work())
        self.lock = threading.Lock()  # one caller asks the model at a time; the others wait here
        self._waiting: list[_Job] = []
        self._waiting_lock = threading.Lock()
        renew_after_fork(self, MicroBatcher._renew)
        self.batch_sizes: Counter[int] = Counter()  # passes run, by size (what the tests read)

    def _renew(self) -> None:
        """In a forked child: fresh locks, and none of the server's waiting items (their threads are not there)."""
        self.lock, self._waiting_lock = threading.Lock(), threading.Lock()
        self._waiting = []

    def submit(self, item: Any) -> Batched:
        """Block until `item` has run (in a batch of those waiting with it) and return its result. An item whose
        run failed raises that error; the other items of its batch are retried one by one, so one bad item fails
        only itself."""
        job = _Job(item, time.perf_counter())
        with self._waiting_lock:
            self._waiting.append(job)
        while job.outcome is None and job.error is None:
            with self.lock:
                if job.outcome is not None or job.error is not None:
                    break
                self.executor(self._run_waiting)
        if job.error is not None:
            raise job.error
        assert job.outcome is not None
        return job.outcome

    def _run_waiting(self) -> None:
        """Run the oldest waiting items (on the model, once it is free: the batch is what waited until then)."""
        with self._waiting_lock:
            batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
        if batch:
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        """Run `batch`; on failure, each of its items alone."""
        start = time.perf_counter()
        try:
            results = self.run([job.item for job in batch])
        except Exception as error:  # noqa: BLE001 (passed on to the item's own caller)
            if len(batch) == 1:
                batch[0].error = error
                return
            for job in batch:
                self._run([job])
            return
        run_ms = (time.perf_counter() - start) * 1000
        self.batch_sizes[len(batch)] += 1
        for job, result in zip(batch, results):
            job.outcome = Batched(result, len(batch), run_ms, (start - job.submitted) * 1000)
