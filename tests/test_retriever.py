"""LRURec: parallel scan vs recurrence, causality, padding, metrics, checkpoint round trip, retrieval."""

import math

import pytest
import torch

from recsys.errors import CheckpointError
from recsys.metrics import metrics_from_ranks, ranks_of_targets
from recsys.retriever.checkpoint import load_model, save_checkpoint
from recsys.retriever.model import LRURec, LRURecConfig, lru_parallel_scan, lru_sequential_scan, pad_histories

SMALL = LRURecConfig(num_items=50, hidden_size=16, state_size=8, num_blocks=2, max_len=40)


def small_model(seed=0) -> LRURec:
    torch.manual_seed(seed)
    return LRURec(SMALL).eval()


@pytest.mark.parametrize("length", [1, 2, 8, 64])
def test_parallel_scan_equals_recurrence(length):
    torch.manual_seed(length)
    inputs = torch.randn(3, length, 5, dtype=torch.cfloat)
    lamb = torch.polar(torch.rand(5) * 0.2 + 0.79, torch.rand(5) * 6.28)
    assert torch.allclose(lru_parallel_scan(inputs, lamb), lru_sequential_scan(inputs, lamb), atol=1e-5)


def test_parallel_scan_rejects_non_power_of_two():
    with pytest.raises(ValueError):
        lru_parallel_scan(torch.zeros(1, 6, 2, dtype=torch.cfloat), torch.ones(2, dtype=torch.cfloat))


@pytest.mark.parametrize("length", [3, 7, 13, 33])
def test_model_parallel_equals_sequential_with_left_padding(length):
    model = small_model()
    items = torch.randint(1, SMALL.num_items + 1, (4, length))
    items[1, : length // 2] = 0  # left padding
    items[2, : length - 1] = 0  # a single real item
    parallel = model.hidden_states(items)
    sequential = model.hidden_states(items, sequential=True)
    real = items > 0
    assert torch.allclose(parallel[real], sequential[real], atol=1e-4)


def test_padding_does_not_leak():
    model = small_model()
    history = [5, 9, 2, 7]
    short = model.hidden_states(pad_histories([history], 40))[:, -1]
    alone = model.hidden_states(torch.tensor([history]))[:, -1]
    assert torch.allclose(short, alone, atol=1e-5)


def test_outputs_are_causal():
    model = small_model()
    items = torch.randint(1, SMALL.num_items + 1, (2, 21))
    changed = items.clone()
    changed[:, 12:] = torch.randint(1, SMALL.num_items + 1, (2, 9))
    before, after = model.hidden_states(items), model.hidden_states(changed)
    assert torch.allclose(before[:, :12], after[:, :12], atol=1e-5)
    assert not torch.allclose(before[:, 12:], after[:, 12:], atol=1e-3)


def test_retrieval_masks_history_and_padding():
    model = small_model()
    history = list(range(1, 31))
    ids, scores = model.retrieve([history, [3]], k=20)
    assert ids.shape == (2, 20)
    assert not set(ids[0].tolist()) & set(history) and 0 not in ids[0].tolist()
    assert 3 not in ids[1].tolist()
    assert torch.all(scores[:, :-1] >= scores[:, 1:])


def test_batch_retrieval_equals_one_by_one():
    model = small_model()
    histories = [[1, 2, 3], list(range(5, 45)), [7]]
    batch_ids, _ = model.retrieve(histories, k=10)
    for row, history in enumerate(histories):
        single_ids, _ = model.retrieve([history], k=10)
        assert batch_ids[row].tolist() == single_ids[0].tolist()


def test_training_step_lowers_loss():
    torch.manual_seed(0)
    model = LRURec(SMALL).train()
    items = torch.randint(1, SMALL.num_items + 1, (8, 16))
    inputs, labels = items[:, :-1], items[:, 1:]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model.loss(inputs, labels).item()
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(inputs, labels).backward()
        optimizer.step()
    assert model.loss(inputs, labels).item() < first - 1.0


def test_metrics_on_hand_made_ranks():
    metrics = metrics_from_ranks([1, 3, 11, math.inf], ks=(1, 5, 10))
    assert metrics["R@1"] == 0.25 and metrics["R@5"] == 0.5 and metrics["R@10"] == 0.5
    assert metrics["M@5"] == pytest.approx((1 + 1 / 3) / 4)
    assert metrics["N@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert metrics["N@10"] == metrics["N@5"]


def test_ranks_of_targets_counts_ties_against_the_target():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5], [3.0, 2.0, 1.0, 0.0]])
    assert ranks_of_targets(scores, torch.tensor([2, 0])).tolist() == [3, 1]


def test_checkpoint_round_trip(tmp_path):
    model = small_model(seed=3)
    save_checkpoint(model, tmp_path / "ckpt", metrics={"val": {"R@10": 0.5}})
    loaded = load_model(tmp_path / "ckpt")
    histories = [[1, 2, 3, 4], [9, 8]]
    assert torch.equal(model.score_next(histories), loaded.score_next(histories))
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()


def test_corrupt_checkpoint_names_the_fix(tmp_path):
    save_checkpoint(small_model(), tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="recsys.retriever.train"):
        load_model(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="recsys.retriever.train"):
        load_model(tmp_path / "missing")


def test_candidates_round_trip_and_coverage(tmp_path):
    from recsys.retriever.candidates import SplitCandidates, load_candidates, save_candidates

    split = SplitCandidates(users=torch.tensor([1, 2, 3], dtype=torch.int32),
                            targets=torch.tensor([5, 6, 7], dtype=torch.int32),
                            candidate_ids=torch.tensor([[5, 1], [2, 6], [1, 2]], dtype=torch.int32),
                            candidate_scores=torch.tensor([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0]]))
    assert split.coverage() == pytest.approx(2 / 3)
    assert split.target_positions().tolist() == [0, 1, -1]
    save_candidates({"test": split}, tmp_path)
    loaded = load_candidates(tmp_path)["test"]
    assert torch.equal(loaded.candidate_ids, split.candidate_ids) and loaded.candidate_ids.dtype == torch.int32


def test_training_takes_the_tie_order_flag():
    from recsys.retriever.train import parse_args

    assert parse_args([]).tie_order == "item"  # the paper's order by default
    assert parse_args(["--tie-order", "hash"]).tie_order == "hash"
