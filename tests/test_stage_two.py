"""Stage two beyond the paper: the co-watch prior, held-out examples at several cuts, the residual loss, the fusion
rule."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from conftest import TINY_TITLES, make_catalog, make_llama, make_lrurec
from recsys.errors import CheckpointError
from recsys.data.preprocess import SequenceDataset
from recsys.ranker.cowatch import CoWatchConfig, CoWatchCounts
from recsys.ranker.evaluate import ablation, choose_weight, ranking_metrics, target_ranks
from recsys.ranker.rows import RankingRows
from recsys.ranker.examples import RankingExample
from recsys.ranker.fusion import FusionWeights, fused_scores, order, prior_scores
from recsys.ranker.heldout import (HeldOutExamples, candidate_examples, held_out_counts, held_out_positions,
                                   split_by_user, truncated_dataset, truncated_sequences)
from recsys.ranker.prior import fit_prior_weights, pooled_heldout_rows, training_counts
from recsys.ranker.prompt import PromptConfig, build_prompt, evidence_note
from recsys.ranker.train import ExampleDataset, collate_letters, letter_loss
from recsys.ranker.verbalizer import forward_letter_logits, letter_token_ids, tokenize_prompts


def test_cowatch_counts_on_a_hand_made_sequence():
    counts = CoWatchCounts.from_sequences([[1, 2, 3, 4], [2, 3]], num_items=5, config=CoWatchConfig(window=2, span=2))
    c = counts.counts
    assert c[1, 2] == 1 and c[1, 3] == 1 and c[1, 4] == 0  # 4 comes 3 positions after 1: outside the window
    assert c[2, 3] == 2 and c[2, 4] == 1 and c[3, 4] == 1
    assert c[2, 1] == 0 and c[4, 3] == 0  # order matters: only what came after
    assert int(c.sum()) == 6 and int(c[0].sum() + c[:, 0].sum()) == 0
    scores = counts.scores([[1, 2], [], [5, 2]], torch.tensor([[3, 4], [3, 4], [3, 4]]))
    assert scores[0].tolist() == pytest.approx([(math.log(2) + math.log(3)) / 2, math.log(2) / 2])
    assert scores[1].tolist() == [0.0, 0.0]  # no history, no votes
    assert scores[2].tolist() == pytest.approx([math.log(3) / 2, math.log(2) / 2])  # 5 voted 0
    assert counts.evidence([1, 2], 3) == (2, 2) and counts.evidence([5], 3) is None


def test_cowatch_counts_round_trip_and_corrupt_files(tmp_path):
    counts = CoWatchCounts.from_sequences([[1, 2, 3, 4, 1, 3]], num_items=6, config=CoWatchConfig(window=3, span=4))
    counts.save(tmp_path)
    loaded = CoWatchCounts.load(tmp_path)
    assert torch.equal(loaded.counts, counts.counts) and loaded.config == counts.config
    path = tmp_path / "cowatch.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt.*python -m recsys.ranker.prior --write"):
        CoWatchCounts.load(tmp_path)
    with pytest.raises(CheckpointError, match="python -m recsys.ranker.prior"):
        CoWatchCounts.load(tmp_path / "missing")


def _toy_dataset(num_users: int = 8, length: int = 40) -> SequenceDataset:
    generator = torch.Generator().manual_seed(5)
    sequences = {u: (torch.randint(len(TINY_TITLES), (length,), generator=generator) + 1).tolist()
                 for u in range(1, num_users + 1)}
    sequences[num_users] = sequences[num_users][:12]
    return SequenceDataset("toy", sequences, make_catalog())


def test_no_scored_position_ever_counts_itself():
    """Changing every held-out target (and all that follows it) leaves the counts its example is scored with unchanged;
    changing the validation and test items leaves the serving counts unchanged."""
    dataset = _toy_dataset()
    for cut, window in ((10, 5), (20, 5)):
        counts = held_out_counts(dataset, cut)
        positions = held_out_positions(dataset, counts, skip_last=cut - window)
        assert positions
        changed = {u: list(s) for u, s in dataset.sequences.items()}
        for user, position in positions:
            changed[user][position:] = [(i % len(TINY_TITLES)) + 1 for i in changed[user][position:]]
        other = SequenceDataset("toy", changed, dataset.catalog)
        seen = CoWatchCounts.from_sequences(truncated_sequences(dataset, cut).values(), dataset.num_items)
        seen_changed = CoWatchCounts.from_sequences(truncated_sequences(other, cut).values(), dataset.num_items)
        assert torch.equal(seen.counts, seen_changed.counts)
        for user, position in positions:  # the scored position lies after everything counted for it
            assert len(truncated_sequences(dataset, cut)[user]) <= position
    last_two = {u: s[:-2] + [(s[-2] % 48) + 1, (s[-1] % 48) + 1] for u, s in dataset.sequences.items()}
    assert torch.equal(training_counts(dataset, CoWatchConfig()).counts,
                       training_counts(SequenceDataset("toy", last_two, dataset.catalog), CoWatchConfig()).counts)


def test_cuts_score_disjoint_positions_with_their_own_retriever():
    dataset = _toy_dataset()
    taken = set()
    for cut in (10, 20, 30):
        counts = held_out_counts(dataset, cut)
        positions = held_out_positions(dataset, counts, skip_last=cut - 10)
        assert taken.isdisjoint(positions)
        taken |= set(positions)
        truncated = truncated_dataset(dataset, counts)
        for user, position in positions:
            assert len(dataset.train(user)) - cut <= position < len(dataset.train(user)) - (cut - 10)
            assert len(truncated.sequences[user]) <= position
    tensors = candidate_examples(make_lrurec(), dataset, sorted(taken))
    assert tensors["candidate_scores"].shape == tensors["candidate_ids"].shape
    assert (tensors["candidate_scores"][:, :-1] >= tensors["candidate_scores"][:, 1:]).all()  # retriever order


def test_validation_users_are_split_off_whole():
    users = torch.arange(1, 401).repeat_interleave(3)
    examples = HeldOutExamples(users, torch.zeros_like(users), torch.zeros_like(users),
                               torch.zeros(len(users), 20, dtype=torch.long), torch.zeros(len(users), 20),
                               torch.zeros_like(users))
    train, validation = split_by_user(examples)
    assert set(train.users.tolist()).isdisjoint(validation.users.tolist())
    assert len(train) + len(validation) == len(examples)
    assert 0.08 < len(validation) / len(examples) < 0.22


def test_fusion_is_a_weighted_sum_of_named_opinions():
    opinions = {"retriever": torch.tensor([0.0, -1.0, -2.0]), "cowatch": torch.tensor([0.0, 3.0, 0.0]),
                "llm": torch.tensor([-3.0, -2.0, -0.1])}
    assert order(fused_scores(opinions, FusionWeights(1.0, 0.0, 0.0))) == [0, 1, 2]
    assert order(fused_scores(opinions, FusionWeights(0.0, 0.0, 1.0))) == [2, 1, 0]
    assert order(fused_scores(opinions, FusionWeights(1.0, 1.0, 0.0))) == [1, 0, 2]
    assert torch.allclose(fused_scores(opinions, FusionWeights(2.0, 0.5, 1.0)),
                          2 * opinions["retriever"] + 0.5 * opinions["cowatch"] + opinions["llm"])
    # ties: retriever order
    assert order(fused_scores({"retriever": torch.zeros(3)}, FusionWeights(1.0, 0.0, 0.0))) == [0, 1, 2]
    with pytest.raises(ValueError, match="llm opinion is missing"):
        fused_scores({"retriever": torch.zeros(3)}, FusionWeights())
    with pytest.raises(ValueError, match=">= 0"):
        FusionWeights(retriever=-1.0)


def test_prior_weights_are_recovered_by_maximum_likelihood():
    generator = torch.Generator().manual_seed(0)
    retriever = torch.randn(4000, 20, generator=generator) * 2
    cowatch = torch.rand(4000, 20, generator=generator) * 3
    truth = FusionWeights(retriever=1.5, cowatch=0.8, llm=0.0)
    targets = torch.multinomial(torch.softmax(prior_scores(retriever, cowatch, truth), dim=-1), 1,
                                generator=generator).flatten()
    fitted = fit_prior_weights(retriever, cowatch, targets)
    assert fitted.retriever == pytest.approx(1.5, abs=0.15) and fitted.cowatch == pytest.approx(0.8, abs=0.1)


def _rows(llm=None) -> RankingRows:
    retriever = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    cowatch = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    return RankingRows([[1], [2]], torch.tensor([[4, 5, 6], [7, 8, 9]]), retriever, cowatch, torch.tensor([2, 1]),
                       total_users=4, llm=llm)


def test_target_ranks_and_the_ablation_follow_the_fusion():
    rows = _rows(llm=torch.log(torch.tensor([[0.1, 0.2, 0.7], [0.2, 0.7, 0.1]])))
    assert target_ranks(rows, FusionWeights(1.0, 0.0, 0.0)).tolist() == [3, 2]
    assert target_ranks(rows, FusionWeights(1.0, 2.0, 0.0)).tolist() == [1, 2]
    assert target_ranks(rows, FusionWeights(0.0, 0.0, 1.0)).tolist() == [1, 1]
    metrics = ranking_metrics(rows, FusionWeights(0.0, 0.0, 1.0))
    assert metrics["subset"]["R@1"] == 1.0 and metrics["overall"]["R@1"] == 0.5  # two more users, both misses
    result = ablation(rows, FusionWeights(1.0, 2.0, 1.0))
    assert set(result) == {"retriever", "llm_alone", "retriever+llm", "retriever+cowatch", "retriever+cowatch+llm",
                           "final", "llm_contribution"}
    assert result["retriever"]["subset"]["N@10"] == pytest.approx((1 / math.log2(4) + 1 / math.log2(3)) / 2, abs=1e-4)
    # title likelihood pointing at each target lifts both to the top: its contribution is the final minus the final
    # without it, and only a final that weighs it reports one
    titled = replace(rows, titles=torch.log(torch.tensor([[0.01, 0.01, 0.98], [0.01, 0.98, 0.01]])))
    final = FusionWeights(1.0, 0.0, 0.0, titles=4.0)
    gain = ablation(titled, final)["titles_contribution"]
    assert gain["N@10"] == pytest.approx(1 - (1 / math.log2(4) + 1 / math.log2(3)) / 2, abs=1e-4)
    assert "titles_contribution" not in ablation(titled, FusionWeights(1.0, 2.0, 1.0))


def test_an_opinions_weight_is_the_smallest_with_the_best_ndcg():
    base = FusionWeights(1.0, 0.0, 0.0)
    # title likelihood points at each row's target: weight 1 lifts both to the top, 0.5 only the second
    rows = replace(_rows(), titles=torch.log(torch.tensor([[0.1, 0.1, 0.8], [0.1, 0.8, 0.1]])))
    chosen, by_weight = choose_weight(rows, base, "titles")
    assert chosen == replace(base, titles=1.0)  # 2 and 4 tie with 1: the smaller
    assert by_weight[0.0] < by_weight[0.5] < by_weight[1.0] == by_weight[4.0] == 1.0
    # an opinion with nothing to say (the same score for every candidate) ties every weight: 0
    assert choose_weight(replace(_rows(), titles=torch.zeros(2, 3)), base, "titles")[0].titles == 0.0
    assert choose_weight(rows, base, "titles", grid=(0.0, 0.5))[0].titles == 0.5


def _examples(count: int) -> list[RankingExample]:
    generator = torch.Generator().manual_seed(1)
    return [RankingExample((int(i[0]),), tuple(i[1:].tolist()), int(a))
            for i, a in zip((torch.randperm(len(TINY_TITLES), generator=generator)[:21] + 1 for _ in range(count)),
                            torch.randint(20, (count,), generator=generator))]


def test_shuffled_prompts_keep_the_answer_and_the_prior_on_their_films(tiny_tokenizer):
    examples = _examples(6)
    priors = torch.arange(6 * 20, dtype=torch.float32).view(6, 20)
    config = PromptConfig(max_title_tokens=4)
    plain = ExampleDataset(examples, tiny_tokenizer, make_catalog(), config, "residual", priors)
    shuffled = ExampleDataset(examples, tiny_tokenizer, make_catalog(), config, "residual", priors, shuffle_seed=3)
    moved = 0
    for example, prior, a, b in zip(examples, priors, plain, shuffled):
        assert a["answer"] == example.answer_index and a["prior"] == prior.tolist()
        # the film at the shuffled answer letter is the target, and its prior came with it
        assert b["prior"][b["answer"]] == prior[example.answer_index].item()
        assert sorted(b["prior"]) == sorted(prior.tolist())
        moved += b["answer"] != a["answer"]
    assert moved >= 4
    with pytest.raises(ValueError, match="residual loss needs"):
        ExampleDataset(examples, tiny_tokenizer, make_catalog(), config, "residual")


def candidate_lines(tokenizer, input_ids: list[int]) -> list[str]:
    """The candidate pool's lines of a tokenized prompt, in letter order."""
    text = tokenizer.decode(input_ids, skip_special_tokens=True)
    pool = text.split("Candidate pool:\n")[1].split("\n\n")[0]
    return pool.split("\n")


