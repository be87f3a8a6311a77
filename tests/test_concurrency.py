"""Many users at once on one pipeline: Recommends that arrive together share one padded pass and rank as they would
alone; a race, compare-with-base Recommends and plain ones on threads at once raise nothing and give what each gives
alone (the model, its adapter switches and the tokenizer are used under one lock)."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import make_pipeline
from test_demo import adapted_llama

from recsys.ranker.cowatch import CoWatchConfig, CoWatchCounts
from recsys.ranker.fusion import FusionWeights

HISTORIES = [[1, 2, 3, 4], [5, 6, 7], [9, 10, 11, 12, 13], [2, 8, 14], [20, 21], [30, 31, 32, 33, 34, 35]]


@pytest.fixture(scope="module")
def pipeline(tiny_catalog, tiny_lrurec, tiny_tokenizer, tmp_path_factory):
    """An adapted tiny pipeline (so "compare with the base model" switches the adapter off) with co-watch counts."""
    counts = CoWatchCounts.from_sequences([[1, 2, 3, 4, 5, 6], [2, 3, 9, 10, 11]], len(tiny_catalog),
                                          CoWatchConfig(window=3, span=5))
    return make_pipeline(tiny_catalog, tiny_lrurec, adapted_llama(tiny_tokenizer), tiny_tokenizer,
                         fusion=FusionWeights(retriever=0.5, cowatch=1.5, llm=1.0), cowatch=counts,
                         adapter=tmp_path_factory.mktemp("adapter"), generation_max_new_tokens=40,
                         shared_results=0)  # every click computed: what is measured here is the model's sharing


def probabilities(result, field: str = "llm_probability") -> torch.Tensor:
    return torch.tensor([getattr(c, field) for c in result.candidates])


def on_threads(jobs: dict) -> dict:
    """Run each named job on its own thread, all released at once; {name: result or the exception it raised}."""
    start, outcomes = threading.Barrier(len(jobs)), {}

    def run(name, job):
        start.wait()
        try:
            outcomes[name] = job()
        except Exception as error:  # noqa: BLE001 (recorded for the assertion)
            outcomes[name] = error

    threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def test_recommends_that_arrive_together_share_a_pass_and_rank_as_alone(pipeline):
    alone = [pipeline.recommend(h) for h in HISTORIES]
    assert all(r.batch_size == 1 for r in alone)
    with pipeline.verbalizer.lock:  # the verbalizer is busy with an earlier pass while the class clicks
        threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, pipeline.recommend(HISTORIES[i])))
                   for i in range(len(HISTORIES))]
        together: dict = {}
        for thread in threads:
            thread.start()
        while len(pipeline.verbalizer._waiting) < len(HISTORIES):
            threading.Event().wait(0.001)
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(r.batch_size for r in together.values()) == [len(HISTORIES)] * len(HISTORIES)
    for i, solo in enumerate(alone):
        # left padding changes the matmul shapes: fp32 here agrees to ~1e-6 (bf16 on the served model to ~0.1 in
        # log-probability, as tests/test_serving.py measures for evaluation's batches)
        assert torch.allclose(probabilities(together[i]), probabilities(solo), atol=1e-5)
        assert together[i].ranking == solo.ranking and together[i].prompt == solo.prompt


def test_a_race_and_base_comparisons_and_plain_recommends_at_once_match_their_solo_runs(pipeline):
    race_for = pipeline.recommend(HISTORIES[0])
    jobs = {"race": lambda: pipeline.race(race_for)}
    jobs.update({f"base{i}": (lambda h=h: pipeline.recommend(h, compare_base=True, reverse_check=True))
                 for i, h in enumerate(HISTORIES[:3])})
    jobs.update({f"plain{i}": (lambda h=h: pipeline.recommend(h)) for i, h in enumerate(HISTORIES[3:])})
    solo = {name: job() for name, job in jobs.items()}
    assert solo["race"].error is None and solo["race"].num_generated_tokens > 0
    for _ in range(3):  # three rounds: the threads interleave differently each time
        outcomes = on_threads(jobs)
        assert not [o for o in outcomes.values() if isinstance(o, Exception)]
        race = outcomes["race"]
        assert race.error is None and race.generated_text == solo["race"].generated_text
        for name, result in outcomes.items():
            if name == "race":
                continue
            assert result.ranker_error is None, result.ranker_error
            assert torch.allclose(probabilities(result), probabilities(solo[name]), atol=1e-5), name
            if name.startswith("base"):  # the adapter was off for these passes only, and on again for the others
                for field in ("base_probability", "reversed_probability"):
                    assert torch.allclose(probabilities(result, field), probabilities(solo[name], field), atol=1e-5)
    assert pipeline.llm.model.active_adapter == "default"


def test_served_on_one_thread_the_same_mix_runs_every_pass_there(pipeline):
    """With the runner serving (the app's main thread on CPU), every pass runs on that one thread, and the results
    are those of inline runs."""
    import threading as threads

    solo = [pipeline.recommend(h, compare_base=True) for h in HISTORIES[:3]]
    ran_on, original = set(), pipeline.llm.model.forward

    def spy(*args, **kwargs):
        ran_on.add(threads.get_ident())
        return original(*args, **kwargs)

    pipeline.llm.model.forward = spy
    server = threads.Thread(target=pipeline.runner.serve, daemon=True)
    server.start()
    try:
        while not pipeline.runner.serving:
            threads.Event().wait(0.001)
        outcomes = on_threads({i: (lambda h=h: pipeline.recommend(h, compare_base=True))
                               for i, h in enumerate(HISTORIES[:3])})
        race = pipeline.race(solo[0])
    finally:
        pipeline.runner.stop()
        server.join(timeout=10)
        del pipeline.llm.model.forward
    assert ran_on == {server.ident} and race.error is None and race.num_generated_tokens > 0
    for i, result in outcomes.items():
        assert torch.allclose(probabilities(result), probabilities(solo[i]), atol=1e-5)
        assert torch.allclose(probabilities(result, "base_probability"), probabilities(solo[i], "base_probability"),
                              atol=1e-5)


def test_the_runner_hands_back_errors_and_runs_in_inference_mode():
    from recsys.model_runner import ModelRunner

    runner = ModelRunner()
    assert runner(torch.is_inference_mode_enabled) is True

    def fail():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        runner(fail)
    server = threading.Thread(target=runner.serve, daemon=True)
    server.start()
    while not runner.serving:
        threading.Event().wait(0.001)
    try:
        assert runner(threading.get_ident) == server.ident and runner(torch.is_inference_mode_enabled) is True
        with pytest.raises(ValueError, match="bad input"):
            runner(fail)
    finally:
        runner.stop()
        server.join(timeout=10)
    assert not runner.serving and runner(threading.get_ident) == threading.get_ident()  # inline again
