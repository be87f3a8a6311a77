"""Title likelihood (the LLM asked with no letters) and catalog pretraining, on the tiny models."""

from __future__ import annotations


import math
from dataclasses import replace

import pytest
import torch
from conftest import make_llama

from recsys.data import SequenceDataset
from recsys.ranker.catalog_lm import (CatalogLMConfig, encode_window, epochs_of, held_out_sequences, kept_sequences,
                                      train, windows)
from recsys.ranker.evaluate import score_titles
from recsys.ranker.rows import RankingRows
from recsys.ranker.fusion import PROBABILITY_FLOOR, FusionWeights, fused_scores, order
from recsys.ranker.heldout import HeldOutConfig, held_out_counts
from recsys.ranker.title_likelihood import TitleConfig, history_ids, title_ids, title_log_likelihoods, title_opinion
from recsys.ranker.title_scores import resumable_title_scores, title_scores_key

HISTORY = ["The Matrix", "Heat", "Alien"]
CANDIDATES = ["Toy Story", "Se7en", "The Godfather: Part II", "Fargo", "Jumanji"]


def full_sequence_log_likelihood(model, tokenizer, history: list[str], title: str) -> float:
    """The reference: one whole unpadded sequence (history then title) and the sum of the title's log-probs."""
    context = history_ids(tokenizer, history)
    line = title_ids(tokenizer, title)
    logits = model(input_ids=torch.tensor([context + line])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(context) - 1 + j, token] for j, token in enumerate(line)))


@torch.inference_mode()
def test_batched_titles_over_the_shared_history_equal_one_sequence_each(tiny_llama, tiny_tokenizer):
    sums, lengths = title_log_likelihoods(tiny_llama, tiny_tokenizer, HISTORY, CANDIDATES)
    expected = [full_sequence_log_likelihood(tiny_llama, tiny_tokenizer, HISTORY, t) for t in CANDIDATES]
    assert torch.allclose(sums, torch.tensor(expected), atol=1e-4)
    assert lengths.tolist() == [len(title_ids(tiny_tokenizer, t)) for t in CANDIDATES]


@pytest.mark.parametrize("domain, header", [("movie", "Movies a user watched, in order:\n"),
                                            ("product", "Products a user bought, in order:\n"),
                                            ("game", "Games a user bought, in order:\n")])
def test_title_ids_concatenate_like_the_joined_text_under_the_domains_header(tiny_tokenizer, domain, header):
    """Lines tokenized one by one give the same ids as the whole text: training and scoring see the same tokens."""
    assert history_ids(tiny_tokenizer, HISTORY, domain) == tiny_tokenizer(
        header + "".join(t + "\n" for t in HISTORY)).input_ids


@torch.inference_mode()
def test_the_header_the_titles_are_scored_under_is_the_domains(tiny_llama, tiny_tokenizer):
    sums, _ = title_log_likelihoods(tiny_llama, tiny_tokenizer, HISTORY, CANDIDATES, "product")
    context = history_ids(tiny_tokenizer, HISTORY, "product")
    line = title_ids(tiny_tokenizer, CANDIDATES[0])
    logp = torch.log_softmax(tiny_llama(input_ids=torch.tensor([context + line])).logits[0].float(), dim=-1)
    expected = float(sum(logp[len(context) - 1 + j, token] for j, token in enumerate(line)))
    assert sums[0].item() == pytest.approx(expected, abs=1e-4)
    assert not torch.allclose(sums, title_log_likelihoods(tiny_llama, tiny_tokenizer, HISTORY, CANDIDATES)[0])
    with pytest.raises(ValueError, match="unknown title domain 'book'"):
        TitleConfig(domain="book")


def test_the_score_does_not_depend_on_where_a_candidate_is_listed(tiny_llama, tiny_tokenizer):
    forward, _ = title_log_likelihoods(tiny_llama, tiny_tokenizer, HISTORY, CANDIDATES)
    backward, _ = title_log_likelihoods(tiny_llama, tiny_tokenizer, HISTORY, CANDIDATES[::-1])
    assert torch.allclose(forward, backward.flip(0), atol=1e-4)