def test_evidence_notes_stay_with_their_films_in_shuffled_prompts(tiny_tokenizer):
    examples = _examples(4)
    cowatch = torch.arange(4 * 20, dtype=torch.float32).view(4, 20) / 10  # film j of row i: score (20i + j) / 10
    config = PromptConfig(max_title_tokens=4, evidence=True)
    catalog = make_catalog()
    shuffled = ExampleDataset(examples, tiny_tokenizer, catalog, config, "letters", shuffle_seed=5, cowatch=cowatch)
    for row, (example, item) in enumerate(zip(examples, shuffled)):
        lines = candidate_lines(tiny_tokenizer, item["input_ids"])
        assert len(lines) == 20
        for line in lines:
            rank = int(line.split("[rank ")[1].split(",")[0])  # the film's 1-based retriever rank
            title = build_prompt(tiny_tokenizer, [], [catalog[example.candidates[rank - 1]].title], config,
                                 notes=["x"]).candidate_titles[0]
            assert line.endswith(f"[rank {rank}, co-watch {(20 * row + rank - 1) / 10:.1f}]") and title in line
        answer_line = lines[item["answer"]]
        assert f"[rank {example.answer_index + 1}," in answer_line
    with pytest.raises(ValueError, match="co-watch scores"):
        ExampleDataset(examples, tiny_tokenizer, catalog, config, "letters")


