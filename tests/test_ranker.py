"""Ranker: prompt layout and budgets, verbalizer ids, probabilities, toy-rule training, adapters, 4-bit."""

import random

import pytest
import torch

from recsys.ranker.examples import RankingExample
from recsys.ranker.model import LoraSettings, RankerLoadConfig, add_lora, load_adapter, load_base_model
from recsys.ranker.prompt import LETTERS, RESPONSE_HEADER, PromptConfig, build_prompt
from recsys.ranker.verbalizer import encode_example, letter_logits, letter_token_ids, read_next_tokens
from tests.conftest import TINY_TITLES, make_catalog, make_llama, make_tokenizer

HISTORY = TINY_TITLES[:25]
CANDIDATES = TINY_TITLES[25:45]


def test_prompt_layout(tiny_tokenizer):
    prompt = build_prompt(tiny_tokenizer, HISTORY[:3], CANDIDATES[:4])
    text = prompt.text
    assert text.startswith("### Instruction:\n") and text.endswith(RESPONSE_HEADER)
    assert "(1) The Terminator (1984)\n(2) Alien (1979)\n(3) Blade Runner (1982)\n" in text
    assert "(A) Apollo 13 (1995)\n(B) Batman Forever (1995)" in text and "(E)" not in text
    assert text.index("User history:") < text.index("Candidate pool:")
    assert prompt.letters == "ABCD" and prompt.num_tokens == len(tiny_tokenizer(text).input_ids)


def test_the_prompt_names_its_domains_items_and_is_built_from_ids_one_way(tiny_tokenizer, tiny_catalog):
    from recsys.ranker.generation import generation_instruction
    from recsys.ranker.prompt import INSTRUCTION, item_texts, prompt_from_ids, ranking_instruction

    movie = prompt_from_ids(tiny_tokenizer, tiny_catalog, [1, 2, 3], [4, 5], PromptConfig(max_history=2))
    assert movie == build_prompt(tiny_tokenizer, item_texts(tiny_catalog, [2, 3], PromptConfig()),
                                 item_texts(tiny_catalog, [4, 5], PromptConfig()))  # the last 2 of the history
    product = prompt_from_ids(tiny_tokenizer, tiny_catalog, [1, 2, 3], [4, 5], PromptConfig(max_history=2,
                                                                                             domain="product"))
    assert "watch history" in movie.text and "recommend a movie from" in movie.text
    assert "purchase history" in product.text and "recommend a product from" in product.text
    assert product.text.replace(ranking_instruction("product"), INSTRUCTION) == movie.text  # only the words differ
    assert "rank all games" in generation_instruction("game") and "bought next" in generation_instruction("game")
    with pytest.raises(ValueError, match="unknown prompt domain"):
        ranking_instruction("book")


def test_prompt_keeps_the_last_20_history_titles(tiny_tokenizer):
    prompt = build_prompt(tiny_tokenizer, HISTORY, CANDIDATES)
    assert prompt.history_titles == HISTORY[-20:]
    assert f"(20) {HISTORY[-1]}" in prompt.text and HISTORY[4] not in prompt.text


def test_titles_are_cut_to_the_token_budget(tiny_tokenizer):
    long_title = "The Godfather: Part II (1974) " * 6
    prompt = build_prompt(tiny_tokenizer, [long_title], CANDIDATES, PromptConfig(max_title_tokens=5))
    assert len(tiny_tokenizer(prompt.history_titles[0], add_special_tokens=False).input_ids) <= 5
    assert all(len(tiny_tokenizer(t, add_special_tokens=False).input_ids) <= 5 for t in prompt.candidate_titles)


def test_budget_drops_oldest_history_first_never_candidates(tiny_tokenizer):
    full = build_prompt(tiny_tokenizer, HISTORY, CANDIDATES)
    capped = build_prompt(tiny_tokenizer, HISTORY, CANDIDATES, PromptConfig(max_prompt_tokens=full.num_tokens - 20))
    assert capped.num_tokens <= full.num_tokens - 20
    assert capped.history_titles == full.history_titles[-len(capped.history_titles):]
    assert len(capped.history_titles) < len(full.history_titles)
    assert capped.candidate_titles == full.candidate_titles
    with pytest.raises(ValueError, match="over the budget"):
        build_prompt(tiny_tokenizer, HISTORY, CANDIDATES, PromptConfig(max_prompt_tokens=30))
    with pytest.raises(ValueError):
        build_prompt(tiny_tokenizer, HISTORY, TINY_TITLES[:21])


