"""The ranker's CPU attention kernel (`recsys.ranker.attention`) against transformers' SDPA on the same weights."""

import copy

import pytest
import torch

from recsys.ranker import attention
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


LETTER_IDS = list(range(5, 25))  # any 20 token ids serve as the letters here


@pytest.fixture(params=[attention.QUERY_BLOCK, 4], ids=["served blocks", "blocks of 4 queries"])
def query_block(request, monkeypatch):
    """The kernel's query block: as served (one block for these short prompts), and 4 (many blocks, each reading
    the keys up to its own causal reach)."""
    monkeypatch.setattr(attention, "QUERY_BLOCK", request.param)
    return request.param


@pytest.mark.parametrize("with_prefix", [False, True])
def test_left_padded_batches_score_as_sdpa_does(pair, tiny_tokenizer, with_prefix, query_block):
    grouped, sdpa = pair
    ids = LETTER_IDS
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


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_greedy_generation_writes_what_sdpa_writes(pair, tiny_tokenizer, cache, query_block):
    """Left-padded prompts, then one token at a time; a static cache's keys include its empty slots."""
    batch = tiny_tokenizer(PROMPTS[:2], return_tensors="pt", padding=True)
    outputs = [model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id,
                              cache_implementation=cache, return_dict_in_generate=True, output_scores=True)
               for model in pair]
    assert torch.equal(outputs[0].sequences, outputs[1].sequences)
    torch.testing.assert_close(torch.stack(outputs[0].scores), torch.stack(outputs[1].scores), rtol=1e-4,
                               atol=1e-4)


def test_training_gradients_match_sdpa(pair, tiny_tokenizer, query_block):
    ids = LETTER_IDS
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


def test_in_bf16_it_is_transformers_eager_attention():
    """The served dtype: the same computation as transformers' eager attention (softmax in fp32, probabilities
    rounded to bf16), up to the order of bf16 sums; blocks of 4 queries over 6 prefix keys and left padding."""
    from transformers.models.llama.modeling_llama import eager_attention_forward

    torch.manual_seed(0)
    query = torch.randn(2, 6, 10, 16, dtype=torch.bfloat16)
    key, value = torch.randn(2, 3, 16, 16, dtype=torch.bfloat16), torch.randn(2, 3, 16, 16, dtype=torch.bfloat16)
    mask = torch.ones(10, 16, dtype=torch.bool).tril(6).expand(2, 1, 10, 16).clone()
    mask[1, :, :, 6:9] = False  # the second row's 3 padding positions, between the prefix and its prompt
    module = torch.nn.Module()
    module.num_key_value_groups, module.training = 2, False
    additive = torch.zeros(mask.shape, dtype=torch.bfloat16).masked_fill(~mask, torch.finfo(torch.bfloat16).min)
    expected, _ = eager_attention_forward(module, query, key, value, additive, scaling=0.25)
    for block in (128, 4):
        attention.QUERY_BLOCK, served = block, attention.QUERY_BLOCK
        try:
            output, _ = grouped_attention(module, query, key, value, mask, scaling=0.25)
        finally:
            attention.QUERY_BLOCK = served
        torch.testing.assert_close(output.float(), expected.float(), rtol=0.0, atol=2e-2)


CPU, META = torch.device("cpu"), torch.device("meta")
LEFT_TO_SDPA = {  # what the kernel does not compute itself: (device, mask, extra keywords, module is causal)
    "another device (meta stands in for a GPU)": (META, "bool", {}, True),
    "no mask, several queries": (CPU, None, {}, True),
    "an additive float mask": (CPU, "float", {}, True),
    "a per-head mask": (CPU, "per-head", {}, True),
    "logit soft-capping": (CPU, "bool", {"softcap": 30.0}, True),
    "attention sinks": (CPU, "bool", {"s_aux": torch.zeros(4)}, True),
    "a module that is not causal": (CPU, "bool", {}, False),
}


@pytest.mark.parametrize("case", list(LEFT_TO_SDPA))
def test_what_it_does_not_cover_goes_to_transformers_sdpa(monkeypatch, case):
    import transformers.integrations.sdpa_attention as sdpa_module

    device, mask_kind, extra, causal = LEFT_TO_SDPA[case]
    calls = []
    monkeypatch.setattr(sdpa_module, "sdpa_attention_forward", lambda *args, **kwargs: calls.append((args, kwargs)))
    query = torch.zeros(1, 4, 3, 8, device=device)
    key = value = torch.zeros(1, 2, 5, 8, device=device)
    masks = {None: None, "bool": torch.ones(1, 1, 3, 5, dtype=torch.bool, device=device),
             "float": torch.zeros(1, 1, 3, 5, device=device),
             "per-head": torch.ones(1, 4, 3, 5, dtype=torch.bool, device=device)}
    module = torch.nn.Module()
    module.is_causal = causal
    grouped_attention(module, query, key, value, masks[mask_kind], scaling=0.5, dropout=0.0, **extra)
    (args, kwargs), = calls
    assert args[1] is query and args[4] is masks[mask_kind] and kwargs == {"scaling": 0.5, "dropout": 0.0, **extra}


def test_the_served_pass_and_decoding_never_reach_sdpa(pair, tiny_tokenizer, monkeypatch):
    """A left-padded batch after the cached prefix (the app's pass) and one-token decoding run on the kernel
    itself: the comparisons above compare it, not SDPA with SDPA."""
    import transformers.integrations.sdpa_attention as sdpa_module

    grouped, _ = pair
    prefix = build_prefix_cache(grouped, tiny_tokenizer)

    def refuse(*args, **kwargs):
        raise AssertionError("SDPA ran")

    monkeypatch.setattr(sdpa_module, "sdpa_attention_forward", refuse)
    with torch.inference_mode():
        forward_letter_logits(grouped, tokenize_prompts(tiny_tokenizer, PROMPTS, "cpu", prefix), LETTER_IDS)
        batch = tiny_tokenizer(PROMPTS[:2], return_tensors="pt", padding=True)
        grouped.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
