"""The benchmarks' timing helpers: warm-up runs are not counted, medians are positive."""

import pytest

from bench.floor import Timing, TimingConfig, median, time_call
from recsys.machine import synchronize


def test_time_call_counts_only_the_repeats_and_keeps_outputs():
    calls = []

    def work():
        calls.append(1)
        return sum(range(20_000))

    timing = time_call(work, "cpu", TimingConfig(warmup=2, repeats=3))
    assert len(calls) == 5
    assert len(timing.seconds) == 3 and timing.outputs == [sum(range(20_000))] * 3
    assert timing.median_seconds > 0
    assert min(timing.seconds) <= timing.median_seconds <= max(timing.seconds)


def test_median_of_repeats():
    assert Timing(seconds=[3.0, 1.0, 2.0]).median_seconds == 2.0
    assert median([0.5, 0.1, 0.2, 0.4]) == pytest.approx(0.3)


def test_time_call_needs_a_repeat():
    with pytest.raises(ValueError):
        time_call(lambda: None, "cpu", TimingConfig(warmup=0, repeats=0))


def test_synchronize_on_cpu_is_a_no_op():
    synchronize("cpu")