def test_title_opinion_is_a_log_softmax_of_sums_or_per_token_means():
    sums, lengths = torch.tensor([-4.0, -6.0, -9.0]), torch.tensor([2.0, 6.0, 3.0])
    assert torch.allclose(title_opinion(sums, lengths).exp().sum(), torch.tensor(1.0))
    assert title_opinion(sums, lengths).argmax() == 0
    assert title_opinion(sums, lengths, per_token=True).argmax() == 1  # -1 a token beats -2 and -3
    # a title far less likely than the best one gets the floor the app's probabilities carry, not its own value
    far = title_opinion(torch.tensor([-10.0, -150.0, -400.0]), torch.ones(3))
    assert far[1].item() == far[2].item() == pytest.approx(math.log(PROBABILITY_FLOOR))


def test_titles_enter_the_one_fusion_rule():
    opinions = {"retriever": torch.tensor([0.0, -1.0]), "titles": torch.tensor([-3.0, 0.0])}
    assert order(fused_scores(opinions, FusionWeights(1.0, 0.0, 0.0, titles=0.0))) == [0, 1]
    assert order(fused_scores(opinions, FusionWeights(1.0, 0.0, 0.0, titles=1.0))) == [1, 0]


@pytest.mark.parametrize("domain, history", [("movie", [1, 2, 3, 4, 5, 6]), ("product", [2, 3, 4, 5, 6, 7])])
def test_evaluation_scores_titles_as_the_pipeline_does(tiny_pipeline, tiny_catalog, monkeypatch, domain, history):
    monkeypatch.setattr(tiny_pipeline.llm, "title_config", replace(tiny_pipeline.llm.title_config, domain=domain))
    candidates, _ = tiny_pipeline.retrieval.retrieve(history)
    app = tiny_pipeline.recommend(history, titles=True)
    rows = RankingRows([history], torch.tensor([[c.item_id for c in candidates]]), torch.zeros(1, len(candidates)),
                       torch.zeros(1, len(candidates)), torch.tensor([0]), 1)
    sums, lengths = score_titles(tiny_pipeline.llm.model, tiny_pipeline.llm.tokenizer, tiny_catalog, rows,
                                 tiny_pipeline.llm.title_config, progress=False)
    expected = title_opinion(sums, lengths).exp()[0]
    assert torch.allclose(torch.tensor([c.title_probability for c in app.candidates]), expected, atol=1e-5)
    assert app.titles_ms is not None and "titles" in app.opinions
    assert tiny_pipeline.recommend(history).candidates[0].title_probability is None  # computed only when asked


def sequences_dataset(catalog) -> SequenceDataset:
    """Ten users of 8 to 100 items over the tiny catalog (ids cycle)."""
    n = len(catalog)
    return SequenceDataset("tiny", {u: [(u * 7 + i) % n + 1 for i in range(8 + 10 * u)] for u in range(1, 11)},
                           catalog)


def test_pretraining_reads_no_held_out_validation_or_test_item(tiny_catalog):
    dataset = sequences_dataset(tiny_catalog)
    counts = held_out_counts(dataset, max(HeldOutConfig().cuts))
    kept = kept_sequences(dataset)
    for user, items in dataset.sequences.items():
        assert kept[user] == items[: len(items) - 2 - counts[user]]  # never the last two, nor the held-out ones
    for user, held in held_out_sequences(dataset).items():
        assert held == dataset.train(user)[len(dataset.train(user)) - counts[user]:]
    chunks = windows(kept, 4)
    assert all(2 <= len(c) <= 4 for c in chunks)
    assert sum(len(c) for c in chunks) == sum(len(s) - (len(s) % 4 == 1) for s in kept.values())
    two_passes = epochs_of(chunks, 2.0, seed=0)
    assert len(two_passes) == 2 * len(chunks) and sorted(map(tuple, two_passes[: len(chunks)])) == sorted(
        map(tuple, chunks))


