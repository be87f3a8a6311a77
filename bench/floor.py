"""The time floor of one prompt's forward pass on this machine: its matmuls, each timed alone at its own shape.

A Llama-style forward over T prompt tokens is, FLOP for FLOP, a handful of matrix products: per
layer the q, k, v, o, gate, up and down projections of a (T, hidden) activation, the causal
attention products QK^T and AV, and once the LM head on the scored position. Timing a plain
`torch.matmul` at each of those shapes, in the model's dtype with the threads the measurement uses,
and adding them up (times how often the forward runs each) gives what the forward cannot beat on
this machine: the floor. A measured time over the floor says how much goes to everything else
(norms, activations, attention softmax, Python, tokenization). Small matrices (hidden size 576)
run further from the machine's peak than a square 1024^3 product, so this floor is higher, and
truer, than FLOPs over a square-matmul rate.

How the benchmarks time a call lives here too (`time_call`): untimed warm-up runs, then timed repeats, each clock read
after `torch.cuda.synchronize()` on CUDA so that the time covers the work, not just its launch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from recsys.machine import synchronize


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


FLOOR_TIMING = TimingConfig(warmup=2, repeats=7)


@dataclass(frozen=True)
class Matmul:
    """One kind of matrix product in the forward: (batch, m, k) @ (batch, k, n), run `count` times.

    `useful` is the share of the product a causal kernel needs (the lower triangle of attention).
    """

    name: str
    batch: int
    m: int
    k: int
    n: int
    count: int
    useful: float = 1.0

    @property
    def flops(self) -> float:
        """FLOPs this kind of product contributes to one forward (multiply-adds count 2)."""
        return 2.0 * self.batch * self.m * self.k * self.n * self.count * self.useful


def forward_matmuls(config, num_tokens: int, scored_positions: int = 1, cached_tokens: int = 0) -> list[Matmul]:
    """The matrix products of one Llama-style forward over `num_tokens` tokens (batch 1).

    `config` needs hidden_size, num_attention_heads, intermediate_size, num_hidden_layers, vocab_size
    (num_key_value_heads and head_dim when they differ from the defaults). The LM head runs on
    `scored_positions` positions (1 for the verbalizer, which reads the last position only). With
    `cached_tokens` (a prefix whose keys/values are reused) only the `num_tokens - cached_tokens` new
    tokens are projected, and they attend to the cached ones too.
    """
    if not 0 <= cached_tokens < num_tokens:
        raise ValueError(f"cached_tokens must be in 0..{num_tokens - 1}, got {cached_tokens}")
    hidden, heads, layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    tokens, keys = num_tokens - cached_tokens, num_tokens
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    causal = (tokens * cached_tokens + tokens * (tokens + 1) / 2) / (tokens * keys)  # new token i sees prefix + i + 1
    return [
        Matmul("q_proj, o_proj", 1, tokens, hidden, heads * head_dim, 2 * layers),
        Matmul("k_proj, v_proj", 1, tokens, hidden, kv_heads * head_dim, 2 * layers),
        Matmul("gate_proj, up_proj", 1, tokens, hidden, config.intermediate_size, 2 * layers),
        Matmul("down_proj", 1, tokens, config.intermediate_size, hidden, layers),
        Matmul("attention QK^T", heads, tokens, head_dim, keys, layers, causal),
        Matmul("attention AV", heads, tokens, keys, head_dim, layers, causal),
        Matmul("lm_head", 1, scored_positions, hidden, config.vocab_size, 1),
    ]


def forward_flops(config, num_tokens: int, scored_positions: int = 1, cached_tokens: int = 0) -> float:
    """FLOPs of one Llama-style forward over `num_tokens` (matmuls only; see `forward_matmuls`)."""
    return sum(product.flops for product in forward_matmuls(config, num_tokens, scored_positions, cached_tokens))


def time_matmul(product: Matmul, dtype: torch.dtype, device, timing: TimingConfig = FLOOR_TIMING) -> float:
    """Median seconds of one plain `torch.matmul` of `product`'s shape on `device` in `dtype` (random inputs)."""
    a = torch.randn(product.batch, product.m, product.k, device=device).to(dtype)
    b = torch.randn(product.batch, product.k, product.n, device=device).to(dtype)
    with torch.inference_mode():
        return time_call(lambda: torch.matmul(a, b), device, timing).median_seconds


def prompt_floor(config, num_tokens: int, dtype: torch.dtype, device="cpu", scored_positions: int = 1,
                 timer: Callable[..., float] = time_matmul, cached_tokens: int = 0) -> dict:
    """The floor of one forward over `num_tokens` on this machine: each product timed once at its shape.

    Each kind of product's time counts `count * useful` times; `cached_tokens` as in `forward_matmuls`.
    Uses torch's current thread count; `timer(product, dtype, device)` -> seconds is swappable for
    tests. Returns prompt_tokens, cached_tokens, forward_gflops, floor_ms, achieved_gflops_per_second
    (FLOPs over the floor), dtype, device, threads and the per-product times (ms for one product).
    """
    products = forward_matmuls(config, num_tokens, scored_positions, cached_tokens)
    seconds = {product.name: timer(product, dtype, device) for product in products}
    floor_s = sum(seconds[p.name] * p.count * p.useful for p in products)
    flops = forward_flops(config, num_tokens, scored_positions, cached_tokens)
    return {"prompt_tokens": num_tokens, "cached_tokens": cached_tokens, "forward_gflops": round(flops / 1e9, 2),
            "floor_ms": round(1000 * floor_s, 1),
            "achieved_gflops_per_second": round(flops / floor_s / 1e9, 1),
            "dtype": str(dtype).replace("torch.", ""), "device": str(device), "threads": torch.get_num_threads(),
            "products": [{"name": p.name, "shape": [p.batch, p.m, p.k, p.n], "count": p.count,
                          "useful": round(p.useful, 4), "ms_each": round(1000 * seconds[p.name], 3)}
                         for p in products]}


def against_floor(floor: dict, **measured_ms: float) -> dict:
    """Each measured time (ms, by name) over the floor, e.g. against_floor(f, recommend_p50=977.0) ->
    {"recommend_p50_over_floor": 3.2}."""
    return {f"{name}_over_floor": round(ms / floor["floor_ms"], 2) for name, ms in measured_ms.items()}