def test_prompt_notes_are_required_exactly_with_evidence(tiny_tokenizer):
    titles = list(TINY_TITLES[:3])
    assert evidence_note(3, 1.44) == "rank 3, co-watch 1.4" and evidence_note(1, 0.0) == "rank 1, co-watch 0.0"
    with_notes = build_prompt(tiny_tokenizer, titles[:1], titles, PromptConfig(evidence=True), notes=["a", "b", "c"])
    assert f"(B) {titles[1]} [b]\n" in with_notes.text and with_notes.candidate_titles == titles
    with pytest.raises(ValueError, match="one note per candidate"):
        build_prompt(tiny_tokenizer, [], titles, PromptConfig(evidence=True))
    with pytest.raises(ValueError, match="no notes"):
        build_prompt(tiny_tokenizer, [], titles, PromptConfig(), notes=["a", "b", "c"])


def test_residual_loss_equals_a_hand_computation(tiny_tokenizer):
    model = make_llama(tiny_tokenizer, seed=3)
    examples = _examples(3)
    priors = torch.randn(3, 20, generator=torch.Generator().manual_seed(2))
    data = ExampleDataset(examples, tiny_tokenizer, make_catalog(), PromptConfig(max_title_tokens=4), "residual",
                          priors, shuffle_seed=0)
    batch = collate_letters(tiny_tokenizer.pad_token_id)([data[i] for i in range(3)])
    letter_ids = letter_token_ids(tiny_tokenizer)
    expected = []
    for i in range(3):  # one prompt at a time, the full logits, the prior of the film at each letter
        with torch.no_grad():
            letters = model(input_ids=torch.tensor([data[i]["input_ids"]])).logits[0, -1][letter_ids]
        scores = torch.log_softmax(letters, dim=0) + torch.tensor(data[i]["prior"])
        expected.append(-(scores[data[i]["answer"]] - torch.logsumexp(scores, dim=0)))
    with torch.no_grad():
        loss = letter_loss(model, batch, letter_ids)
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)


