"""Timing helpers shared by the benchmarks and the app: warm-up, device sync, median over repeats.

On CUDA, kernels run asynchronously; every clock read here follows `torch.cuda.synchronize()` so
the time covers the work, not just its launch. The first calls of a model pay for allocation and
kernel selection, hence the warm-up runs that are not counted.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import torch


@dataclass(frozen=True)
class TimingConfig:
    """How to time a call: untimed warm-up runs, then timed repeats."""

    warmup: int = 1
    repeats: int = 3


@dataclass
class Timing:
    """Wall-clock seconds of each timed repeat and what each repeat returned."""

    seconds: list[float]
    outputs: list[Any] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        """Median of the repeats (robust to a stray slow run on a shared machine)."""
        return statistics.median(self.seconds)


def synchronize(device) -> None:
    """Wait for queued CUDA work on `device` (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device="cpu", config: TimingConfig = TimingConfig()) -> Timing:
    """Run `fn` `config.warmup` times untimed, then `config.repeats` times timed (synchronized on CUDA)."""
    if config.repeats < 1:
        raise ValueError(f"need at least one timed repeat, got {config.repeats}")
    for _ in range(config.warmup):
        fn()
    synchronize(device)
    timing = Timing(seconds=[])
    for _ in range(config.repeats):
        start = time.perf_counter()
        output = fn()
        synchronize(device)
        timing.seconds.append(time.perf_counter() - start)
        timing.outputs.append(output)
    return timing


def median(values: list[float]) -> float:
    """Median of a non-empty list of numbers (e.g. per-phase seconds collected from several runs)."""
    return statistics.median(values)


def matmul_flops_per_second(device="cpu", dtype: torch.dtype = torch.float32, size: int = 1024,
                            config: TimingConfig = TimingConfig()) -> float:
    """The machine's measured dense matmul rate (FLOP/s) for square `size` x `size` matrices of `dtype`.

    The ceiling against which a forward pass's FLOPs give a time floor.
    """
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    timing = time_call(lambda: torch.mm(a, b), device, config)
    return 2 * size**3 / timing.median_seconds
