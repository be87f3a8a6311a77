"""The Gradio app: handlers called directly, then the launched app over gradio_client (8 concurrent sessions)."""

import json
import os
import re
import threading
from pathlib import Path
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import gradio as gr
import pandas as pd
import pytest
from conftest import make_catalog, make_lrurec, make_pipeline

import app
from bench.common import PageSession, free_port
from recsys.demo import history as demo_history
from recsys.demo import race as demo_race
from recsys.demo import pages
from recsys.data.catalog import Catalog, Item
from recsys.demo.handlers import DemoHandlers
from recsys.demo.history import PRESETS
from recsys.demo.visit import Visit
from recsys.demo.markdown import HELD_OUT
from recsys.demo.race import RACE_INTRO, RaceView
from recsys.demo.results import STALE, STALE_CHART, ResultsView
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.generation import GenerationResult
from recsys.ranker.model import TRAIN_COMMAND as RANKER_TRAIN_COMMAND
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, TRAIN_COMMAND


@pytest.fixture(scope="module")
def handlers(tiny_pipeline):
    """The app's handlers over the shared tiny pipeline."""
    return DemoHandlers.of(tiny_pipeline)


@pytest.fixture(scope="module")
def typed_handlers(tiny_llama, tiny_tokenizer):
    """Handlers over the tiny catalog plus titles that trip naive matching: all digits ("300", where item id 300
    would be another film), a partial match ("Lifeboat") and an alternative title ("The Boat" for Das Boot)."""
    tiny = make_catalog().items
    extra = [("300 (2007)", ()), ("Lifeboat (1944)", ()), ("Das Boot (1981)", ("The Boat",))]
    catalog = Catalog([*tiny, *(Item(len(tiny) + n, title, int(title[-5:-1]), ("Drama",), 2000 + n, alternatives)
                                for n, (title, alternatives) in enumerate(extra, start=1))], "tiny")
    return DemoHandlers.of(make_pipeline(catalog, make_lrurec(len(catalog)), tiny_llama, tiny_tokenizer))


def titles_of(table: pd.DataFrame) -> list[str]:
    """The Title column of a results or history table."""
    return list(table["Title"])


def column(table: dict, name: str) -> list:
    """One column of a table as gradio_client returns it ({"headers": [...], "data": [[...], ...]})."""
    index = table["headers"].index(name)
    return [row[index] for row in table["data"]]


def last_of(outputs):
    """The last of a streaming handler's outputs (the race yields several)."""
    return list(outputs)[-1]


def test_analytics_are_off_before_gradio_starts():
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"


def source_id(handlers, item_id: int) -> int | str:
    """The source id (MovieLens id) the page's lists carry for a dense item id."""
    return handlers.pipeline.catalog[item_id].source_id


def test_add_a_picked_id_or_a_typed_exact_title(handlers):
    session, table, remove, notice, matches, _, box = handlers.history.pick(Visit(), source_id(handlers, 6))
    assert box == ""  # added: the search box is emptied
    session, table, remove, notice, matches, _ = handlers.history.add(session, "The Godfather: Part II (1974)")
    assert notice == "" and not matches["visible"]
    session, table, remove, notice, matches, _ = handlers.history.add(session, "heat")
    assert titles_of(table) == ["The Matrix (1999)", "The Godfather: Part II (1974)", "Heat (1995)"]
    assert list(table["#"]) == [1, 2, 3] and notice == "Added 'Heat (1995)'."
    assert [value for _, value in remove["choices"]] == [source_id(handlers, i) for i in session.history]


def test_a_partial_title_offers_its_matches_and_adds_only_the_pick(typed_handlers):
    start = Visit([1])
    session, table, _, notice, matches, _ = typed_handlers.history.add(start, "Godfather: Part")  # one partial match
    assert session.history == [1] and "nothing was added" in notice and "1 movie matches" in notice
    assert matches["visible"] and matches["choices"] == [("The Godfather: Part II (1974)", 1010)]
    session, table, _, notice, matches, _ = typed_handlers.history.add(start, "boa")
    assert session.history == [1]
    assert matches["choices"] == [("Das Boot (1981), also known as The Boat", 2003), ("Lifeboat (1944)", 2002)]
    session, table, _, notice, matches, _, _ = typed_handlers.history.pick(session, 2002)  # the pick: its MovieLens id
    assert titles_of(table) == ["The Terminator (1984)", "Lifeboat (1944)"] and not matches["visible"]
    session, table, _, notice, _, _ = typed_handlers.history.add(start, "The Boat")  # an exact alternative title
    assert titles_of(table)[-1] == "Das Boot (1981)" and notice == "Added 'Das Boot (1981), also known as The Boat'."


def test_typed_digits_are_a_title_never_an_item_id(typed_handlers):
    session, table, _, notice, _, _ = typed_handlers.history.add(Visit(), "300")
    assert titles_of(table) == ["300 (2007)"]
    session, table, _, notice, matches, _ = typed_handlers.history.add(Visit(), "3")  # item 3 is Blade Runner
    assert session.history == [] and "Blade Runner (1982)" not in [t for t, _ in matches["choices"]]
    assert ("300 (2007)", 2001) in matches["choices"]
    session, table, *_ = typed_handlers.history.pick(Visit(), 1003)  # picked from the list: a MovieLens id
    assert titles_of(table) == ["Blade Runner (1982)"]


