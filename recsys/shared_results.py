"""Results shared between users who ask the same thing: a class that opens one link, or loads one preset, and clicks
Recommend gets one computation, not thirty.

A bounded LRU of finished results keyed by the request, plus one computation per key in flight: a request for a key
being computed waits for that computation instead of starting its own. Results must be immutable (a frozen
`Recommendation`): every asker gets the same object.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from recsys.forking import renew_after_fork


class SharedResults:
    """At most `size` recent results by key; `size` 0 computes every request."""

    def __init__(self, size: int = 256):
        if size < 0:
            raise ValueError(f"size must be 0 or more, got {size}")
        self.size = size
        self._results: OrderedDict[Hashable, Any] = OrderedDict()
        self._computing: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        renew_after_fork(self, SharedResults._renew)

    def _renew(self) -> None:
        """In a forked child: a fresh lock, and no waiting for computations of threads that are not there."""
        self._lock = threading.Lock()
        self._computing = {}

    def get(self, key: Hashable, compute: Callable[[], Any], keep: Callable[[Any], bool] = lambda _: True
            ) -> tuple[Any, bool]:
        """(the result for `key`, whether it was shared): a kept earlier result, the one being computed for another
        caller (waited for), or `compute()` now. A result `keep` refuses (e.g. a failure) is returned, not kept."""
        if self.size == 0:
            return compute(), False
        while True:
            with self._lock:
                if key in self._results:
                    self._results.move_to_end(key)
                    return self._results[key], True
                running = self._computing.get(key)
                if running is None:
                    running = self._computing[key] = threading.Event()
                    break
            running.wait()  # another caller computes it: take its result (or compute, if it kept none)
        try:
            result = compute()
            if keep(result):
                with self._lock:
                    self._results[key] = result
                    while len(self._results) > self.size:
                        self._results.popitem(last=False)
            return result, False
        finally:
            with self._lock:
                del self._computing[key]
            running.set()

    def __len__(self) -> int:
        return len(self._results)