def test_letter_logits_are_fp32_over_a_bf16_model(tiny_tokenizer):
    """The final norm and the letter rows run in fp32: distinct scores are not rounded onto bf16's grid."""
    model = make_llama(tiny_tokenizer, seed=4)
    letter_ids = letter_token_ids(tiny_tokenizer)
    prompts = ["### Instruction:\nrank\n\n### Response:\n", "### Input:\n(A) Alien (1979)\n\n### Response:\n"]
    batch = tokenize_prompts(tiny_tokenizer, prompts, "cpu")
    with torch.no_grad():
        reference = forward_letter_logits(model, batch, letter_ids)
        low = forward_letter_logits(model.to(torch.bfloat16), batch, letter_ids)
    assert low.dtype == torch.float32
    assert (low != low.to(torch.bfloat16).float()).any()  # not bf16 values
    assert all(row.unique().numel() == 20 for row in low)  # distinct scores stay distinct
    assert torch.allclose(low, reference, atol=0.05 * reference.abs().max().item())


def test_spearman_of_same_and_reversed_orders():
    from recsys.metrics import spearman

    assert spearman([0.1, 0.5, 0.2], [1.0, 3.0, 2.0]) == pytest.approx(1.0)
    assert spearman(torch.tensor([0.1, 0.5, 0.2]), torch.tensor([3.0, 1.0, 2.0])) == pytest.approx(-1.0)