def test_matches_follow_the_forgiving_search_as_you_type(typed_handlers):
    suggest = typed_handlers.history.suggest
    assert suggest("matrix, the")["choices"] == [("The Matrix (1999)", 1006)]  # no substring of "The Matrix (1999)"
    assert suggest("the boat")["choices"] == [("Das Boot (1981), also known as The Boat", 2003),  # exact first
                                         ("Lifeboat (1944)", 2002)]
    assert suggest("the boat")["visible"] and not suggest("")["visible"] and not suggest("  ")["visible"]
    none = suggest("zzz")  # said in the list's label, not a list silently hidden
    assert none["visible"] and none["choices"] == [] and none["label"] == ("No movie matches “zzz”: type less of it, "
                                                                           "or other words")
    many = suggest("e")
    assert len(many["choices"]) == 10 and many["label"].startswith("Matches for “e” (10 of ")
    long = suggest("the   " + "x" * 100)  # one line, cut: the label stays short
    assert long["choices"] == [] and long["label"].startswith("No movie matches “the " + "x" * 35 + "…”")


@pytest.mark.parametrize("movie, message", [
    (None, "Type a title"), ("", "Type a title"), ("Casablanca (1942)", "Unknown title"),
    ("Alie", "2 movies match"), ("Pulp Fictoin", "Did you mean **Pulp Fiction (1994)**?"),
])
def test_bad_movies_get_a_message(handlers, movie, message):
    start = Visit([1])
    session, table, _, notice, _, _ = handlers.history.add(start, movie)
    assert message in notice and session.history == [1] and len(table) == 1


@pytest.mark.parametrize("item, message", [
    (None, "Name a movie"), ("", "Name a movie"), (9999, "Unknown MovieLens id 9999"), (1001.5, "Unknown MovieLens"),
    (True, "Name a movie"), ("Casablanca (1942)", "Unknown title"), ("Pulp Fictoin", "Did you mean"),
])
def test_a_pick_of_an_unknown_item_gets_a_message_and_changes_nothing(handlers, item, message):
    start = Visit([1])
    session, table, _, notice, _, _, box = handlers.history.pick(start, item)
    assert message in notice and session.history == [1] and len(table) == 1 and box == gr.skip()


def test_pick_and_remove_take_a_title_or_a_movielens_id(handlers):
    session, *_ = handlers.history.pick(Visit(), "the matrix")  # a title as the search reads it
    session, *_ = handlers.history.pick(session, source_id(handlers, 14))  # Heat, by its MovieLens id
    assert handlers.pipeline.catalog.titles(session.history) == ["The Matrix (1999)", "Heat (1995)"]
    session, _, _, notice, *_ = handlers.history.remove(session, "Matrix, The (1999)")
    assert session.history == [14] and notice == "Removed 'The Matrix (1999)'."
    session, *_ = handlers.history.remove(session, source_id(handlers, 14))
    assert session.history == []
    session, _, _, notice, *_ = handlers.history.pick(session, str(source_id(handlers, 14)))  # an id sent as text
    assert handlers.pipeline.catalog.titles(session.history) == ["Heat (1995)"] and notice == "Added 'Heat (1995)'."


def test_a_huge_typed_title_is_quoted_short_in_its_notice(handlers):
    session, _, _, notice, _, _ = handlers.history.add(Visit([1]), "zq" * 10_000)
    assert "Unknown title 'zqzq" in notice and "…'" in notice and len(notice) < 200 and session.history == [1]


def test_test_users_are_offered_and_loaded_by_the_id_as_text(handlers):
    """The dropdown's values are text, as Gradio's API describes them, and a text id loads the user."""
    label, value = handlers.history.user_choices()[0]
    assert isinstance(value, str) and value in label
    session, *_ = handlers.history.load_test_user(Visit(), value)
    assert session.user == int(value)


def test_results_of_another_history_are_cleared_and_never_redrawn(handlers):
    session, *_ = handlers.history.load_test_user(Visit(), 1)
    shown = handlers.results.recommend(session).last
    # still this history
    assert handlers.race.stale_results(session, shown) == tuple(gr.skip() for _ in RaceView._fields)
    assert handlers.race.stale_results(session, None) == tuple(gr.skip() for _ in RaceView._fields)
    *results, race_summary, timing, text, comparison, streaming = handlers.race.stale_results(session, shown, True)
    assert all(r == gr.skip() for r in results) and race_summary == RACE_INTRO and streaming is False  # a cancelled
    assert timing is None and text == "" and len(comparison) == 0  # race starts over; this history's results stay
    for changed, *_ in (handlers.history.clear(session), handlers.history.load_preset(session, "Sci-fi fan"),
                        handlers.history.load_test_user(session, 2),
                        handlers.history.pick(session, source_id(handlers, 40))):
        view = handlers.race.stale_results(changed, shown)
        assert STALE in view.summary and len(view.table) == 0 and view.last is None
        assert view.race_summary == RACE_INTRO  # the race starts over
        assert view.download is None  # no file of another history's results
        assert len(view.comparison) == 0 and view.generated == "" and view.prompt == "" and view.reading == ""
        assert view.timing is None and view.formula == "" and view.chart.layout.annotations[0].text == STALE_CHART
        fused = handlers.results.ranking_view(changed, shown, 0.3, 0.3)  # the sliders: no redraw for the new session
        assert len(fused.table) == 0 and fused.download is None
        assert fused.chart.layout.annotations[0].text == STALE_CHART


