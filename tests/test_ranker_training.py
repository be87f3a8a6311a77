"""The CPU ranker recipe: letter loss, fp32 LoRA over bf16 weights, resumable runs, held-out candidates."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import TINY_TITLES, make_catalog, make_llama, make_lrurec, make_tokenizer
from recsys.data.preprocess import SequenceDataset
from recsys.ranker.examples import RankingExample
from recsys.ranker.heldout import (candidate_examples, held_out_counts, held_out_positions, load_held_out,
                                   truncated_dataset)
from recsys.ranker.model import LoraSettings, add_lora
from recsys.ranker.prompt import PromptConfig, build_prompt, item_text, item_texts
from recsys.ranker.train import ExampleDataset, RankerTrainConfig, build_trainer, collate_letters, letter_loss
from recsys.ranker.verbalizer import letter_token_ids


def toy_examples(count: int, seed: int) -> list[RankingExample]:
    """Examples whose answer is always the last candidate (a rule a tiny model can learn)."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        items = (torch.randperm(len(TINY_TITLES), generator=generator)[:21] + 1).tolist()
        examples.append(RankingExample((items[0],), tuple(items[1:]), 19))
    return examples


def test_letter_loss_equals_a_hand_computation(tiny_tokenizer):
    model = make_llama(tiny_tokenizer, seed=3)
    catalog = make_catalog()
    examples = toy_examples(3, seed=0)
    examples[1] = RankingExample(examples[1].history[:1], examples[1].candidates, 4)
    data = ExampleDataset(examples, tiny_tokenizer, catalog, PromptConfig(max_title_tokens=4), loss="letters")
    batch = collate_letters(tiny_tokenizer.pad_token_id)([data[i] for i in range(3)])
    letter_ids = letter_token_ids(tiny_tokenizer)
    expected = []
    for i, example in enumerate(examples):  # one prompt at a time, no padding, the full logits
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([data[i]["input_ids"]])).logits[0, -1]
        letters = logits[letter_ids]
        expected.append(-(letters[example.answer_index] - torch.logsumexp(letters, dim=0)))
    with torch.no_grad():
        loss = letter_loss(model, batch, letter_ids)
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), abs=1e-5)


