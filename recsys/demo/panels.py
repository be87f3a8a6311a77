"""The Recommend tab as three panels, each a function that builds its components and wires its own events:

- `history_panel`: search, presets, test users, the history table and its link (`recsys.demo.history`);
- `results_panel`: Recommend, the fusion sliders, the summary, table, chart and prompt (`recsys.demo.results`);
- `race_panel`: the verbalizer against generation, streamed (`recsys.demo.race`).

A Recommend click, followed: `results_panel` wires the button to `ResultsHandlers.recommend` (through `gpu_event`,
which asks ZeroGPU for a GPU where one serves) -> `Pipeline.recommend` (`recsys/pipeline.py`: retrieval, the LLM's
opinions, the fusion rule) -> `ResultsHandlers.results_view`, whose `ResultsView` fields name the components it fills.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import pandas as pd

from recsys.demo.components import FreeDropdown, FreeRadio, SavedHistory
from recsys.demo.gpu import RECOMMEND_S, gpu_event
from recsys.demo.handlers import DemoHandlers
from recsys.demo.history import MAX_TYPED, AddView, HistoryView
from recsys.demo.pages import api_descriptions
from recsys.demo.race import COMPARISON_COLUMNS, RACE_INTRO, RaceView
from recsys.demo.results import MAX_WEIGHT, RESULT_COLUMNS, WEIGHT_STEP, FusionView, ResultsView
from recsys.demo.visit import Visit
from recsys.demo.words import Words

NEXT_RECOMMEND = "Applies to the next Recommend."  # what ticking a box changes: results already shown stay as they are
# events without the model: answered at once, never refused
INSTANT: dict[str, Any] = {"queue": False, "show_progress": "hidden"}
# the key columns' widths (`recsys.demo.results.KEY_COLUMNS`): together about 660 px, so they fit the table's box
# beside the chart at 1,400 px; the other columns size to their content after them
KEY_COLUMN_WIDTHS: list[str | int] = ["72px", "246px", "74px", "74px", "92px", "100px"]


@dataclass(frozen=True)
class ModelEvents:
    """How the events that run the model are served: ZeroGPU's `spaces` module when they ask it for a GPU (else
    None), how many run at once, and how long a race may hold a GPU (s)."""

    gpu: Any = None
    recommend_jobs: int = 16
    race_jobs: int = 1
    race_s: int = 60


@dataclass
class Page:
    """The page being built: its Blocks, the data set's words and the components built so far, each by the name of
    the view field it fills."""

    blocks: gr.Blocks
    words: Words
    components: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.descriptions = api_descriptions(self.words)

    def outputs(self, view: Any) -> list:
        """The components a handler returning `view` (a NamedTuple of outputs) writes to, in its fields' order: each
        field names the component it fills, so a handler's outputs cannot be wired out of order."""
        return [self.components[name] for name in view._fields]

    def api(self, name: str) -> dict[str, Any]:
        """An endpoint's name and what it does for a client (`recsys.demo.pages.api_descriptions`)."""
        return {"api_name": name, "api_description": self.descriptions[name]}


@dataclass(frozen=True)
class Edits:
    """The events that change the history: what triggers them (a race for the old history stops then) and the events
    (results made for the old history are cleared after them): `race_panel`."""

    triggers: list
    events: list