def test_duplicate_moves_to_the_latest_viewing(handlers):
    session, *_ = handlers.history.pick(Visit(), source_id(handlers, 1))
    session, *_ = handlers.history.pick(session, source_id(handlers, 2))
    session, table, _, notice, *_ = handlers.history.pick(session, source_id(handlers, 1))
    assert session.history == [2, 1] and "already in the watch history" in notice


def test_history_is_capped(handlers, monkeypatch):
    monkeypatch.setattr(demo_history, "MAX_INPUT_ITEMS", 3)
    session = Visit([1, 2, 3])
    session, _, _, notice, *_ = handlers.history.pick(session, source_id(handlers, 4))
    assert session.history == [1, 2, 3] and "full" in notice


def test_long_history_notes_the_window(handlers, tiny_pipeline):
    session = Visit(list(range(1, tiny_pipeline.retrieval.window + 2)))
    _, _, _, notice, *_ = handlers.history.pick(session, source_id(handlers, tiny_pipeline.retrieval.window + 5))
    assert f"only the latest {tiny_pipeline.retrieval.window}" in notice


def test_remove_and_clear(handlers):
    session = Visit([1, 2, 3])
    session, table, *_ = handlers.history.remove(session, source_id(handlers, 2))
    assert session.history == [1, 3]
    session, _, _, notice, _, _ = handlers.history.remove(session, source_id(handlers, 2))
    assert "pick a movie of the watch history to remove" in notice and session.history == [1, 3]
    heat = handlers.pipeline.catalog[14].title
    _, _, _, notice, _, _ = handlers.history.remove(Visit([14]), heat[:-3])  # a typo: only the history's are offered
    assert f"Did you mean **{heat}**?" in notice
    _, _, _, notice, _, _ = handlers.history.remove(Visit([1]), heat[:-3])
    assert "Unknown title" in notice and "Did you mean" not in notice  # Heat is not in this history
    _, _, _, notice, _, _ = handlers.history.remove(Visit(), "anything")
    assert notice == "⚠️ The watch history is empty: nothing to remove."
    session, table, *_ = handlers.history.clear(replace(session, target=5, user=1))
    assert session == Visit() and len(table) == 0


def test_presets_resolve_against_the_catalog(handlers, tiny_pipeline, monkeypatch):
    assert tiny_pipeline.catalog.titles(handlers.history.presets["World cinema"]) == ["Amelie (2001)",
                                                                                     "Spirited Away (2001)"]
    monkeypatch.setitem(PRESETS, "Classics", ["Casablanca (1942)"])
    assert "Classics" not in DemoHandlers.of(tiny_pipeline).history.presets  # no title of it in the catalog
    session, table, _, notice, _, _ = handlers.history.load_preset(Visit(), "Crime classics")
    assert titles_of(table) == PRESETS["Crime classics"] and "Loaded preset" in notice
    session, _, _, notice, _, _ = handlers.history.load_preset(session, "Nope")
    assert "Unknown preset" in notice


def test_load_test_user_and_mark_the_held_out_movie_everywhere(handlers, tiny_pipeline, monkeypatch):
    session, table, _, notice, _, _ = handlers.history.load_test_user(Visit(), 1)
    user = tiny_pipeline.test_users[1]
    assert session == Visit(list(user.history), user.target, 1) and "held-out" in notice
    summary, _, results, figure, prompt, reading, shown, _ = handlers.results.recommend(session)
    held_out = tiny_pipeline.catalog.title(user.target)
    assert f"{HELD_OUT}: **{held_out}**, retriever rank 5" in summary
    assert [t for t in titles_of(results) if HELD_OUT in t] == [f"{held_out}  {HELD_OUT}"]
    bar = figure.data[0]
    assert [y for y in bar.y if y.endswith("★")] == [f"(E) {held_out} ★"]
    assert [trace.name for trace in figure.data] == ["Final", "LLM", "Co-watch", "Retriever"]
    assert "### Response:" in prompt
    monkeypatch.setattr("recsys.opinions.generate_ranking",
                        lambda model, tokenizer, prompt, n, on_token, prefix, run:
                        GenerationResult(list(range(len(prompt.candidate_titles))),
                                         "\n".join(prompt.candidate_titles), 50, 1.0, 0.2, 0.8))
    *_, race_summary, timing, text, comparison, streaming = last_of(handlers.race.run(session))
    assert streaming is False  # finished
    assert sum(HELD_OUT in v for v in comparison["Verbalizer"]) == 1
    assert comparison["Generation (parsed)"][4].endswith(HELD_OUT)  # generation kept the retriever's order