def test_lora_weights_stay_fp32_over_bf16_base_weights(tiny_tokenizer):
    model = add_lora(make_llama(tiny_tokenizer).to(torch.bfloat16), LoraSettings())
    trainable = {name: p.dtype for name, p in model.named_parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert set(trainable.values()) == {torch.float32}
    assert frozen == {torch.bfloat16}
    data = ExampleDataset(toy_examples(2, seed=1), tiny_tokenizer, make_catalog(), PromptConfig(max_title_tokens=4),
                          loss="letters")
    loss = letter_loss(model, collate_letters(tiny_tokenizer.pad_token_id)([data[0], data[1]]),
                       letter_token_ids(tiny_tokenizer))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def _train(tmp_path, stop_at_step=None, resume=False, steps_seen=None):
    """Train a tiny LoRA ranker with the letter loss for 6 steps (or until `stop_at_step`); returns the trainer."""
    from transformers import TrainerCallback

    class RecordSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if steps_seen is not None:
                steps_seen.append(state.global_step)
            if stop_at_step and state.global_step >= stop_at_step:
                control.should_training_stop = True
                control.should_save = True

    from recsys.ranker.model import RankerLoadConfig

    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    model = add_lora(make_llama(tokenizer, seed=1), LoraSettings())
    config = RankerTrainConfig(output=str(tmp_path), loss="letters", lr=1e-3, batch_size=4, per_device_batch_size=2,
                               epochs=1, warmup_steps=1, eval_every=2)
    data = ExampleDataset(toy_examples(24, seed=2), tokenizer, make_catalog(), PromptConfig(max_title_tokens=3),
                          loss="letters")
    trainer = build_trainer(model, tokenizer, data, config, RankerLoadConfig(device="cpu"), [RecordSteps()])
    checkpoint = None
    if resume:
        from transformers.trainer_utils import get_last_checkpoint
        checkpoint = get_last_checkpoint(str(tmp_path / "trainer"))
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer, model


def test_resume_continues_from_the_saved_step(tmp_path):
    full, full_model = _train(tmp_path / "full")
    assert full.state.global_step == 6
    first, _ = _train(tmp_path / "split", stop_at_step=4)
    assert first.state.global_step == 4
    assert (tmp_path / "split" / "trainer" / "checkpoint-4").is_dir()
    steps: list[int] = []
    resumed, resumed_model = _train(tmp_path / "split", resume=True, steps_seen=steps)
    assert steps == [5, 6]  # it did not start over
    assert resumed.state.global_step == 6
    lora = {n: p for n, p in full_model.named_parameters() if "lora_" in n}
    for name, param in resumed_model.named_parameters():
        if "lora_" in name:  # same data order, optimizer state and schedule as the uninterrupted run
            assert torch.allclose(param, lora[name], atol=1e-6), name


def _toy_dataset(num_users: int = 6, length: int = 30) -> SequenceDataset:
    generator = torch.Generator().manual_seed(4)
    sequences = {u: (torch.randperm(len(TINY_TITLES), generator=generator)[:length] + 1).tolist()
                 for u in range(1, num_users + 1)}
    sequences[num_users] = sequences[num_users][:8]  # a short user: fewer held-out positions
    return SequenceDataset("toy", sequences, make_catalog())


def test_held_out_retriever_never_sees_the_positions_it_scores():
    dataset = _toy_dataset()
    counts = held_out_counts(dataset, holdout=10)
    assert counts[1] == 10 and counts[6] == 1  # 6 training items keep 5
    truncated = truncated_dataset(dataset, counts)
    positions = held_out_positions(dataset, counts)
    assert len(positions) == sum(counts.values())
    for user, position in positions:
        kept = truncated.sequences[user]
        assert len(kept) <= position  # the scored position lies after everything the second retriever got
        assert kept == dataset.train(user)[:len(kept)]
        # ...of which it trains on all but its own last two (used to select its checkpoint and left unused)
        assert len(truncated.train(user)) == len(kept) - 2
    for user in dataset.sequences:  # the real validation and test items never reach it
        assert dataset.sequences[user][-2] not in truncated.sequences[user][-2:] or counts[user] == 0


def test_held_out_examples_are_the_retrievers_top_k_in_its_order(tmp_path):
    from safetensors.torch import save_file

    dataset = _toy_dataset()
    counts = held_out_counts(dataset, holdout=10)
    retriever = make_lrurec()
    positions = held_out_positions(dataset, counts)
    tensors = candidate_examples(retriever, dataset, positions, k=30)
    assert tensors["candidate_ids"].shape[1] == 30
    assert 0 < int((tensors["answer_index"] < 20).sum()) < tensors["users"].numel() <= len(positions)
    for user, position, ids in zip(tensors["users"].tolist(), tensors["positions"].tolist(),
                                   tensors["candidate_ids"].tolist()):
        assert ids == retriever.retrieve([dataset.train(user)[:position]], 30)[0][0].tolist()
    save_file(tensors, tmp_path / "heldout_examples.safetensors")
    examples = load_held_out(tmp_path).ranking_examples(dataset)  # the rows whose target is in the top-20
    in_top20 = (tensors["answer_index"] < 20).nonzero().flatten().tolist()
    assert len(examples) == len(in_top20)
    for example, row in zip(examples, in_top20):
        user, position = int(tensors["users"][row]), int(tensors["positions"][row])
        history = dataset.train(user)[:position]
        top_ids, _ = retriever.retrieve([history], 20)
        assert list(example.candidates) == top_ids[0].tolist()
        assert example.history == tuple(history)
        assert example.target == dataset.train(user)[position]


def test_item_texts_are_the_titles_with_their_years_unless_asked():
    catalog = make_catalog()
    assert item_texts(catalog, [1, 2], PromptConfig()) == ["The Terminator (1984)", "Alien (1979)"]
    assert item_text(catalog[1], years=False) == "The Terminator"
    assert item_texts(catalog, [1], PromptConfig(years=False)) == ["The Terminator"]


def test_letter_loss_training_learns_a_toy_rule(tmp_path):
    from recsys.ranker.model import RankerLoadConfig
    from recsys.ranker.verbalizer import read_next_tokens

    torch.manual_seed(0)
    tokenizer, catalog = make_tokenizer(), make_catalog()
    model = make_llama(tokenizer, seed=1).train()
    prompt_config = PromptConfig(max_title_tokens=3)
    config = RankerTrainConfig(output=str(tmp_path), loss="letters", lr=3e-3, batch_size=16, per_device_batch_size=16,
                               epochs=2, warmup_steps=5, eval_every=1000)
    data = ExampleDataset(toy_examples(320, seed=0), tokenizer, catalog, prompt_config, loss="letters")
    build_trainer(model, tokenizer, data, config, RankerLoadConfig(device="cpu")).train()
    model.eval()
    held_out = toy_examples(50, seed=1)
    prompts = [build_prompt(tokenizer, catalog.titles(e.history), catalog.titles(e.candidates), prompt_config)
               for e in held_out]
    probabilities = [r.probabilities for r in read_next_tokens(model, tokenizer, prompts, letter_token_ids(tokenizer))]
    mean_answer_probability = sum(p[19].item() for p in probabilities) / len(probabilities)
    assert mean_answer_probability > 3 / 20  # chance is 1/20
    assert not math.isnan(mean_answer_probability)


def test_the_gpu_recipes_are_valid_training_commands():
    """Every `python -m recsys.ranker.train` line of bench/train_ranker_gpu.sh parses into a config (no stale flag):
    the residual recipe trains on the served pool (served_config.json's), the heldout recipe on LRURec's top-20
    (--pool 20), and the candidates it writes hold enough films for any pool the prior may choose."""
    import re
    import shlex
    from pathlib import Path

    from recsys.ranker.pool import MAX_POOL
    from recsys.ranker.train import parse_args

    script = (Path(__file__).resolve().parents[1] / "bench" / "train_ranker_gpu.sh").read_text().replace("\\\n", " ")
    budgets = re.search(r"budgets=\((.*)\)", script).group(1)
    commands = [line.split("python -m recsys.ranker.train", 1)[1] for line in script.splitlines()
                if "python -m recsys.ranker.train" in line]
    configs = [parse_args(shlex.split(c.replace('"${budgets[@]}"', budgets).replace('"$base"', "some/model")
                                      .replace('"$output"', "runs/out").replace("$dataset", "beauty")))[0]
               for c in commands]
    assert [(c.examples, c.loss, c.pool) for c in configs] == [("random", "vocab", None), ("heldout", "residual", None),
                                                               ("heldout", "vocab", None),
                                                               ("heldout", "letters", 20), ("random", "vocab", None)]
    # Amazon's: the paper's recipe on the data set's own retriever, over its served prior (MovieLens's: the paper's)
    amazon = configs[0]
    assert amazon.dataset == "beauty" and amazon.over_prior and amazon.prior == "checkpoints/llamarec-beauty"
    assert amazon.retriever == "checkpoints/lrurec-beauty" and not configs[-1].over_prior
    assert 'python -m recsys.ranker.title_weight --dataset "$dataset" --served "$output"' in script  # its titles
    assert [parse_args(["--zero-shot"])[2], parse_args([])[2]] == [True, False]
    assert all(c.base_model == "some/model" and c.max_history == 20 for c in configs)
    assert f"python -m recsys.retriever.candidates --k {MAX_POOL}" in script