def test_every_title_token_is_a_target_and_the_header_is_not(tiny_tokenizer):
    ids, labels = encode_window(tiny_tokenizer, HISTORY)
    header = len(history_ids(tiny_tokenizer, []))
    assert labels[:header] == [-100] * header and labels[header:] == ids[header:]
    assert ids == history_ids(tiny_tokenizer, HISTORY)


def test_pretraining_lowers_held_out_perplexity_and_resumes(tiny_catalog, tiny_tokenizer, tmp_path, monkeypatch):
    """A few steps on the tiny model: the log records perplexity before and after, and --resume continues the step
    count (optimizer state read back from safetensors) instead of starting over."""
    import recsys.ranker.catalog_lm as catalog_lm

    monkeypatch.setattr(catalog_lm, "load_tokenizer", lambda name: tiny_tokenizer)
    monkeypatch.setattr(catalog_lm, "load_base_model", lambda config, for_training=False: make_llama(tiny_tokenizer))
    dataset = sequences_dataset(tiny_catalog)
    config = CatalogLMConfig(output=str(tmp_path / "run"), window=8, batch_size=4, lr=5e-3, warmup_steps=1,
                             eval_every=4, eval_windows=8, epochs=3.0, lora_targets="q_proj,v_proj")
    first = train(CatalogLMConfig(**{**config.__dict__, "max_minutes": 0.0}), dataset)  # stops after one step
    assert first["step"] == 1 and not first["finished"]
    log = train(CatalogLMConfig(**{**config.__dict__, "resume": True}), dataset)
    assert log["finished"] and log["step"] == log["total_steps"] and log["evaluations"][0]["step"] == 1
    assert log["perplexity_best"] < log["perplexity_before"]
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()


def test_interrupted_title_scoring_continues_and_equals_one_pass(tiny_llama, tiny_tokenizer, tiny_catalog, tmp_path):
    n = 5
    rows = RankingRows([[1 + u, 2 + u, 3 + u] for u in range(n)], torch.arange(1, 1 + 4 * n).view(n, 4),
                       torch.zeros(n, 4), torch.zeros(n, 4), torch.zeros(n, dtype=torch.long), n,
                       users=torch.arange(1, n + 1))
    config = TitleConfig(domain="product")
    one_pass = score_titles(tiny_llama, tiny_tokenizer, tiny_catalog, rows, config, progress=False)
    path = tmp_path / "val.safetensors"
    scored: list[list[int]] = []  # the users of each call of the scorer
    interrupt_at = {"call": 2}

    def run(rows: RankingRows, title_config: TitleConfig) -> tuple[torch.Tensor, torch.Tensor]:
        scored.clear()

        def score(part: RankingRows) -> tuple[torch.Tensor, torch.Tensor]:
            scored.append(part.users.tolist())
            if len(scored) == interrupt_at["call"]:
                raise KeyboardInterrupt
            return score_titles(tiny_llama, tiny_tokenizer, tiny_catalog, part, title_config, progress=False)

        key = title_scores_key(title_config, "tiny", torch.float32)
        return resumable_title_scores(score, rows, path, key, save_every=2)

    def same(a, b) -> bool:
        return all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))

    with pytest.raises(KeyboardInterrupt):
        run(rows, config)
    interrupt_at["call"] = 0
    assert same(run(rows, config), one_pass) and scored == [[3, 4], [5]]  # users 1 and 2 were saved
    assert same(run(rows, replace(config, per_token=True)), one_pass) and scored == []  # the form is applied later
    other = replace(rows, candidate_ids=rows.candidate_ids.clone())
    other.candidate_ids[3] = torch.tensor([9, 8, 7, 6])
    run(other, config)
    assert scored == [[4]]  # only the row whose candidates changed
    assert same(run(rows.select([4, 0]), config), (one_pass[0][[4, 0]], one_pass[1][[4, 0]])) and scored == []
    run(rows, replace(config, domain="movie"))  # other title settings: every row scored again
    assert scored == [[1, 2], [3, 4], [5]]
    path.write_bytes(b"damaged")
    assert same(run(rows, config), one_pass) and scored == [[1, 2], [3, 4], [5]]
