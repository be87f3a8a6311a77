"""Fresh locks in a forked process.

A ZeroGPU Space forks a GPU worker for each model event from a server that runs many threads. A lock that one of
those threads held at that moment is copied held, and nothing in the worker would ever release it: the worker's
first use of it would wait forever. Objects that hold locks register here to get new ones in the child.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def renew_after_fork(owner: T, renew: Callable[[T], None]) -> None:
    """Call `renew(owner)` in every child this process forks from now on, while `owner` lives (it is not kept alive
    for this). `renew` replaces the owner's locks, and any state other threads were in the middle of changing."""
    ref = weakref.ref(owner)

    def in_child() -> None:
        alive = ref()
        if alive is not None:
            renew(alive)

    os.register_at_fork(after_in_child=in_child)