def _letter_ids_match_training_labels(tokenizer):
    letter_ids = letter_token_ids(tokenizer)
    prompt = build_prompt(tokenizer, HISTORY[:5], CANDIDATES)
    for index, letter in enumerate(LETTERS):
        input_ids, labels = encode_example(tokenizer, prompt.text, letter)
        answer = [label for label in labels if label != -100]
        assert answer[0] == letter_ids[index] and answer[-1] == tokenizer.eos_token_id
        assert input_ids[: len(input_ids) - len(answer)] == tokenizer(prompt.text).input_ids
    return letter_ids


def test_letter_ids_equal_training_labels_byte_level_bpe(tiny_tokenizer):
    _letter_ids_match_training_labels(tiny_tokenizer)


def llama2_style_tokenizer():
    """A SentencePiece-BPE tokenizer with Llama-2's metaspace rule: a word-initial piece gets '▁'."""
    from tokenizers import SentencePieceBPETokenizer
    from transformers import PreTrainedTokenizerFast

    from recsys.ranker.prompt import render

    backend = SentencePieceBPETokenizer()
    corpus = [render(HISTORY, CANDIDATES), " ".join(LETTERS) + " A B C", "\n".join(TINY_TITLES)]
    backend.train_from_iterator(corpus, vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="</s>")
    return tokenizer


def test_letter_ids_equal_training_labels_sentencepiece_and_differ_from_naive():
    tokenizer = llama2_style_tokenizer()
    letter_ids = _letter_ids_match_training_labels(tokenizer)
    naive = [tokenizer(letter, add_special_tokens=False).input_ids[0] for letter in LETTERS]
    # The reference code's defect: "A" alone is the word-initial piece '▁A', not the 'A' after a newline.
    assert tokenizer.convert_ids_to_tokens(naive[0]).startswith("▁")
    assert naive != letter_ids


def test_probabilities_sum_to_one_and_follow_the_logits(tiny_llama, tiny_tokenizer):
    letter_ids = letter_token_ids(tiny_tokenizer)
    prompts = [build_prompt(tiny_tokenizer, HISTORY[:4], CANDIDATES),
               build_prompt(tiny_tokenizer, HISTORY[5:9], CANDIDATES[:7])]
    probabilities = [r.probabilities for r in read_next_tokens(tiny_llama, tiny_tokenizer, prompts, letter_ids)]
    assert [p.shape[0] for p in probabilities] == [20, 7]
    for p in probabilities:
        assert p.sum().item() == pytest.approx(1.0, abs=1e-5) and torch.all(p > 0)
    logits = letter_logits(tiny_llama, tiny_tokenizer, [prompts[0].text], letter_ids)[0]
    assert torch.equal(torch.argsort(probabilities[0], descending=True), torch.argsort(logits, descending=True))
    full = tiny_llama(**tiny_tokenizer([prompts[0].text], return_tensors="pt")).logits[0, -1, letter_ids]
    assert torch.allclose(torch.softmax(full, -1), probabilities[0], atol=1e-5)


def test_batched_scores_equal_one_by_one(tiny_llama, tiny_tokenizer):
    letter_ids = letter_token_ids(tiny_tokenizer)
    prompts = [build_prompt(tiny_tokenizer, HISTORY[:n], CANDIDATES) for n in (1, 6, 15)]
    batched = [r.probabilities for r in read_next_tokens(tiny_llama, tiny_tokenizer, prompts, letter_ids)]
    for prompt, together in zip(prompts, batched):
        alone = [r.probabilities for r in read_next_tokens(tiny_llama, tiny_tokenizer, [prompt], letter_ids)][0]
        assert torch.allclose(alone, together, atol=1e-5)


