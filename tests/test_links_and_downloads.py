"""What a class expects beyond the results: a link that reproduces a history, the history kept by the browser, and
the results as a CSV file."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import make_catalog, make_lrurec, make_pipeline
from test_app import last_of

from recsys.demo.handlers import DemoHandlers
from recsys.demo.history import MAX_LINKED
from recsys.demo.visit import Visit
from recsys.ranker.generation import GenerationResult


@pytest.fixture(scope="module")
def handlers(tiny_llama, tiny_tokenizer):
    catalog = make_catalog()
    return DemoHandlers.of(make_pipeline(catalog, make_lrurec(len(catalog)), tiny_llama, tiny_tokenizer))


def request(query: dict | None = None, referer: str | None = "http://127.0.0.1:7860/?history=1", **headers):
    """What a handler reads of gr.Request: the page's query parameters and its headers (the referring page)."""
    return SimpleNamespace(query_params=query or {}, headers={"referer": referer, **headers} if referer else headers)


def test_share_writes_a_link_of_movielens_ids_that_restore_reads_back(handlers):
    session = handlers.history.load_preset(Visit(), next(iter(handlers.history.presets))).visit
    link = handlers.history.share(session, request())
    movie_ids = [handlers.pipeline.catalog[i].source_id for i in session.history]
    assert link == "http://127.0.0.1:7860/?history=" + ",".join(map(str, movie_ids))  # the page's old query replaced
    restored = handlers.history.restore([], request({"history": link.split("=")[1]}))
    assert restored.visit.history == session.history and "from the link" in restored.notice
    assert "empty" in handlers.history.share(Visit(), request())


def test_on_a_space_the_link_is_the_hub_page_and_elsewhere_the_page_the_browser_shows(handlers, monkeypatch):
    session = Visit([3, 4])
    ids = ",".join(str(handlers.pipeline.catalog[i].source_id) for i in (3, 4))
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert handlers.history.share(session, request(referer="https://class.example/llamarec/#x")) == \
        f"https://class.example/llamarec/?history={ids}"
    # an API client sends no Referer: the address it asked
    assert handlers.history.share(session, request(referer=None, host="127.0.0.1:7860")) == f"http://127.0.0.1:7860/?history={ids}"
    monkeypatch.setenv("SPACE_ID", "teacher/llamarec")  # the page a Space is framed in, not its *.hf.space frame
    framed = request(referer="https://teacher-llamarec.hf.space/?__theme=light")
    assert handlers.history.share(session, framed) == f"https://huggingface.co/spaces/teacher/llamarec?history={ids}"


def test_a_link_wins_over_the_browsers_copy_which_wins_over_nothing(handlers):
    ids = [handlers.pipeline.catalog[i].source_id for i in (3, 4, 5)]
    assert handlers.history.restore(ids, request()).visit.history == [3, 4, 5]  # this browser's last visit
    assert handlers.history.restore(ids, request({"history": str(ids[0])})).visit.history == [3]
    empty = handlers.history.restore([], request())
    assert empty.visit == Visit() and empty.notice == ""
    assert handlers.history.restore("not a list", request()).visit.history == []  # a damaged copy is ignored


def test_unknown_or_malformed_ids_are_left_out_with_a_notice_and_repeats_kept_once(handlers):
    known = handlers.pipeline.catalog[2].source_id
    view = handlers.history.restore([], request({"history": f"{known},999999,abc,<b>x</b>,{known}"}))
    assert view.visit.history == [2] and "3 unknown MovieLens ids were left out" in view.notice
    huge = ",".join([str(known)] * (MAX_LINKED * 3))
    assert handlers.history.restore([], request({"history": huge})).visit.history == [2]


def test_the_download_carries_the_table_every_opinion_the_prompt_and_after_a_race_its_timings(handlers, monkeypatch):
    session = Visit([1, 2, 3])
    results = handlers.results.recommend(session)
    table = pd.read_csv(results.download)
    result = results.last.recommendation
    assert list(table["Title"]) == [c.title for c in result.ranked()]
    assert list(table["MovieLens id"]) == [handlers.pipeline.catalog[c.item_id].source_id for c in result.ranked()]
    assert {"Final", "LLM", "Co-watch", "Retriever", "Prompt", "Verbalizer ms"} <= set(table.columns)
    assert table["Prompt"][0] == result.prompt.text and "Generation ms" not in table.columns
    assert table["History (MovieLens ids, oldest first)"][0] == " ".join(
        str(handlers.pipeline.catalog[i].source_id) for i in (1, 2, 3))
    monkeypatch.setattr("recsys.opinions.generate_ranking",
                        lambda model, tokenizer, prompt, n, on_token, prefix, run:
                        GenerationResult(list(range(len(prompt.candidate_titles))),
                                         "\n".join(prompt.candidate_titles), 50, 1.0, 0.2, 0.8))
    raced = pd.read_csv(last_of(handlers.race.run(session)).download)
    assert raced["Generation ms"][0] == 1000.0 and raced["Generated tokens"][0] == 50
    moved = handlers.results.ranking_view(session, results.last, 0.0, None)  # a slider: the download follows the table
    assert list(pd.read_csv(moved.download)["Title"]) == list(moved.table["Title"])


def test_the_history_kept_by_the_browser_is_movielens_ids(handlers):
    assert handlers.history.source_ids(Visit([2, 1])) == [handlers.pipeline.catalog[2].source_id,
                                                                       handlers.pipeline.catalog[1].source_id]