def history_panel(handlers: DemoHandlers, page: Page) -> Edits:
    """The history's components and events (the page's first history comes from a link or this browser's copy)."""
    history_handlers, words = handlers.history, page.words
    visit = gr.State(Visit())
    # the history as source ids in this browser: a reload (or the next visit) starts from it
    saved = SavedHistory([], storage_key="llamarec-history", secret="llamarec-history",
                         label=f"{words.history} ({words.source_id}s)")
    with gr.Row():
        with gr.Column(scale=2, min_width=300):
            with gr.Row():
                movie = gr.Textbox(label=f"Find a {words.item}", placeholder=words.search_example,
                                   max_length=MAX_TYPED,
                                   info=f"Matches appear below as you type: {words.search_forgives}. Click "
                                        f"one to add it; Add (or Enter) takes the typed text only when it names "
                                        f"exactly one {words.item}.", scale=4)
                add = gr.Button("Add", variant="secondary", scale=1, min_width=100)
            matches = FreeRadio([], value=None, label=f"Matches: click the {words.item} you mean", visible=False,
                                api_types=("string", "integer"), api_description=f"a title or {words.a_source_id}")
            presets = history_handlers.presets
            with gr.Row(visible=bool(presets)):  # presets are MovieLens films: other data sets have none
                preset = FreeDropdown(list(presets), value=None, label="Preset history", scale=3,
                                      api_description="a preset's name: " + (", ".join(presets) or
                                                                             "none on this data set"))
                load_preset = gr.Button("Load preset", scale=1, min_width=100)
            with gr.Row():
                users = history_handlers.user_choices()
                user = FreeDropdown(users, value=None, scale=3,
                                    label=f"Test user ({handlers.pipeline.catalog.dataset})",
                                    api_description="a test user's id, as text"
                                                    + (f", e.g. {users[0][1]!r}" if users else ""))
                load_user = gr.Button("Load a test user", scale=1, min_width=100)
            with gr.Row():
                removable = FreeDropdown([], value=None, label=f"{words.item.capitalize()} to remove", scale=3,
                                         api_types=("string", "integer"),
                                         api_description=f"a title or {words.a_source_id}")
                remove = gr.Button("Remove", scale=1, min_width=100)
                clear = gr.Button("Clear", variant="stop", scale=1, min_width=100)
        with gr.Column(scale=3, min_width=300):
            history = gr.Dataframe(pd.DataFrame(columns=history_handlers.columns),
                                   label=f"{words.history.capitalize()} ({words.order}, oldest first)",
                                   interactive=False, max_height=330, wrap=True)
            notice = gr.Markdown(label="Notice")
            with gr.Row():
                share = gr.Button("Share this history", scale=1, min_width=100)
                # no placeholder and no copy button: either would take the place of the label as the box's
                # accessible name (what a screen reader says)
                link = gr.Textbox(label="Link to this history", scale=4, interactive=False)
    page.components.update(visit=visit, saved=saved, movie=movie, matches=matches, removable=removable,
                           history=history, notice=notice)
    changed, added = page.outputs(HistoryView), page.outputs(AddView)
    api = page.api
    # always_last: the matches follow the text as it is once the previous search returns (one search at a time)
    movie.input(history_handlers.suggest, movie, matches, trigger_mode="always_last", **api("search"), **INSTANT)
    share.click(history_handlers.share, visit, link, **api("share"), **INSTANT)
    page.blocks.load(history_handlers.restore, saved, changed, api_visibility="private", **INSTANT)
    return Edits([add.click, movie.submit, matches.input, remove.click, clear.click, load_preset.click,
                  load_user.click], [
        add.click(history_handlers.add_and_clear, [visit, movie], added, **api("add"), **INSTANT),
        movie.submit(history_handlers.add_and_clear, [visit, movie], added, api_visibility="private", **INSTANT),
        matches.input(history_handlers.pick, [visit, matches], added, **api("pick"), **INSTANT),
        remove.click(history_handlers.remove, [visit, removable], changed, **api("remove"), **INSTANT),
        clear.click(history_handlers.clear, [visit], changed, **api("clear"), **INSTANT),
        load_preset.click(history_handlers.load_preset, [visit, preset], changed, **api("load_preset"), **INSTANT),
        load_user.click(history_handlers.load_test_user, [visit, user], changed, **api("load_test_user"), **INSTANT),
    ])


