"""Verbalizer speed-ups give the same numbers: last-position scoring, batching, the cached instruction prefix.

The tiny random Llama (2 layers, hidden 64) and byte-level BPE tokenizer of conftest.py stand in
for the real model; nothing is downloaded.
"""

import copy

import pytest
import torch
from conftest import TINY_TITLES

from recsys.ranker.prompt import PromptConfig, build_prompt
from recsys.ranker.generation import GENERATION_INSTRUCTION, generate_ranking, generation_prompt
from recsys.ranker.verbalizer import (build_prefix_cache, letter_logits, letter_token_ids,
                                      read_next_tokens, shared_prefix_ids, tokenize_prompts)

def prompts_of(tokenizer, sizes=((3, 20), (0, 7), (5, 12))):
    """Prompts of different lengths (history size, number of candidates), so that batches need padding."""
    config = PromptConfig(max_title_tokens=8)
    return [build_prompt(tokenizer, TINY_TITLES[:h], TINY_TITLES[-c:], config) for h, c in sizes]


def test_last_position_scoring_equals_full_forward(model, tokenizer):
    letter_ids = letter_token_ids(tokenizer)
    texts = [p.text for p in prompts_of(tokenizer)]
    fast = letter_logits(model, tokenizer, texts, letter_ids)
    batch = tokenize_prompts(tokenizer, texts, model.device)
    with torch.no_grad():
        full = model(**batch).logits  # position ids that start at each row's first real token
    assert full.shape[1] == batch["input_ids"].shape[1]  # every position went through the LM head
    assert torch.allclose(fast, full[:, -1, letter_ids], atol=1e-5)


def test_batched_equals_one_by_one(model, tokenizer):
    letter_ids = letter_token_ids(tokenizer)
    prompts = prompts_of(tokenizer)
    batched = [r.probabilities for r in read_next_tokens(model, tokenizer, prompts, letter_ids)]
    alone = [[r.probabilities for r in read_next_tokens(model, tokenizer, [p], letter_ids)][0] for p in prompts]
    for b, a in zip(batched, alone):
        assert torch.allclose(b, a, atol=1e-5)


def test_cached_prefix_equals_plain(model, tokenizer):
    letter_ids = letter_token_ids(tokenizer)
    prompts = prompts_of(tokenizer)
    prefix = build_prefix_cache(model, tokenizer)
    assert len(prefix.token_ids) > 10  # the instruction and headers, not a token or two
    plain = [r.probabilities for r in read_next_tokens(model, tokenizer, prompts, letter_ids)]
    cached = [r.probabilities for r in read_next_tokens(model, tokenizer, prompts, letter_ids,
                                                         prefix=prefix)]  # left-padded after the prefix
    for p, c in zip(plain, cached):
        assert c.shape == p.shape
        assert torch.allclose(c, p, atol=1e-5)
    again = [r.probabilities for r in read_next_tokens(model, tokenizer, prompts[:1], letter_ids, prefix=prefix)]
    assert torch.allclose(again[0], plain[0], atol=1e-5)  # the stored prefix is not grown by use


def test_the_apps_reading_after_the_cached_prefix_equals_the_full_pass(model, tokenizer):
    """`read_next_tokens` (what the app calls) gives the same probabilities, letter mass and other tokens with the
    cache."""
    letter_ids = letter_token_ids(tokenizer)
    prompt = prompts_of(tokenizer)[0]
    plain = read_next_tokens(model, tokenizer, [prompt], letter_ids)[0]
    cached = read_next_tokens(model, tokenizer, [prompt], letter_ids, prefix=build_prefix_cache(model, tokenizer))[0]
    assert torch.allclose(cached.probabilities, plain.probabilities, atol=1e-5)
    assert cached.letter_mass == pytest.approx(plain.letter_mass, abs=1e-5)
    assert [t for t, _ in cached.top_other_tokens] == [t for t, _ in plain.top_other_tokens]


def test_generation_after_its_cached_prefix_writes_the_same_text(model, tokenizer):
    """The race's baseline continues from its own instruction's prefix and decodes exactly what the full prompt
    gives."""
    config = PromptConfig(max_title_tokens=6)
    plain = generate_ranking(model, tokenizer, generation_prompt(tokenizer, TINY_TITLES[:3], TINY_TITLES[-5:], config),
                             max_new_tokens=12)
    prefix = build_prefix_cache(model, tokenizer, GENERATION_INSTRUCTION)
    cached = generate_ranking(model, tokenizer, generation_prompt(tokenizer, TINY_TITLES[:3], TINY_TITLES[-5:], config),
                              max_new_tokens=12, prefix=prefix)
    assert cached.text == plain.text and cached.num_generated_tokens == plain.num_generated_tokens == 12
    with pytest.raises(ValueError, match="cached prefix"):  # the verbalizer's prefix is not the generation prompt's
        generate_ranking(model, tokenizer, generation_prompt(tokenizer, TINY_TITLES[:3], TINY_TITLES[-5:], config),
                         max_new_tokens=2, prefix=build_prefix_cache(model, tokenizer))


def test_shared_prefix_is_a_prefix_of_real_prompts(tokenizer):
    prefix_ids = shared_prefix_ids(tokenizer)
    for prompt in prompts_of(tokenizer):
        assert tokenizer(prompt.text).input_ids[: len(prefix_ids)] == prefix_ids


def test_cached_prefix_rejects_other_instructions(model, tokenizer):
    prefix = build_prefix_cache(model, tokenizer, instruction="Something else entirely.")
    with pytest.raises(ValueError, match="cached prefix"):
        letter_logits(model, tokenizer, [prompts_of(tokenizer)[0].text], letter_token_ids(tokenizer), prefix)


def test_the_lm_head_runs_as_one_matrix_product_without_copying_its_weight(model, tokenizer):
    """The last position is gathered, not sliced: a sliced (B, 1, hidden) view made torch's matmul copy the
    (hidden, vocabulary) head once per row for frozen bf16 weights on CPU (as served), the largest cost of a
    served pass after the projections."""
    model = copy.deepcopy(model).to(torch.bfloat16).requires_grad_(False)  # frozen, as served
    letter_ids = letter_token_ids(tokenizer)
    prompts = prompts_of(tokenizer)
    head = tuple(model.get_output_embeddings().weight.shape)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profiler:
        read_next_tokens(model, tokenizer, prompts, letter_ids)
    copied = [event.input_shapes for event in profiler.events() if event.name == "aten::copy_"]
    assert not [shapes for shapes in copied if shapes and sorted(head) == sorted(shapes[0][-2:])]
    products = [event.input_shapes for event in profiler.events() if event.name in ("aten::mm", "aten::bmm")]
    assert [len(prompts), head[1]] in [shapes[0] for shapes in products]  # one (B, hidden) x (hidden, vocab) product
