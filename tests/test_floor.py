"""The time floor of a prompt's forward: the FLOPs of its matmuls, and each matmul timed at its own shape."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bench.floor import Matmul, against_floor, forward_flops, forward_matmuls, prompt_floor

SMOLLM2 = SimpleNamespace(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                          num_hidden_layers=30, vocab_size=49152, head_dim=64)
TINY = SimpleNamespace(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                       num_hidden_layers=2, vocab_size=100)


def test_flops_by_hand_for_a_tiny_model():
    tokens, hidden, heads, kv, head_dim, inter, layers, vocab = 10, 32, 4, 2, 8, 64, 2, 100
    linear = 2 * tokens * layers * (2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim + 3 * hidden * inter)
    attention = 2 * 2 * layers * heads * head_dim * tokens * (tokens + 1) / 2  # causal: token i sees i + 1 positions
    assert forward_flops(TINY, tokens) == pytest.approx(linear + attention + 2 * hidden * vocab)
    assert forward_flops(TINY, tokens, scored_positions=tokens) == pytest.approx(
        linear + attention + 2 * hidden * vocab * tokens)


def test_a_cached_prefix_is_neither_projected_again_nor_lost_to_attention():
    """36 cached tokens: only the 10 new ones are projected; new token i attends to the 36 and to i + 1 new ones."""
    cached, new, hidden, heads, kv, head_dim, inter, layers, vocab = 36, 10, 32, 4, 2, 8, 64, 2, 100
    linear = 2 * new * layers * (2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim + 3 * hidden * inter)
    attention = 2 * 2 * layers * heads * head_dim * (new * cached + new * (new + 1) / 2)
    assert forward_flops(TINY, cached + new, cached_tokens=cached) == pytest.approx(
        linear + attention + 2 * hidden * vocab)
    assert forward_flops(TINY, cached + new, cached_tokens=cached) < forward_flops(TINY, cached + new)
    with pytest.raises(ValueError, match="cached_tokens"):
        forward_matmuls(TINY, 10, cached_tokens=10)


def test_the_605_token_smollm2_prompt_is_141_gflop():
    """The README's figure for the efficiency bench's headline prompt."""
    assert forward_flops(SMOLLM2, 605) / 1e9 == pytest.approx(141, abs=1)


def test_the_floor_adds_each_product_time_as_often_as_the_forward_runs_it():
    seconds = {"q_proj, o_proj": 0.001, "k_proj, v_proj": 0.0005, "gate_proj, up_proj": 0.002, "down_proj": 0.002,
               "attention QK^T": 0.0004, "attention AV": 0.0004, "lm_head": 0.003}
    seen = []

    def timer(product: Matmul, dtype, device):
        seen.append((product.name, dtype))
        return seconds[product.name]

    tokens = 20
    floor = prompt_floor(TINY, tokens, torch.bfloat16, "cpu", timer=timer)
    causal = (tokens + 1) / (2 * tokens)
    expected = 2 * (2 * 0.001 + 2 * 0.0005 + 2 * 0.002 + 0.002 + causal * (0.0004 + 0.0004)) + 0.003
    assert floor["floor_ms"] == pytest.approx(1000 * expected, abs=0.05)
    assert {name for name, _ in seen} == set(seconds) and {dtype for _, dtype in seen} == {torch.bfloat16}
    assert floor["forward_gflops"] == round(forward_flops(TINY, tokens) / 1e9, 2)
    assert floor["dtype"] == "bfloat16" and floor["threads"] == torch.get_num_threads()
    assert floor["achieved_gflops_per_second"] == round(forward_flops(TINY, tokens) / expected / 1e9, 1)


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine a second thread waits on a busy core and swamps the timings."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_real_floor_on_this_machine_is_positive_and_grows_with_the_prompt(one_thread):
    medium = SimpleNamespace(hidden_size=256, num_attention_heads=4, intermediate_size=1024, num_hidden_layers=2,
                             vocab_size=1000)
    short, long = (prompt_floor(medium, tokens, torch.float32) for tokens in (4, 512))
    assert 0 < short["floor_ms"] < long["floor_ms"]
    assert long["threads"] == 1
    assert long["products"][0]["shape"] == [1, 512, 256, 256]  # (batch, T, hidden) @ (hidden, heads * head_dim)


def test_products_cover_every_flop_once():
    products = forward_matmuls(SMOLLM2, 100)
    assert sum(p.count for p in products if "proj" in p.name) == 7 * SMOLLM2.num_hidden_layers
    assert [p for p in products if p.name == "lm_head"][0].m == 1


def test_measured_over_floor():
    assert against_floor({"floor_ms": 400.0}, recommend_p50=1000.0, verbalizer=600.0) == {
        "recommend_p50_over_floor": 2.5, "verbalizer_over_floor": 1.5}