def results_panel(handlers: DemoHandlers, page: Page, model: ModelEvents) -> Any:
    """Recommend, the fusion sliders and checkboxes, and what comes back (summary, formula, chart, table, download,
    what the verbalizer read, the prompt); returns Recommend's event."""
    results, words, pipeline = handlers.results, page.words, handlers.pipeline
    fusion = results.fusion
    last = gr.State(None)  # the latest results on screen: the fusion sliders re-rank them without a model call
    recommend = gr.Button("Recommend", variant="primary", size="lg")
    with gr.Row():
        llm_weight = gr.Slider(0.0, MAX_WEIGHT, value=fusion.llm, step=WEIGHT_STEP, scale=3, label="LLM weight",
                               info="The weight of the LLM's letters (the verbalizer). 0 = the prior alone"
                                    + (f", with title likelihood at its served {fusion.titles:g}" if fusion.titles
                                       else "") + f". Served: {fusion.llm:g} (chosen on validation).")
        cowatch_weight = gr.Slider(0.0, MAX_WEIGHT, value=fusion.cowatch, step=WEIGHT_STEP, scale=3,
                                   label="Co-watch weight",
                                   info="0 = no co-watch in the ranking"
                                        + (" (it still chose the 20 candidates)" if pipeline.retrieval.pool > 20
                                           else "")
                                        + f". Served: {fusion.cowatch:g} (fitted on held-out examples; the "
                                          f"retriever's weight stays {fusion.retriever:g}).")
        reset = gr.Button("Served weights", scale=1, min_width=120)
    with gr.Row():
        # short labels (they fit a phone's width), the details under them
        can_compare = pipeline.llm.can_compare_base
        compare = gr.Checkbox(False, label="Compare with the base model", interactive=can_compare,
                              info=("One more forward pass, without the adapter. " + NEXT_RECOMMEND if can_compare
                                    else "No adapter is loaded."))
        reverse = gr.Checkbox(False, label="Also rank the list reversed",
                              info=f"One more forward pass: does the LLM follow the {words.items} or the letters? "
                                   f"{NEXT_RECOMMEND}")
        titles = gr.Checkbox(bool(fusion.titles), interactive=not fusion.titles, label="Also ask by title likelihood",
                             info="Each title's likelihood after your history, without letters (one more pass over "
                                  f"the 20 titles). Served with weight {fusion.titles:g}" + (
                                 " (chosen on validation), so always computed." if fusion.titles else
                                 f": validation gave it no weight; shown, not ranked by. {NEXT_RECOMMEND}"))
    summary = gr.Markdown(label="Summary")
    formula = gr.Markdown(label="Final score")  # the one the table is ranked by, after every slider move
    with gr.Row():
        with gr.Column(scale=3, min_width=300):
            chart = gr.Plot(label="Each opinion's probability")
        with gr.Column(scale=4, min_width=300):
            table = gr.Dataframe(pd.DataFrame(columns=RESULT_COLUMNS), label="Ranked candidates", interactive=False,
                                 max_height=640, wrap=True, elem_classes="results-table",
                                 column_widths=KEY_COLUMN_WIDTHS)
    download = gr.DownloadButton("Download these results (CSV)", value=None, size="sm")
    reading = gr.Markdown(label="What the verbalizer read")
    with gr.Accordion("The exact prompt", open=False):
        prompt = gr.Textbox(label="Prompt", lines=12, max_lines=60, interactive=False, buttons=["copy"])
    page.components.update(last=last, llm_weight=llm_weight, cowatch_weight=cowatch_weight, compare=compare,
                           summary=summary, formula=formula, chart=chart, table=table, download=download,
                           reading=reading, prompt=prompt)
    visit = page.components["visit"]
    download.click(results.download_hint, last, None, api_visibility="private", **INSTANT)
    # on every change (a drag, the arrow keys, a number typed, Served weights); always_last: one re-rank at a time,
    # and the latest value is always the last one drawn
    for slider in (llm_weight, cowatch_weight):
        name = page.api("explore_fusion") if slider is llm_weight else {"api_visibility": "private"}
        slider.change(results.ranking_view, [visit, last, llm_weight, cowatch_weight], page.outputs(FusionView),
                      **name, trigger_mode="always_last", **INSTANT)
    reset.click(lambda: (fusion.llm, fusion.cowatch), None, [llm_weight, cowatch_weight], api_visibility="private",
                **INSTANT)
    return recommend.click(gpu_event(results.recommend, model.gpu, RECOMMEND_S, results.error_results,
                                     results.history_problem),
                           [visit, llm_weight, cowatch_weight, compare, reverse, titles], page.outputs(ResultsView),
                           **page.api("recommend"), concurrency_id="recommend", concurrency_limit=model.recommend_jobs)


def race_panel(handlers: DemoHandlers, page: Page, model: ModelEvents, edits: Edits, recommended: Any) -> None:
    """The race against generation on the same history and candidates, streamed; a new history stops it, and results
    made for another history are cleared after every event that may have made them stale."""
    race = handlers.race
    race_streaming = gr.State(False)  # set while a race streams; still set after one was cancelled half-way
    gr.Markdown("### The race: verbalizer vs generation")
    start = gr.Button("Race against generation", variant="secondary", size="lg")
    race_summary = gr.Markdown(RACE_INTRO, label="Race summary")
    with gr.Row():
        timing = gr.Plot(label="Time per stage")
        generated = gr.Textbox(label="Generated text", lines=10, max_lines=30, interactive=False)
    comparison = gr.Dataframe(pd.DataFrame(columns=COMPARISON_COLUMNS), interactive=False, wrap=True,
                              label="The verbalizer's own ranking (the LLM's letters alone) beside the parsed "
                                    "generated one",
                              elem_classes="results-table")
    page.components.update(race_streaming=race_streaming, race_summary=race_summary, timing=timing,
                           generated=generated, comparison=comparison)
    named = page.components
    racing = start.click(gpu_event(race.run, model.gpu, model.race_s, race.race_error,
                                   handlers.results.history_problem),
                         [named["visit"], named["llm_weight"], named["cowatch_weight"], named["compare"]],
                         page.outputs(RaceView), **page.api("race"), concurrency_id="race",
                         concurrency_limit=model.race_jobs, show_progress="minimal")
    # a new history stops a race for the old one (its generation ends too)
    gr.on(edits.triggers, None, None, cancels=[racing], api_visibility="private", **INSTANT)
    for event in [*edits.events, recommended, racing]:  # results made for another history are cleared, whichever
        event.then(race.stale_results, [named["visit"], named["last"], race_streaming], page.outputs(RaceView),
                   api_visibility="private", **INSTANT)
