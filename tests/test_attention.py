"""The ranker's CPU attention kernel (`recsys.ranker.attention`) against transformers' SDPA on the same weights."""

import copy

import pytest
import torch

from recsys.ranker.attention import ATTENTION, grouped_attention, register
from recsys.ranker.prompt import render
from recsys.ranker.verbalizer import build_prefix_cache, forward_letter_logits, tokenize_prompts

PROMPTS = [render(["Heat (1995)"], ["Up (2009)", "Alien (1979)"]),  # three lengths: the batch is left-padded
           render(["Heat (1995)", "Casino (1995)", "Fargo (1996)"], ["Up (2009)", "Alien (1979)", "Babe (1995)"]),
           render([], ["Up (2009)"])]


@pytest.fixture(scope="module")
def pair(tiny_llama):
    """(grouped, sdpa): two fp32 copies of the tiny Llama (4 query heads over 2 key/value heads) differing only in
    their attention kernel."""
    grouped = copy.deepcopy(tiny_llama).float()
    grouped.set_attn_implementation(register())
    sdpa = copy.deepcopy(grouped)
    sdpa.set_attn_implementation("sdpa")
    return grouped, sdpa


def letters(tokenizer):
    return [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.convert_ids_to_tokens(range(5, 25))]


@pytest.mark.parametrize("with_prefix", [False, True])
def test_left_padded_batches_score_as_sdpa_does(pair, tiny_tokenizer, with_prefix):
    grouped, sdpa = pair
    ids = letters(tiny_tokenizer)
    with torch.inference_mode():
        scores = []
        for model in pair:
            prefix = build_prefix_cache(model, tiny_tokenizer) if with_prefix else None
            batch = tokenize_prompts(tiny_tokenizer, PROMPTS, "cpu", prefix)
            scores.append(forward_letter_logits(model, batch, ids))
        one_by_one = torch.cat([forward_letter_logits(
            grouped, tokenize_prompts(tiny_tokenizer, [text], "cpu",
                                      build_prefix_cache(grouped, tiny_tokenizer) if with_prefix else None), ids)
            for text in PROMPTS])
    assert grouped.config._attn_implementation == ATTENTION
    assert torch.isfinite(scores[0]).all()  # the padding rows (every key masked) did not turn into NaN
    torch.testing.assert_close(scores[0], scores[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores[0], one_by_one, rtol=1e-5, atol=1e-5)


def test_greedy_generation_writes_what_sdpa_writes(pair, tiny_tokenizer):
    batch = tiny_tokenizer(PROMPTS[:2], return_tensors="pt", padding=True)
    outputs = [model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
               for model in pair]
    assert torch.equal(outputs[0], outputs[1])


def test_training_gradients_match_sdpa(pair, tiny_tokenizer):
    ids = letters(tiny_tokenizer)
    batch = tokenize_prompts(tiny_tokenizer, PROMPTS, "cpu")
    grads = []
    for model in pair:
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(forward_letter_logits(model, batch, ids), torch.tensor([0, 3, 7]))
        loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        model.zero_grad()
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_off_cpu_it_is_transformers_sdpa(monkeypatch):
    """Any device but the CPU goes to transformers' SDPA function with the same arguments (meta tensors stand in
    for a GPU's)."""
    import transformers.integrations.sdpa_attention as sdpa_module

    calls = []
    monkeypatch.setattr(sdpa_module, "sdpa_attention_forward", lambda *args, **kwargs: calls.append((args, kwargs)))
    query = torch.empty(1, 4, 3, 8, device="meta")
    key = value = torch.empty(1, 2, 3, 8, device="meta")
    grouped_attention(torch.nn.Module(), query, key, value, None, scaling=0.5, dropout=0.0, is_causal=True)
    (args, kwargs), = calls
    assert args[1] is query and args[4] is None and kwargs == {"scaling": 0.5, "dropout": 0.0, "is_causal": True}