def _held_out_toy(dataset: SequenceDataset) -> tuple[dict[str, torch.Tensor], HeldOutExamples]:
    """Held-out examples of two cuts (10, 20), each scored by its own (differently seeded) retriever's top-30."""
    tensors: dict[str, torch.Tensor] = {}
    for seed, cut in enumerate((10, 20)):
        positions = held_out_positions(dataset, held_out_counts(dataset, cut), skip_last=cut - 10)
        part = candidate_examples(make_lrurec(seed=seed), dataset, positions, k=30)
        part["cuts"] = torch.full_like(part["users"], cut)
        tensors = {k: torch.cat([tensors[k], v]) if k in tensors else v for k, v in part.items()}
    examples = HeldOutExamples(*(tensors[k].long() if k != "candidate_scores" else tensors[k]
                                 for k in ("users", "positions", "cuts", "candidate_ids", "candidate_scores",
                                           "answer_index")))
    return tensors, examples


def test_training_rows_hold_the_candidates_the_served_pool_keeps():
    """Held-out rows for training: with pool 30, of each row's top-30 the 20 the prior ranks best, with co-watch
    counted from the sequences its own truncated retriever saw, in the retriever's order, the row kept exactly
    when its target is among them (or, for validation, kept as a miss), the target's own rank kept; with pool 20
    the rows whose target is in the top-20, unchanged."""
    dataset = _toy_dataset(num_users=12)
    _, examples = _held_out_toy(dataset)
    config, weights = CoWatchConfig(3, 3), FusionWeights(0.3, 2.0, 0.0)
    histories = examples.histories(dataset)
    cowatch = torch.zeros(examples.candidate_ids.shape)  # counted here from each cut's truncated sequences
    for row, cut in enumerate(examples.cuts.tolist()):
        counts = CoWatchCounts.from_sequences(truncated_sequences(dataset, cut).values(), dataset.num_items, config)
        cowatch[row] = counts.scores([histories[row]], examples.candidate_ids[row:row + 1])[0]
    prior = prior_scores(examples.candidate_scores, cowatch, weights)
    expected = []
    for row in range(len(examples)):
        best = sorted(sorted(range(30), key=lambda j: (-prior[row, j].item(), j))[:20])
        expected.append((row, best, int(examples.answer_index[row]) in best))
    pooled = pooled_heldout_rows(examples, dataset, config, weights, pool=30)
    answered = [(row, best) for row, best, found in expected if found]
    assert len(pooled) == len(answered)
    for i, (row, best) in enumerate(answered):
        assert pooled.candidate_ids[i].tolist() == examples.candidate_ids[row][best].tolist()
        assert torch.equal(pooled.retriever_scores[i], examples.candidate_scores[row][best])
        assert torch.allclose(pooled.cowatch[i], cowatch[row][best])
        assert pooled.candidate_ids[i][pooled.target_index[i]] == dataset.train(int(examples.users[row]))[
            int(examples.positions[row])]
        assert pooled.retriever_ranks()[i] == examples.answer_index[row] + 1
    brought_in = sum(int(examples.answer_index[row]) >= 20 for row, _ in answered)
    dropped = [row for row, _, found in expected if not found and int(examples.answer_index[row]) < 20]
    assert brought_in > 0 and dropped  # the pool changed the rows both ways, so the test has teeth
    with_misses = pooled_heldout_rows(examples, dataset, config, weights, pool=30, misses=True)
    assert len(with_misses) == len(examples) and int((with_misses.target_index == -1).sum()) == sum(
        not found for _, _, found in expected)
    assert with_misses.subset().sum() == int((examples.answer_index < 20).sum())  # dropped top-20 rows: misses

    paper = pooled_heldout_rows(examples, dataset, config, weights, pool=20)
    top20 = (examples.answer_index < 20).nonzero().flatten()
    assert paper.candidate_ids.tolist() == examples.candidate_ids[top20, :20].tolist()
    assert paper.target_index.tolist() == examples.answer_index[top20].tolist()
    assert torch.allclose(paper.cowatch, cowatch[top20, :20])