def test_the_races_verbalizer_column_is_the_llms_own_order_when_the_final_ranking_gives_it_no_weight(
        tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer, monkeypatch):
    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer,
                             fusion=FusionWeights(retriever=1.0, llm=0.0))  # served as validation chose: LLM at 0
    monkeypatch.setattr("recsys.opinions.generate_ranking",
                        lambda model, tokenizer, prompt, n, on_token, prefix, run:
                        GenerationResult(list(range(n)), "", 0, 1.0, 0.2, 0.8))
    *_, comparison, streaming = last_of(DemoHandlers.of(pipeline).race.run(Visit([1, 2, 3])))
    recommendation = pipeline.recommend([1, 2, 3])
    letters = recommendation.opinions["llm"]
    llm_order = sorted(range(20), key=lambda i: (-float(letters[i]), i))
    assert recommendation.ranking == list(range(20)) != llm_order  # the final ranking is the retriever's
    assert list(comparison["Verbalizer"]) == [f"({recommendation.candidates[i].letter}) "
                                              f"{recommendation.candidates[i].title}" for i in llm_order]


def test_held_out_movie_outside_the_candidates_is_said(handlers, tiny_pipeline):
    session, *_ = handlers.history.load_test_user(Visit(), 2)
    summary, _, results, *_ = handlers.results.recommend(session)
    assert "is not among the 20 candidates" in summary and not any(HELD_OUT in t for t in titles_of(results))


def test_unknown_test_user(handlers):
    session, _, _, notice, _, _ = handlers.history.load_test_user(Visit(), 999)
    assert "Unknown test user" in notice and session == Visit()


def test_recommend_table_and_chart(handlers, tiny_pipeline):
    session = Visit([1, 2, 3])
    summary, _, table, figure, prompt, reading, shown, _ = handlers.results.recommend(session)
    assert list(table.columns) == ["Final rank", "Title", "Final", "LLM", "Co-watch", "Retriever", "Letter",
                                   "Retriever rank", "Change", "Co-watch evidence"]  # the key columns first
    assert list(table["Final rank"]) == list(range(1, 21)) and len(figure.data[0].x) == 20
    expected = tiny_pipeline.recommend([1, 2, 3])
    assert titles_of(table) == [c.title for c in expected.ranked()]
    first = expected.ranked()[0]
    change = table["Change"][0]
    assert change == ("=" if first.retriever_rank == 1 else f"▲ {first.retriever_rank - 1}")
    assert "verbalizer ranking" in summary and prompt == expected.prompt.text
    view = handlers.results.recommend(session)
    assert view.formula.startswith("**Final score** = 1 × log p(LLM) (the served weights")  # no adapter config: the
    # LLM alone, as the paper


def test_fusion_is_explained(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer):
    weights = FusionWeights(retriever=2.0, cowatch=0.0, llm=1.0)
    handlers = DemoHandlers.of(make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer, fusion=weights))
    view = handlers.results.recommend(Visit([1, 2, 3]))
    assert view.formula.startswith("**Final score** = 2 × log p(retriever) + 1 × log p(LLM) (the served weights")
    table = handlers.results.ranking_view(view.last.visit, view.last, 0.0, None).table  # the slider's weights: the
    assert "= 2 × log p(retriever) (the sliders' weights" in handlers.results.ranking_view(  # formula says them
        view.last.visit, view.last, 0.0, None).formula and list(table["Retriever rank"]) == list(range(1, 21))
    table = view.table
    assert list(table["Final rank"]) == list(range(1, 21))


def test_empty_history_gets_a_message_not_a_crash(handlers):
    summary, _, table, figure, prompt, reading, shown, _ = handlers.results.recommend(Visit())
    assert "empty" in summary and len(table) == 0 and prompt == ""
    outputs = last_of(handlers.race.run(Visit()))
    assert len(outputs) == len(RaceView._fields) and "empty" in outputs.summary and "empty" in outputs.race_summary
    assert outputs.race_streaming is False


def test_ranker_failure_shows_retrieval_with_the_error(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer):
    from recsys.ranker.prompt import PromptConfig

    handlers = DemoHandlers.of(make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer,
                                              prompt_config=PromptConfig(max_prompt_tokens=50)))
    summary, _, table, figure, prompt, reading, shown, _ = handlers.results.recommend(Visit([1, 2]))
    assert "The ranker failed" in summary and "over the budget" in summary
    assert list(table["Retriever rank"]) == list(range(1, 21)) and table["Final rank"].isna().all()
    assert "ranker failed" in figure.layout.annotations[0].text
    *_, race_summary, timing, text, comparison, _ = last_of(handlers.race.run(Visit([1, 2])))
    assert "verbalizer did not run" in race_summary


