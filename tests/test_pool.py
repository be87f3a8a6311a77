"""The candidate pool: LRURec's top-P, the prior keeps 20; the app and evaluation keep the same 20 and score
them alike."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_pipeline

from recsys import NUM_CANDIDATES
from recsys.data.preprocess import SequenceDataset
from recsys.ranker.cowatch import CoWatchConfig, CoWatchCounts
from recsys.ranker.evaluate import RETRIEVER, all_user_ranks, ndcg10, ranking_metrics, rows_ndcg10, target_ranks
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.pool import keep_best
from recsys.ranker.rows import RankingRows, pool_trade, split_rows
from recsys.retriever.candidates import SplitCandidates, retrieve_split

PRIOR = FusionWeights(retriever=1.0, cowatch=1.0, llm=0.0)


def test_the_prior_keeps_its_best_in_the_retrievers_order():
    retriever = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    cowatch = torch.tensor([[0.0, 0.0, 0.0, 10.0, 0.0]])  # the 4th film is backed by co-watch
    assert keep_best(retriever, cowatch, PRIOR, keep=3).tolist() == [[0, 1, 3]]  # best 3: 4th, 1st, 2nd; LRURec order
    assert keep_best(retriever, torch.zeros(1, 5), PRIOR, keep=3).tolist() == [[0, 1, 2]]  # no co-watch: LRURec's top
    assert keep_best(retriever[:, :3], cowatch[:, :3], PRIOR, keep=3).tolist() == [[0, 1, 2]]  # nothing to choose


def test_the_retrievers_row_stays_its_own_ranking_and_dropped_targets_are_misses():
    """Row 0: LRURec rank 3, kept. Row 1: LRURec rank 15, dropped by the pool. Row 2: LRURec rank 30, kept by the
    prior (not in the paper's subset). A fourth user's target is nowhere."""
    retriever = torch.tensor([[3.0, 2.0, 1.0]] * 3)
    cowatch = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    rows = RankingRows([[1], [2], [3]], torch.tensor([[4, 5, 6], [7, 8, 9], [10, 11, 12]]), retriever, cowatch,
                       torch.tensor([2, -1, 0]), total_users=4, retriever_rank=torch.tensor([3.0, 15.0, 30.0]))
    assert rows.subset().tolist() == [True, True, False]
    assert target_ranks(rows, RETRIEVER).tolist() == [3, 15, 30]  # LRURec's own ranks, not its order of the pool
    assert target_ranks(rows, FusionWeights(2.0, 0.0, 0.0)).tolist() == [3, 15, 30]  # at any retriever weight
    assert target_ranks(rows, PRIOR).tolist() == [1, math.inf, 1]
    assert rows_ndcg10(rows, PRIOR) == pytest.approx(2 / 3)  # every row counts, the dropped target as 0
    assert ndcg10(rows, PRIOR) == pytest.approx(1 / 2)  # the paper's subset only: rows 0 and 1
    prior, retriever_metrics = ranking_metrics(rows, PRIOR), ranking_metrics(rows, RETRIEVER)
    assert prior["subset"]["R@10"] == 0.5 and prior["overall"]["R@10"] == 0.5  # 1 of 2; 2 of 4
    assert retriever_metrics["subset"]["R@10"] == 0.5 and retriever_metrics["overall"]["R@10"] == 0.25


def test_split_rows_keep_the_pools_best_and_add_the_targets_it_brings_in(tiny_catalog):
    """Four users, LRURec's top-25 each (ids 1..25 in order). User 1's target is LRURec's 2nd, user 2's its 23rd
    and backed by co-watch, user 3's its 24th without support, user 4's its 20th, pushed out by the films co-watch
    backs for user 4: pooled, user 2 joins the rows, user 3 does not, user 4 stays as a miss."""
    dataset = SequenceDataset("tiny", {1: [30, 31, 32], 2: [33, 34, 35], 3: [36, 37, 38], 4: [39, 40, 41]},
                              tiny_catalog)
    ids = torch.arange(1, 26, dtype=torch.int32).expand(4, -1).clone()
    candidates = SplitCandidates(torch.tensor([1, 2, 3, 4], dtype=torch.int32),
                                 torch.tensor([2, 23, 24, 20], dtype=torch.int32),
                                 ids, torch.linspace(5, 0, 25).expand(4, -1).clone())
    sequences = [[34, 23]] * 5 + [[40, i] for i in (21, 22, 23, 24, 25) for _ in range(5)]  # 34 -> 23; 40 -> 21..25
    counts = CoWatchCounts.from_sequences(sequences, len(tiny_catalog), CoWatchConfig(1, 1))
    paper = split_rows(dataset, "test", candidates, counts)  # LRURec's top-20: users 1 and 4 are in the subset
    assert paper.candidate_ids.tolist() == [list(range(1, 21))] * 2 and paper.target_index.tolist() == [1, 19]
    pooled = split_rows(dataset, "test", candidates, counts, pool=25, weights=FusionWeights(0.4, 1.8, 0.0))
    assert len(pooled) == 3 and pooled.total_users == 4
    assert 23 in pooled.candidate_ids[1].tolist() and pooled.candidate_ids.shape == (3, NUM_CANDIDATES)
    assert pooled.retriever_ranks().tolist() == [2, 23, 20] and pooled.subset().tolist() == [True, False, True]
    assert pooled.target_index[2] == -1 and 20 not in pooled.candidate_ids[2].tolist()  # dropped: a miss
    assert pool_trade(pooled) == {"subset_targets_dropped": 1, "targets_brought_in": 1}
    users = [1, 2, 3, 4]  # two systems' ranks pair user by user, whichever rows each has
    assert all_user_ranks(paper, RETRIEVER, users) == [2, math.inf, math.inf, 20]
    assert all_user_ranks(pooled, RETRIEVER, users) == [2, 23, math.inf, 20]
    assert pooled.candidate_ids[1].tolist() == sorted(pooled.candidate_ids[1].tolist())  # still LRURec's order
    with pytest.raises(ValueError, match="--k 30"):
        split_rows(dataset, "test", candidates, counts, pool=30, weights=FusionWeights(0.4, 1.8, 0.0))


def test_evaluation_rows_hold_the_candidates_the_app_serves(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer):
    """On a tiny data set with co-watch counts that reorder LRURec's top-30, `split_rows` with the pool gives every
    row exactly the candidates `RetrievalStage.retrieve` serves for that history, in the same order."""
    sequences = {u: [(u * 7 + k * 5) % len(tiny_catalog) + 1 for k in range(8)] for u in range(1, 13)}
    dataset = SequenceDataset("tiny", sequences, tiny_catalog)
    counts = CoWatchCounts.from_sequences([dataset.train(u) for u in sorted(sequences)], len(tiny_catalog),
                                          CoWatchConfig(3, 3))
    weights = FusionWeights(0.4, 1.8, 0.0)
    candidates = retrieve_split(tiny_lrurec, dataset, "test", k=30)
    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer, cowatch=counts, pool=30,
                             fusion=weights)
    every = split_rows(dataset, "test", candidates, counts, pool=30, weights=weights)
    assert len(every) > 0
    moved = 0
    for history, ids in zip(every.histories, every.candidate_ids.tolist()):
        served = [c.item_id for c in pipeline.retrieval.retrieve(pipeline.retrieval.check_history(history)[0])[0]]
        assert served == ids
        moved += ids != tiny_lrurec.retrieve([history], NUM_CANDIDATES)[0][0].tolist()
    assert moved > 0  # the pool changed someone's candidates, so the comparison has teeth


def test_the_app_keeps_what_evaluation_keeps(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer):
    """RetrievalStage.retrieve with a pool keeps the prior's best 20 of LRURec's top-P, in LRURec's order, each with
    LRURec's rank: the same choice `keep_best` makes for evaluation."""
    history = [1, 2, 3]
    plain = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer)
    top = tiny_lrurec.retrieve([history], 30)[0][0].tolist()
    counts = CoWatchCounts.from_sequences([[3, top[27]]] * 5, len(tiny_catalog), CoWatchConfig(1, 1))  # backs #28
    pooled = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer, cowatch=counts, pool=30,
                           fusion=FusionWeights(0.4, 1.8, 0.0))
    served, _ = pooled.retrieval.retrieve(history)
    assert [c.item_id for c in plain.retrieval.retrieve(history)[0]] == top[:NUM_CANDIDATES]
    assert top[27] in [c.item_id for c in served] and len(served) == NUM_CANDIDATES
    assert [c.retriever_rank for c in served] == sorted(c.retriever_rank for c in served)
    assert all(top[c.retriever_rank - 1] == c.item_id for c in served)
    assert [c.letter for c in served][:3] == ["A", "B", "C"]