def test_training_reads_the_pool_of_its_prior(tmp_path):
    """`training_data` on held-out examples trains and validates on the 20 the served pool keeps;
    `--pool 20` gives the retriever's top-20."""
    from safetensors.torch import save_file

    from recsys.ranker.heldout import EXAMPLES_FILE
    from recsys.ranker.prompt import PromptConfig
    from recsys.ranker.served import ServedConfig
    from recsys.ranker.train import RankerTrainConfig, training_data

    dataset = _toy_dataset(num_users=12)
    tensors, examples = _held_out_toy(dataset)
    save_file(tensors, tmp_path / EXAMPLES_FILE)
    config, weights = CoWatchConfig(3, 3), FusionWeights(0.3, 2.0, 1.0)
    training_counts(dataset, config).save(tmp_path)
    (tmp_path / "prior.json").write_text(json.dumps({"cowatch": {"window": 3, "span": 3},
                                                     "weights": {"retriever": 0.3, "cowatch": 2.0, "llm": 1.0},
                                                     "pool": 30}))
    ServedConfig(30, config, FusionWeights(0.3, 2.0, 0.0), PromptConfig()).save_pretrained(tmp_path)  # as --write
    train_part, val_part = split_by_user(examples)
    seen = {}
    for pool in (None, 20):
        data = training_data(RankerTrainConfig(examples="heldout", heldout_dir=str(tmp_path), prior=str(tmp_path),
                                               loss="residual", pool=pool, val_examples=10**6), dataset)
        rows = pooled_heldout_rows(train_part, dataset, config, weights, pool or 30)
        assert [e.candidates for e in data.examples] == [tuple(ids) for ids in rows.candidate_ids.tolist()]
        assert [e.answer_index for e in data.examples] == rows.target_index.tolist()
        assert torch.allclose(data.priors, prior_scores(rows.retriever_scores, rows.cowatch, weights))
        assert len(data.validation) == len(pooled_heldout_rows(val_part, dataset, config, weights, pool or 30,
                                                               misses=True))
        seen[pool] = data.examples
    assert seen[None] != seen[20]  # the pool of 30 changed what the LLM trains on


def _chain_dataset(num_users: int = 40, seed: int = 3) -> SequenceDataset:
    """Short sequences (as on Amazon) where the next item is usually the one after the last, modulo the catalog."""
    generator = torch.Generator().manual_seed(seed)
    items = len(TINY_TITLES)
    sequences = {}
    for user in range(1, num_users + 1):
        item = int(torch.randint(items, (1,), generator=generator)) + 1
        sequence = [item]
        for _ in range(8):
            step = 1 if torch.rand(1, generator=generator).item() < 0.8 else int(torch.randint(items, (1,),
                                                                                            generator=generator))
            sequence.append((sequence[-1] - 1 + step) % items + 1)
        sequences[user] = sequence
    return SequenceDataset("toy", sequences, make_catalog())


def test_the_prior_on_validation_finds_the_cowatch_signal_and_never_reads_the_test_items():
    from recsys.ranker.prior import choose_on_validation

    dataset = _chain_dataset()
    model = make_lrurec(dataset.num_items)  # random: its order knows nothing, co-watch knows the chain
    choice = choose_on_validation(model, dataset, windows=(1, 2), spans=(1, 3), pools=(20, 30))
    assert choice.weights.cowatch > choice.weights.retriever
    assert choice.validation["prior_N@10"] > choice.validation["retriever_N@10"]
    assert choice.pool in (20, 30) and len(choice.grid) == 4
    changed = SequenceDataset("toy", {u: s[:-1] + [s[-1] % dataset.num_items + 1]
                                      for u, s in dataset.sequences.items()}, dataset.catalog)
    again = choose_on_validation(model, changed, windows=(1, 2), spans=(1, 3), pools=(20, 30))
    assert again.to_json() == choice.to_json()  # every test item changed: nothing moved