def test_race_streams_the_verbalizer_then_the_generated_text(handlers, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(demo_race, "STREAM_INTERVAL_S", 0.01)

    def slow_generation(model, tokenizer, prompt, max_new_tokens, on_token, prefix, run):
        candidate_titles = prompt.candidate_titles
        token_ids = tokenizer("\n".join(candidate_titles[::-1]), add_special_tokens=False).input_ids[:30]
        for token_id in token_ids:
            time.sleep(0.01)
            on_token(token_id)
        return GenerationResult(list(range(len(candidate_titles)))[::-1], tokenizer.decode(token_ids), len(token_ids),
                                0.3, 0.05, 0.25)

    monkeypatch.setattr("recsys.opinions.generate_ranking", slow_generation)
    first, *streamed, final = handlers.race.run(Visit([1, 2, 3]))
    summary, _, table, chart, prompt, reading, shown, _, race_summary, timing, text, comparison, streaming = first
    assert streaming is True and final.race_streaming is False
    assert all(step.race_streaming == gr.skip() for step in streamed)
    assert len(table) == 20 and "Generating" in race_summary and "**0 tokens** so far" in race_summary and text == ""
    assert list(comparison["Verbalizer"]) == [f"({c.letter}) {c.title}" for c in shown.recommendation.ranked()]
    assert set(comparison["Generation (parsed)"]) == {""}  # the verbalizer's ranking first, generation to come
    assert len(streamed) >= 3 and all(output == gr.skip() for step in streamed for output in step[:6])
    counts = [int(re.search(r"\*\*(\d+) tokens?\*\* so far", step.race_summary)[1]) for step in streamed]
    assert counts == sorted(counts) and 0 < counts[-1] <= 30 and counts[0] < 30
    texts = [step.generated for step in streamed]
    assert all(final.generated.startswith(t) for t in texts) and len(set(texts)) >= 2  # the text grows token by token
    assert "**Generation** 300 ms for 30 tokens" in final.race_summary
    assert final.last.recommendation == shown.recommendation and final.last.race.num_generated_tokens == 30
    assert list(final.comparison["Generation (parsed)"])[0].startswith("(T) ")


def test_a_race_left_mid_stream_returns_at_once_and_stops_generating(handlers, monkeypatch):
    """Gradio closes the race's stream on its event loop when a new history cancels it. The close returns at once,
    even while generation is inside a long step (a prefill, another visitor's pass), so no other event waits for it;
    generation stops at its next token."""
    monkeypatch.setattr(demo_race, "STREAM_INTERVAL_S", 0.01)
    produced, stopped = [], []
    in_long_step, step_done = threading.Event(), threading.Event()

    def endless_generation(model, tokenizer, prompt, max_new_tokens, on_token, prefix, run):
        try:
            for token_id in range(10_000):  # ~100 s unless stopped
                if token_id == 3:
                    in_long_step.set()
                    step_done.wait(timeout=30)
                time.sleep(0.01)
                on_token(token_id)
                produced.append(token_id)
        except demo_race.RaceAbandoned as error:
            stopped.append(error)
            raise
        return GenerationResult(list(range(len(prompt.candidate_titles))), "", len(produced), 100.0, 0.0, 100.0)

    monkeypatch.setattr("recsys.opinions.generate_ranking", endless_generation)
    stream = handlers.race.run(Visit([1, 2, 3]))
    next(stream), next(stream)  # the verbalizer's results, then the text streaming
    assert in_long_step.wait(timeout=10)
    closing = threading.Thread(target=stream.close)  # what gradio's cancel does
    closing.start()
    closing.join(timeout=5)
    returned_during_the_step = not closing.is_alive()
    step_done.set()
    closing.join()
    deadline = time.monotonic() + 10
    while not stopped and time.monotonic() < deadline:
        time.sleep(0.01)
    assert returned_during_the_step and len(stopped) == 1 and produced == [0, 1, 2]


def test_failed_baseline_gets_a_message(handlers, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("generation exploded")

    monkeypatch.setattr("recsys.opinions.generate_ranking", failing)
    outputs = last_of(handlers.race.run(Visit([1, 2])))
    table, race_summary, timing = outputs.table, outputs.race_summary, outputs.timing
    assert len(table) == 20 and "generation baseline failed" in race_summary and "generation exploded" in race_summary
    assert list(timing.data[0].y) == ["verbalizer ranking", "retrieval"]


def test_about_and_benchmark_tabs(tiny_pipeline, tmp_path, monkeypatch):
    from recsys.ranker.model import DEFAULT_ADAPTER, shown_path

    facts = pages.facts_markdown(tiny_pipeline)
    assert "| Prompt budgets |" in facts and "DATA_LICENSE" in facts
    # a checkpoint is named as the repository has it, never by the server's own folders
    assert shown_path(DEFAULT_ADAPTER) == "checkpoints/llamarec-smollm2-135m-ml-latest-small"
    assert shown_path(tmp_path) == str(tmp_path)  # outside the repository: as given
    monkeypatch.setattr(pages, "RESULTS_DIR", tmp_path)
    empty = pages.benchmarks_markdown()
    for command in pages.BENCH_COMMANDS.values():
        assert command in empty
    metrics = {"M@5": 0.04, "N@5": 0.05, "R@5": 0.07, "M@10": 0.05, "N@10": 0.07, "R@10": 0.14}
    retriever = {"ours": metrics, "paper": metrics, "coverage@20": 0.2}
    (tmp_path / "retriever_quality.json").write_text(json.dumps(retriever))
    row = {"subset": {"N@10": 0.35, "R@10": 0.7, "M@10": 0.25}, "overall": {"N@10": 0.07, "R@10": 0.14, "M@10": 0.05}}
    test = {"retriever": {"subset": {"N@10": 0.3, "R@10": 0.6, "M@10": 0.2}, "overall": row["overall"]},
            "final": {**row, "ci95_vs_retriever_N@10": [0.01, 0.09]},
            "llm_contribution": {"N@10": 0.01, "ci95_N@10": [-0.02, 0.03]}}
    (tmp_path / "ranker_quality.json").write_text(json.dumps({"test": test, "users": 120,
                                                              "cross_fitted_val_test": {"users": 255, "gain": 0.1}}))
    efficiency = {"by_title_len": {"20": {"verbalizer_ms": 900, "generation_ms": 30000, "ratio": 33.3}},
                  "throughput": {"batch_1": {"requests_per_second": 1.1}}, "device": "CPU"}
    (tmp_path / "efficiency.json").write_text(json.dumps(efficiency))
    (tmp_path / "app_latency.json").write_text(json.dumps({"cold_start_s": 12.0, "p50_ms": 900, "p95_ms": 1400}))
    full = pages.benchmarks_markdown()
    assert "Not measured yet" not in full
    assert "| LRURec, ours | 0.0400 |" in full and "Coverage@20" in full and "120 users" in full
    assert "| LlamaRec (Llama-2-7b), paper | – | 0.3766 | 0.7560 |" in full
    assert "| Served (weights chosen on validation) | 0.2500 | 0.3500 | 0.7000 |" in full
    assert "| 20 | 900 | 30,000 | 33.3× |" in full
    assert "Cold start 12.0 s" in full and "batch 1: requests per second 1.1" in full
    assert "Served (weights chosen on validation) [0.01, 0.09]" in full and "own contribution" in full
    assert "Cross-fitted validation + test: users 255" in full


def test_adapter_warning_only_without_an_adapter(tiny_pipeline):
    texts = [str(c.get("props", {}).get("value")) for c in app.build_demo(tiny_pipeline).config["components"]]
    assert any("No ranker adapter found" in t for t in texts)


def test_the_intro_says_which_llm_ranks(tiny_pipeline, monkeypatch):
    from dataclasses import replace

    from recsys.ranker.artefacts import RankerArtefacts

    assert "No ranker adapter found" in pages.intro_markdown(tiny_pipeline)  # the base model alone, unvalidated
    monkeypatch.setattr(tiny_pipeline, "ranker", replace(RankerArtefacts(), has_weights=False,
                                                         folder=Path("checkpoints/llamarec-beauty")))
    monkeypatch.setattr(tiny_pipeline, "fusion", FusionWeights(retriever=0.5, cowatch=1.5, llm=0.0))
    assert tiny_pipeline.ranker.zero_shot
    assert ("reads them zero-shot. At the weights validation chose, its letters (the verbalizer) weigh 0: shown, not "
            "ranked by.") in pages.intro_markdown(tiny_pipeline)
    monkeypatch.setattr(tiny_pipeline, "fusion", FusionWeights(retriever=0.5, cowatch=1.5, llm=0.0, titles=0.25))
    intro, adapter = pages.intro_markdown(tiny_pipeline), pages.facts(tiny_pipeline)["adapter"]
    assert ("its letters (the verbalizer) weigh 0: shown, not ranked by; its **title likelihood** (how likely each "
            "candidate's title is as the history's next line) weighs 0.25.") in intro  # both of its opinions named
    assert "letters are shown at weight 0" in adapter and "(its title likelihood: below)" in adapter
    monkeypatch.setattr(tiny_pipeline, "fusion", FusionWeights(retriever=0.5, cowatch=1.5, llm=0.25))
    assert "its letters (the verbalizer) weigh 0.25." in pages.intro_markdown(tiny_pipeline)
    monkeypatch.setattr(tiny_pipeline.llm, "adapter", "some/adapter")
    assert "zero-shot" not in pages.intro_markdown(tiny_pipeline) and "⚠️" not in pages.intro_markdown(tiny_pipeline)


def test_missing_checkpoint_stops_with_the_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        app.main(["--retriever", str(tmp_path / "missing"), "--adapter", "none"])
    assert "Cannot start the demo" in str(stopped.value.code) and TRAIN_COMMAND in str(stopped.value.code)


def test_flags_and_defaults(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    args = app.parse_args([])
    assert (args.host, args.port, args.share, args.adapter, args.base_model) == ("127.0.0.1", 7860, False, None, None)
    assert args.retriever is None and args.dataset == "ml-latest-small"
    assert (args.precision, args.threads) == ("auto", 0)
    assert app.default_threads() == len(os.sched_getaffinity(0))  # every usable core (bench/threads.py)
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")  # as on Hugging Face Spaces
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    assert (app.parse_args([]).host, app.parse_args([]).port) == ("0.0.0.0", 7861)


@pytest.fixture(scope="module")
def served(tiny_pipeline, tmp_path_factory):
    """The app on the tiny pipeline, launched on localhost; yields its URL."""
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))
    demo = app.build_demo(tiny_pipeline)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


def test_client_builds_a_history_and_recommends(served, tiny_pipeline):
    from gradio_client import Client

    client = Client(served, verbose=False)
    table, remove, notice, matches, *_, box = client.predict("The Matrix (1999)", api_name="/add")
    assert box == ""  # added: the search box is emptied, so Enter cannot add it twice
    table, remove, notice, matches, *_, box = client.predict("blade runner", api_name="/add")
    assert [row[1] for row in table["data"]] == ["The Matrix (1999)", "Blade Runner (1982)"]
    table, remove, notice, matches, *_, box = client.predict("no such film", api_name="/add")
    assert "Unknown title" in notice and len(table["data"]) == 2 and box != ""  # the text stays, to correct it
    summary, formula, results, plot, prompt, reading, download = client.predict(api_name="/recommend")
    expected = tiny_pipeline.recommend([6, 3])
    assert download.endswith("llamarec-results.csv")  # the CSV of what is on screen, served by the app
    assert column(results, "Title") == [c.title for c in expected.ranked()]
    assert plot["type"] == "plotly" and prompt == expected.prompt.text
    formula, retriever_order, *_ = client.predict(0.0, 0.0, api_name="/explore_fusion")  # the sliders, no model call
    assert column(retriever_order, "Retriever rank") == list(range(1, 21))
    assert set(column(retriever_order, "Change")) == {"="} and "sliders' weights" in formula
    client.predict(api_name="/clear")
    _, stale, *_ = client.predict(0.0, 0.0, api_name="/explore_fusion")  # the old candidates are not redrawn
    assert stale["data"] == []
    summary, *_ = client.predict(api_name="/recommend")
    assert "empty" in summary


def test_eight_concurrent_sessions_get_their_own_results(served, tiny_pipeline):
    from gradio_client import Client

    histories = [[s + 1, s + 9, s + 17, (s * 5) % 40 + 2] for s in range(8)]

    def session(history):
        client = Client(served, verbose=False)
        for item in history:
            client.predict(tiny_pipeline.catalog.title(item), api_name="/add")
        summary, formula, results, plot, prompt, reading, *_ = client.predict(api_name="/recommend")
        return column(results, "Title"), prompt

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(session, histories))
    for history, (titles, prompt) in zip(histories, outcomes):
        expected = tiny_pipeline.recommend(history)
        assert titles == [c.title for c in expected.ranked()]
        assert prompt == expected.prompt.text
    assert len({prompt for _, prompt in outcomes}) == 8


