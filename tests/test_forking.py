"""A ZeroGPU worker is a fork of a busy server: the locks other threads held then are fresh in the child."""

from __future__ import annotations

import os
import threading

import pytest

from recsys.batcher import MicroBatcher
from recsys.demo.downloads import Downloads
from recsys.model_runner import ModelRunner
from recsys.shared_results import SharedResults


def _forked_child_can(use) -> bool:
    """Fork now; in the child, whether `use()` finishes within 5 s (the child's exit status says)."""
    pid = os.fork()
    if pid == 0:  # the child: a thread that is still waiting after 5 s means a lock was inherited held
        worker = threading.Thread(target=use, daemon=True)
        worker.start()
        worker.join(5)
        os._exit(1 if worker.is_alive() else 0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_locks_held_by_another_thread_at_a_fork_are_free_in_the_child(tmp_path):
    downloads, shared, runner = Downloads(tmp_path), SharedResults(4), ModelRunner()
    batcher = MicroBatcher(lambda items: [item * 2 for item in items])
    locks = [downloads._lock, shared._lock, runner.lock, batcher.lock, batcher._waiting_lock]
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # another request's thread, in the middle of its work when the worker forks
        for lock in locks:
            lock.acquire()
        holding.set()
        release.wait()
        for lock in locks:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    try:
        assert _forked_child_can(lambda: downloads.write("results.csv", b"a,b\n"))
        assert _forked_child_can(lambda: shared.get("history", lambda: "ranked"))
        assert _forked_child_can(lambda: runner(lambda: "ranked"))
        assert _forked_child_can(lambda: batcher.submit(21))
        assert not _forked_child_can(lambda: locks[0].acquire())  # a lock not renewed stays held: the check can fail
    finally:
        release.set()
        holder.join()
