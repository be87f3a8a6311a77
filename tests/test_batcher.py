"""The micro-batcher: items that wait together run in one call, each caller gets its own result, one bad item fails
only itself."""

from __future__ import annotations

import threading
import time

import pytest

from recsys.batcher import MicroBatcher


def run_threads(batcher: MicroBatcher, items: list) -> dict:
    """Submit each item from its own thread; {item: outcome or exception}."""
    outcomes: dict = {}

    def submit(item):
        try:
            outcomes[item] = batcher.submit(item)
        except Exception as error:  # noqa: BLE001 (recorded for the assertion)
            outcomes[item] = error

    threads = [threading.Thread(target=submit, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_items_that_arrive_during_a_pass_share_the_next_one():
    calls = []
    gate = threading.Event()

    def run(items):
        calls.append(list(items))
        if len(calls) == 1:
            gate.wait(timeout=10)  # the first pass holds the model while the others arrive
        return [item * 10 for item in items]

    batcher = MicroBatcher(run, max_batch=8)
    first = threading.Thread(target=batcher.submit, args=(0,))
    first.start()
    while not calls:
        time.sleep(0.001)
    outcomes: dict = {}
    waiting = threading.Thread(target=lambda: outcomes.update(run_threads(batcher, list(range(1, 6)))))
    waiting.start()
    while len(batcher._waiting) < 5:  # all five queued behind the first pass
        time.sleep(0.001)
    gate.set()
    first.join(timeout=10)
    waiting.join(timeout=10)
    assert calls[0] == [0] and sorted(calls[1]) == [1, 2, 3, 4, 5] and len(calls) == 2
    assert {item: o.result for item, o in outcomes.items()} == {i: i * 10 for i in range(1, 6)}
    assert all(o.batch_size == 5 and o.waited_ms > 0 for o in outcomes.values())
    assert batcher.batch_sizes == {1: 1, 5: 1}


def arrive_while_busy(run, items: list, max_batch: int) -> dict:
    """Submit `items` in order, one thread each, while the model is busy; once all have run, {item: its outcome, or
    the ValueError it raised}."""
    busy, outcomes = threading.Lock(), {}

    def on_the_model(work):
        with busy:
            work()

    def submit(item):
        try:
            outcomes[item] = batcher.submit(item)
        except ValueError as error:
            outcomes[item] = error

    batcher = MicroBatcher(run, on_the_model, max_batch=max_batch)
    threads = [threading.Thread(target=submit, args=(item,)) for item in items]
    with busy:
        for n, thread in enumerate(threads):
            thread.start()
            while len(batcher._waiting) < n + 1:
                time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=10)
    return outcomes


def test_max_batch_caps_a_pass_and_keeps_arrival_order():
    calls = []
    arrive_while_busy(lambda items: (calls.append(list(items)), list(items))[1], list(range(5)), max_batch=2)
    assert calls == [[0, 1], [2, 3], [4]]


def test_one_bad_item_fails_only_itself():
    def run(items):
        if "bad" in items:
            raise ValueError("cannot score 'bad'")
        return [item.upper() for item in items]

    outcomes = arrive_while_busy(run, ["a", "bad", "c"], max_batch=8)
    assert outcomes["a"].result == "A" and outcomes["c"].result == "C"
    assert isinstance(outcomes["bad"], ValueError)


def test_a_batch_of_one_is_a_plain_call():
    batcher = MicroBatcher(lambda items: [len(items)], max_batch=1)
    outcome = batcher.submit("x")
    assert outcome.result == 1 and outcome.batch_size == 1
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(lambda items: items, max_batch=0)