def test_client_race(served, monkeypatch):
    from gradio_client import Client

    monkeypatch.setattr("recsys.opinions.generate_ranking",
                        lambda model, tokenizer, prompt, n, on_token, prefix, run:
                        GenerationResult(list(range(len(prompt.candidate_titles)))[::-1],
                                         "\n".join(prompt.candidate_titles[::-1]), 40, 0.5, 0.1, 0.4))
    client = Client(served, verbose=False)
    client.predict("Sci-fi fan", api_name="/load_preset")
    summary, formula, results, plot, prompt, reading, download, race_summary, timing, text, comparison = client.predict(
        api_name="/race")
    assert "**Generation** 500 ms for 40 tokens" in race_summary and timing["type"] == "plotly"
    letters, titles = column(results, "Letter"), column(results, "Title")
    best_letter, best_title = letters[0], titles[0]
    last_title = titles[letters.index("T")]
    assert comparison["data"][0] == [1, f"({best_letter}) {best_title}", f"(T) {last_title}"]


def test_the_app_says_when_its_presets_are_ready(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer, monkeypatch,
                                                capsys):
    """The start-up warm-up computes every preset's results, then logs one line (the benches wait for it)."""
    pipeline = make_pipeline(tiny_catalog, tiny_lrurec, tiny_llama, tiny_tokenizer)
    monkeypatch.setattr(app, "WARM_AFTER_S", 0.0)  # no model runner serves in-process: warm at once
    app.build_demo(pipeline, warm_presets=True)
    for thread in threading.enumerate():  # none left if it finished while the Blocks were built
        if thread.name == "warm-presets":
            thread.join(timeout=60)
    presets = DemoHandlers.of(pipeline).history.presets
    assert capsys.readouterr().out.startswith(f"{app.PRESETS_READY}: {len(presets)} presets' results computed in")
    assert all(pipeline.recommend(list(ids)).shared for ids in presets.values())