def toy_examples(count: int, seed: int) -> list[RankingExample]:
    """Pools of 2..6 random movies; the rule to learn: the answer is the last candidate of the pool."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        size = rng.randint(2, 6)
        items = rng.sample(range(1, len(TINY_TITLES) + 1), size + 1)
        examples.append(RankingExample((items[0],), tuple(items[1:]), size - 1))
    return examples


def test_training_learns_a_toy_rule(tmp_path):
    from recsys.ranker.train import ExampleDataset, RankerTrainConfig, build_trainer

    torch.manual_seed(0)
    tokenizer, catalog = make_tokenizer(), make_catalog()
    model = make_llama(tokenizer, seed=1).train()
    prompt_config = PromptConfig(max_title_tokens=3)
    config = RankerTrainConfig(output=str(tmp_path), lr=3e-3, batch_size=16, per_device_batch_size=16, epochs=3,
                               warmup_steps=5, eval_every=1000)
    train_set = ExampleDataset(toy_examples(400, seed=0), tokenizer, catalog, prompt_config)
    build_trainer(model, tokenizer, train_set, config, RankerLoadConfig(device="cpu")).train()
    model.eval()
    letter_ids = letter_token_ids(tokenizer)
    held_out = toy_examples(100, seed=1)
    prompts = [build_prompt(tokenizer, catalog.titles(e.history), catalog.titles(e.candidates), prompt_config)
               for e in held_out]
    probabilities = [r.probabilities for r in read_next_tokens(model, tokenizer, prompts, letter_ids)]
    accuracy = sum(int(p.argmax()) == e.answer_index for p, e in zip(probabilities, held_out)) / len(held_out)
    chance = sum(1 / len(e.candidates) for e in held_out) / len(held_out)  # about 0.29
    assert accuracy > chance + 0.2


def test_adapter_save_and_load_give_identical_probabilities(tmp_path, tiny_tokenizer):
    base = make_llama(tiny_tokenizer, seed=2)
    model = add_lora(base, LoraSettings())
    for name, param in model.named_parameters():
        if "lora_B" in name:  # fresh LoRA is a no-op (B = 0): make it change the outputs
            torch.nn.init.normal_(param, std=0.5)
    model.eval()
    letter_ids = letter_token_ids(tiny_tokenizer)
    prompt = [build_prompt(tiny_tokenizer, HISTORY[:5], CANDIDATES)]
    before = [r.probabilities for r in read_next_tokens(model, tiny_tokenizer, prompt, letter_ids)][0]
    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    reloaded = load_adapter(make_llama(tiny_tokenizer, seed=2), tmp_path / "adapter").eval()
    after = [r.probabilities for r in read_next_tokens(reloaded, tiny_tokenizer, prompt, letter_ids)][0]
    assert torch.equal(before, after)
    plain = read_next_tokens(make_llama(tiny_tokenizer, seed=2), tiny_tokenizer, prompt, letter_ids)[0].probabilities
    assert not torch.allclose(plain, after)


def test_missing_adapter_names_the_training_command(tmp_path, tiny_tokenizer):
    with pytest.raises(RuntimeError, match="recsys.ranker.train"):
        load_adapter(make_llama(tiny_tokenizer), tmp_path / "nothing")


def test_4bit_nf4_loading_on_cuda(tmp_path, tiny_tokenizer):
    if not torch.cuda.is_available():
        pytest.skip("4-bit NF4 QLoRA loading is the CUDA path (quantization=auto picks it only on a GPU); no GPU here")
    make_llama(tiny_tokenizer).save_pretrained(tmp_path / "base")
    tiny_tokenizer.save_pretrained(tmp_path / "base")
    model = load_base_model(RankerLoadConfig(base_model=str(tmp_path / "base")), for_training=True)
    assert getattr(model, "is_loaded_in_4bit", False)


def test_only_the_known_harmless_library_notices_are_hidden(caplog):
    import logging
    import warnings

    from recsys.ranker import model
    from recsys.ranker.model import KNOWN_HARMLESS

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("%s: No module named 'kernels'", KNOWN_HARMLESS[0])
        logger.warning("Something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["Something else went wrong"]
    caplog.clear()
    kernels = logging.getLogger("kernels._internals.hf_hub")
    with caplog.at_level(logging.WARNING, logger=kernels.name):
        kernels.warning(KNOWN_HARMLESS[2] + " because Hugging Face Hub is in offline mode.")
        kernels.warning("Skipping publisher trust check for 'someone/else' because Hugging Face Hub is offline.")
    assert [r.getMessage() for r in caplog.records] == [
        "Skipping publisher trust check for 'someone/else' because Hugging Face Hub is offline."]
    with warnings.catch_warnings(record=True) as caught:  # a clean filter list with ours on top, as at a plain start
        warnings.simplefilter("always")
        model._quiet_known_harmless_notices()
        warnings.warn(KNOWN_HARMLESS[1] + " and will be removed in v6.", FutureWarning, stacklevel=2)
        warnings.warn("another deprecation", FutureWarning, stacklevel=2)
    assert [str(w.message) for w in caught] == ["another deprecation"]
