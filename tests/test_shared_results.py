"""Results shared between users who ask the same: one computation for a class clicking one history at once, a
repeated request answered without the model, failures never kept."""

from __future__ import annotations

import threading

import pytest
from conftest import make_pipeline

from recsys.shared_results import SharedResults


def test_a_key_asked_by_many_at_once_is_computed_once():
    shared, calls, gate = SharedResults(4), [], threading.Event()

    def compute():
        calls.append(1)
        gate.wait(timeout=10)  # still computing while the others ask
        return "result"

    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(shared.get("k", compute))) for _ in range(8)]
    for thread in threads:
        thread.start()
    while not shared._computing:
        threading.Event().wait(0.001)
    gate.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(calls) == 1 and sorted(outcomes) == [("result", False)] + [("result", True)] * 7


def test_the_oldest_result_goes_first_and_failures_are_not_kept():
    shared = SharedResults(2)
    for key in "abc":
        shared.get(key, lambda key=key: key.upper())
    assert len(shared) == 2 and shared.get("a", lambda: "again") == ("again", False)  # "a" was dropped
    assert shared.get("bad", lambda: None, keep=lambda r: r is not None) == (None, False)
    assert shared.get("bad", lambda: "fixed") == ("fixed", False)  # the failure was not kept
    assert SharedResults(0).get("a", lambda: 1) == (1, False)
    with pytest.raises(ValueError):
        SharedResults(-1)


def test_the_same_history_gets_one_computation_and_its_own_notices(tiny_catalog, tiny_lrurec, tiny_llama,
                                                                    tiny_tokenizer):
    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer)
    first = pipeline.recommend([1, 2, 3])
    passes = sum(pipeline.verbalizer.batch_sizes.values())
    again = pipeline.recommend([3, 1, 2, 3])  # "3" watched twice: the checked history is [1, 2, 3] again
    assert again.shared and not first.shared and again.candidates == first.candidates
    assert sum(pipeline.verbalizer.batch_sizes.values()) == passes  # no model call
    assert again.notices and not first.notices  # this request's own notice (the repeat collapsed)
    assert not pipeline.recommend([1, 2, 3], reverse_check=True).shared  # other options: computed


def test_a_failed_ranking_is_computed_again(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer, monkeypatch):
    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer)
    def out_of_memory(item):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pipeline.verbalizer, "submit", out_of_memory)
    assert "out of memory" in pipeline.recommend([4, 5]).ranker_error
    monkeypatch.undo()
    result = pipeline.recommend([4, 5])
    assert result.ranker_error is None and not result.shared


def test_presets_warmed_at_start_answer_their_first_click_without_the_model(tiny_catalog, tiny_lrurec, tiny_llama,
                                                                             tiny_tokenizer):
    from recsys.demo.handlers import DemoHandlers
    from recsys.demo.visit import Visit

    handlers = DemoHandlers.of(make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer))
    assert handlers.history.presets  # the tiny catalog holds the presets' titles
    handlers.history.warm_presets()
    name, ids = next(iter(handlers.history.presets.items()))
    session = handlers.history.load_preset(Visit(), name).visit
    results = handlers.results.recommend(session)
    assert results.last.recommendation.shared and "**shared**" in results.summary