def test_the_benches_page_session_gets_what_gradio_client_gets(served):
    """`bench.common.PageSession` (the benches' client: Gradio's HTTP API, one session hash) keeps its session's
    history from call to call, through the events served outside the queue (a preset, clear) and the queued ones
    (Recommend), and returns every output in declared order, the states' as None."""
    from gradio_client import Client

    page, client = PageSession(served), Client(served, verbose=False, download_files=False)
    for session in (page, client):
        session.predict("Sci-fi fan", api_name="/load_preset")
    ours = page.predict(0.0, 1.0, False, False, False, api_name="/recommend")
    theirs = client.predict(0.0, 1.0, False, False, False, api_name="/recommend")
    assert len(ours) == len(ResultsView._fields) and ours[ResultsView._fields.index("last")] is None
    assert ours[1:5] == list(theirs[1:5])  # the table, chart, prompt and reading (the summary's timings differ)
    assert ours[0].startswith("**Retrieval**") and ours[2]["data"]  # the preset's history reached Recommend
    page.predict(api_name="/clear")
    assert "empty" in page.predict(0.0, 1.0, False, False, False, api_name="/recommend")[0]
    with pytest.raises(RuntimeError, match="/explore_fusion: HTTP 500.*greater than maximum"):
        page.predict(99.0, 1.0, api_name="/explore_fusion")  # the app's error is raised, not returned
    with pytest.raises(RuntimeError, match="/recommend failed"):
        page.predict(0.0, 1.0, api_name="/recommend")  # a missing input, through the queue
    with pytest.raises(TypeError, match="/add takes 1 inputs"):
        page.predict(api_name="/add")


@pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "model.safetensors").is_file(), reason="no retriever checkpoint")
def test_default_models_recommend_a_preset():
    """The one test on the real default models (base model from the local cache, committed checkpoints)."""
    from recsys.ranker.base_model import converted_dir

    if not (converted_dir() / "model.safetensors").is_file():
        pytest.skip("default base model not prepared (python -m recsys.ranker.base_model --prepare)")
    pipeline = app.load_pipeline(app.parse_args([]))
    handlers = DemoHandlers.of(pipeline)
    assert set(handlers.history.presets) == set(PRESETS)  # every preset title is in the real catalog
    assert (pipeline.llm.adapter is None) == (RANKER_TRAIN_COMMAND in pages.facts(pipeline)["adapter"])
    session, *_ = handlers.history.load_preset(Visit(), "Sci-fi fan")
    summary, _, table, figure, prompt, reading, shown, _ = handlers.results.recommend(session, None, None, True)
    assert len(table) == 20 and "verbalizer ranking" in summary and prompt.endswith("### Response:\n")
    if pipeline.llm.adapter is not None:  # the committed adapter is trained: it moves candidates, differs from the base
        served = handlers.results.ranking_view(session, shown).table
        assert set(served["Change"]) != {"="}
        assert any(abs(c.llm_probability - c.base_probability) > 1e-3 for c in shown.recommendation.candidates)


def test_a_download_before_any_recommend_says_why_it_gives_nothing(handlers, monkeypatch):
    from recsys.demo.results import NOTHING_TO_DOWNLOAD

    said = []
    monkeypatch.setattr(gr, "Warning", said.append)
    handlers.results.download_hint(None)
    assert said == [NOTHING_TO_DOWNLOAD]
    handlers.results.download_hint(handlers.results.recommend(Visit([1, 2])).last)
    assert said == [NOTHING_TO_DOWNLOAD]  # with results on screen the click downloads them, silently


def test_the_readmes_python_example_runs_against_the_app(served, capsys):
    """The README's "Use it from Python" example, as written, with the address of the app under test."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Use it from Python", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'Client("http://127.0.0.1:7860/")' in example
    exec(example.replace("http://127.0.0.1:7860/", served), {})
    formula, titles, link = capsys.readouterr().out.splitlines()[-3:]
    assert formula.startswith("**Final score** = ") and "Pulp Fiction (1994)" not in titles  # in the history now
    assert len(eval(titles)) == 5 and link.startswith(served.rstrip("/") + "/?history=")


def test_pick_remove_and_share_through_the_client_without_a_server_traceback(served, tiny_pipeline, capfd):
    from gradio_client import Client

    client = Client(served, verbose=False)
    heat = tiny_pipeline.catalog[14].source_id
    table, removable, notice, *_ = client.predict("The Matrix (1999)", api_name="/pick")
    table, removable, notice, *_ = client.predict(heat, api_name="/pick")  # a MovieLens id
    assert column(table, "Title") == ["The Matrix (1999)", "Heat (1995)"]
    assert [value for _, value in removable["choices"]] == [tiny_pipeline.catalog[6].source_id, heat]
    for bad, said in ((999_999, "Unknown MovieLens id 999999"), ("Pulp Fictoin", "Did you mean **Pulp Fiction")):
        table, _, notice, *_ = client.predict(bad, api_name="/pick")
        assert said in notice and len(table["data"]) == 2
    _, _, notice, *_ = client.predict("No Such Film", api_name="/load_preset")
    assert "Unknown preset" in notice
    table, _, notice, *_ = client.predict("matrix, the", api_name="/remove")  # a title as the search reads it
    assert column(table, "Title") == ["Heat (1995)"] and notice == "Removed 'The Matrix (1999)'."
    link = client.predict(api_name="/share")
    assert link == f"{served.rstrip('/')}/?history={heat}"  # a full link
    assert "Traceback" not in capfd.readouterr().err  # every bad value was answered by the app, not raised