def test_writing_a_prior_keeps_what_the_folder_serves_beside_it(tmp_path):
    """`recsys.ranker.prior --write` into a new folder serves the prior alone (the LLM shown at weight 0, the paper's
    prompt in the data set's words); into a trained ranker's folder it changes only the prior's part."""
    from recsys.ranker.prior import PriorChoice, serve_prior
    from recsys.ranker.prompt import PromptConfig
    from recsys.ranker.served import ServedConfig

    choice = PriorChoice(CoWatchConfig(2, 4), FusionWeights(0.7, 1.1, 1.0), {}, [], pool=30)
    assert serve_prior(tmp_path, choice, "game") == ServedConfig(30, CoWatchConfig(2, 4),
                                                                 FusionWeights(0.7, 1.1, 0.0, 0.0),
                                                                 PromptConfig(domain="game"))
    trained = ServedConfig(50, CoWatchConfig(3, 3), FusionWeights(0.4, 1.8, 0.25, 0.5),
                           PromptConfig(max_history=10, years=False))
    trained.save_pretrained(tmp_path)
    assert serve_prior(tmp_path, choice, "movie") == ServedConfig(30, CoWatchConfig(2, 4),
                                                                  FusionWeights(0.7, 1.1, 0.25, 0.5), trained.prompt)
    (tmp_path / "served_config.json").write_text("{")  # damaged: refused, never reset under a trained adapter
    with pytest.raises(CheckpointError, match="served_config.json is corrupt"):
        serve_prior(tmp_path, choice, "movie")


@pytest.mark.parametrize("flags", [{"examples": "heldout"}, {"pool": 30}])
def test_over_prior_is_refused_where_it_would_be_ignored(flags):
    from recsys.ranker.train import RankerTrainConfig, training_data

    with pytest.raises(ValueError, match="--over-prior is for the paper's examples"):
        training_data(RankerTrainConfig(over_prior=True, **flags), dataset=None)


@pytest.mark.parametrize("flags", [{"over_prior": False, "val_users": 100}, {"over_prior": True, "val_users": None}])
def test_served_examples_are_refused_without_their_stage_one_or_validation_sample(flags):
    from recsys.ranker.train import RankerTrainConfig, training_data

    with pytest.raises(ValueError, match="served examples need --over-prior"):
        training_data(RankerTrainConfig(examples="served", **flags), dataset=None)


def test_served_examples_keep_the_validation_users_out_and_need_their_target():
    import random

    from recsys.ranker.rows import RankingRows
    from recsys.ranker.train import served_examples

    def rows(users: list[int], targets: list[int]) -> RankingRows:
        ids = torch.arange(len(users) * 20).view(len(users), 20) + 1
        return RankingRows([[u] for u in users], ids, torch.zeros(ids.shape), torch.zeros(ids.shape),
                           torch.tensor(targets), 10, users=torch.tensor(users))

    every = rows([1, 2, 3, 4, 5, 6], [0, 3, -1, 19, 7, 2])
    validation = rows([2, 6], [3, 2])
    kept = served_examples(every, validation, None, random.Random(0))
    assert kept.users.tolist() == [1, 4, 5]  # 3's target was dropped by the pool; 2 and 6 choose the weight
    assert [e.answer_index for e in kept.ranking_examples()] == [0, 19, 7]
    assert kept.ranking_examples()[1].candidates == tuple(every.candidate_ids[3].tolist())
    sample = served_examples(every, validation, 2, random.Random(0))
    assert len(sample) == 2 and set(sample.users.tolist()) < {1, 4, 5}
    assert sample.users.tolist() == sorted(sample.users.tolist())
    assert sample.users.tolist() == served_examples(every, validation, 2, random.Random(0)).users.tolist()


def test_a_ranker_training_reads_its_data_sets_folders_and_writes_none_of_the_committed_ones():
    from pathlib import Path

    from recsys.folders import CHECKPOINTS, RUNS
    from recsys.ranker.train import RankerTrainConfig

    for dataset in ("ml-latest-small", "beauty"):
        config = RankerTrainConfig(dataset=dataset)
        assert Path(config.retriever) == CHECKPOINTS / f"lrurec-{dataset}"
        assert (Path(config.prior) / "served_config.json").is_file()  # the folder its app serves
        assert Path(config.output) == RUNS / f"ranker-{dataset}"
    assert Path(RankerTrainConfig(dataset="beauty").prior) == CHECKPOINTS / "llamarec-beauty"
    assert RankerTrainConfig(dataset="beauty", output="mine").output == "mine"
