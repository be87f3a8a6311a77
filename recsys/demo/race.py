"""The race: the verbalizer's one pass against generating the ranked list, streamed as it is written. Handlers return
a `RaceView` (Recommend's outputs, the race's, and whether a race is streaming) whose fields name the components
`race_panel` (`recsys.demo.panels`) wires them to."""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd

from recsys import paper, plots
from recsys.demo.markdown import marked
from recsys.demo.visit import Visit
from recsys.demo.results import (RESULT_COLUMNS, STALE, STALE_CHART, WAIT_SHOWN_MS, ResultsHandlers, ResultsView,
                                 ShownResults)
from recsys.pipeline import RaceResult, Recommendation
from recsys.ranker.fusion import LLM_ALONE
from recsys.retrieval import HistoryError

COMPARISON_COLUMNS = ["Position", "Verbalizer", "Generation (parsed)"]

STREAM_INTERVAL_S = 0.25  # how often the race redraws the generated text: often enough to watch, rare enough to be free

RACE_INTRO = ("Click **Race against generation** to time both on the same history and candidates. The prompt builder "
              "is the same; its instruction asks for the titles in order instead of one letter.")


class RaceAbandoned(RuntimeError):
    """Raised inside the race's generation loop once its stream was closed, to stop generating for nobody."""


class RaceView(NamedTuple):
    """The outputs of a race step (and of `stale_results`): Recommend's outputs, then the race's."""

    summary: str
    formula: str
    table: pd.DataFrame
    chart: Any
    prompt: str
    reading: str
    last: ShownResults | None
    download: str | None
    race_summary: str  # the running clock, then generation's time against the verbalizer's (Markdown)
    timing: Any  # time per stage (plotly figure)
    generated: str  # the generated text so far
    comparison: pd.DataFrame  # the verbalizer's ranking beside the parsed generated one
    race_streaming: bool  # True while a race streams (a cancelled one leaves it set: `stale_results` resets it)

    @classmethod
    def of(cls, results: ResultsView | tuple, race: tuple, streaming: Any) -> RaceView:
        """Recommend's outputs, the race's four (summary, timing, generated, comparison) and the streaming flag."""
        return cls._make((*results, *race, streaming))


class RaceHandlers:
    """The race's event handlers: Recommend's results (drawn by `results`), then generation against them."""

    def __init__(self, results: ResultsHandlers):
        self.results = results
        self.pipeline = results.pipeline

    def race_error(self, message: str) -> RaceView:
        """Results and race outputs (and the streaming flag, off) that only carry a message."""
        return RaceView.of(self.results.error_results(message), (f"⚠️ {message}", plots.message_figure(message), "",
                                                         pd.DataFrame(columns=COMPARISON_COLUMNS)), False)

    def stale_results(self, visit: Visit, shown: ShownResults | None, race_streaming: bool = False) -> RaceView:
        """Results and race outputs (and the race's streaming flag) after an event: when the results on screen were
        made for another visit, the results are cleared with a note and the race section starts over; when a race
        was cancelled half-way (`race_streaming` still set), its section starts over; else nothing changes."""
        race_reset = (RACE_INTRO, None, "", pd.DataFrame(columns=COMPARISON_COLUMNS))
        unchanged = ResultsView._make(gr.skip() for _ in ResultsView._fields)
        if shown is None or shown.visit == visit:
            return RaceView.of(unchanged, race_reset if race_streaming else (gr.skip(),) * 4,
                               False if race_streaming else gr.skip())
        stale = ResultsView(f"⚠️ {STALE}", "", pd.DataFrame(columns=RESULT_COLUMNS),
                            plots.message_figure(STALE_CHART), "", "", None, None)
        return RaceView.of(stale, race_reset, False)

    def generating_markdown(self, result: Recommendation, seconds: float, num_tokens: int) -> str:
        """The race's running clock while generation writes its list, beside the verbalizer's time."""
        ratio = seconds * 1000 / (result.ranking_ms or float("nan"))
        gap = f": already **{ratio:,.1f}×** its time" if ratio >= 1 else ""
        tokens = f"{num_tokens} token" + ("" if num_tokens == 1 else "s")
        return (f"**Generating** the ranked list… **{seconds:,.1f} s**, **{tokens}** so far. The "
                f"verbalizer ranked all {len(result.candidates)} candidates in **{result.ranking_ms:,.0f} ms** "
                f"(one forward pass){gap}.")

    def race_view(self, visit: Visit, race: RaceResult):
        """(race summary, timing chart, generated text, ranking comparison table) of a race, finished or starting."""
        result = race.recommendation
        stages = {"retrieval": result.retrieval_ms}
        if result.ranking_ms is not None:
            stages["verbalizer ranking"] = result.ranking_ms
        if race.error:
            summary = f"⚠️ **The generation baseline failed**: {race.error}"
        elif race.generation_ms is None:
            summary = self.generating_markdown(result, 0.0, 0)
        else:
            stages["generation"] = race.generation_ms
            summary = (f"**Generation** {race.generation_ms:,.0f} ms for {race.num_generated_tokens} tokens vs "
                       f"**verbalizer** {result.ranking_ms:,.0f} ms for one forward pass: generation takes "
                       f"**{race.ratio:,.1f}×** as long (the paper: {paper.GENERATION_S} s vs under 1 s with "
                       "Llama-2-7b).")
            if race.waited_ms >= WAIT_SHOWN_MS:
                summary += (f" Other users' Recommends ran between its tokens: the {race.waited_ms / 1000:,.1f} s it "
                            "waited for them is not counted.")
            if race.num_named is not None and race.num_named < len(result.candidates):
                summary += (f" The generated text named **{race.num_named} of {len(result.candidates)}** candidates; "
                            "the parsed column lists the rest in the retriever's order.")
        ratio = f" — generation / verbalizer = {race.ratio:,.1f}×" if race.ratio else ""
        figure = plots.timing_figure(stages, title=f"Time per stage (ms){ratio}")

        names = [marked(f"({c.letter}) {c.title}", c.item_id, visit.target) for c in result.candidates]
        # the LLM's letters alone, as generation is the LLM alone: not the final ranking, which weighs other opinions
        verbalizer = [names[i] for i in (result.fused_at(LLM_ALONE).order if "llm" in result.opinions else [])]
        generated = [names[i] for i in race.generated_ranking]
        size = max(len(verbalizer), len(generated))
        table = pd.DataFrame(zip(range(1, size + 1), verbalizer + [""] * (size - len(verbalizer)),
                                 generated + [""] * (size - len(generated))), columns=COMPARISON_COLUMNS)
        return summary, figure, race.generated_text, table

    def run(self, visit: Visit, llm_weight: float | None = None, cowatch_weight: float | None = None,
            compare_base: bool = False):
        """Recommend, then race the generation baseline on the same prompt, streaming (a generator of results outputs
        + race outputs + whether the race is still streaming).

        The first yield shows the verbalizer's results and ranking; then every STREAM_INTERVAL_S the text generated
        so far with a running clock and token count; the last the timing chart and the parsed comparison. The
        streaming flag is True from the first yield to the last, so `stale_results` can tell a race that was
        cancelled half-way (its section would otherwise stay frozen) from a finished one.
        Generation runs on its own thread and only queues token ids; decoding and drawing happen here, so
        streaming leaves the measured generation time alone (`bench/race_streaming.py` measures both ways).
        """
        try:
            result = self.pipeline.recommend(visit.history, compare_base=bool(compare_base))
        except HistoryError as error:
            yield self.race_error(str(error))
            return
        results = self.results.results_view(visit, result, llm_weight, cowatch_weight)
        if result.ranking is None:
            yield RaceView.of(results, self.race_view(visit, self.pipeline.race(result)), False)
            return
        yield RaceView.of(results, self.race_view(visit, RaceResult(result)), True)
        token_ids: queue.SimpleQueue[int] = queue.SimpleQueue()
        left = threading.Event()  # set when nobody watches any more: the stream was closed (history changed, page left)

        def on_token(token_id: int) -> None:  # inside generation's timed loop: a flag check and a queue put
            if left.is_set():
                raise RaceAbandoned("the race was left before generation ended")
            token_ids.put(token_id)

        generated: list[int] = []
        unchanged = ResultsView._make(gr.skip() for _ in ResultsView._fields)
        pool = ThreadPoolExecutor(max_workers=1)
        started = time.perf_counter()
        running = pool.submit(self.pipeline.race, result, on_token)
        try:
            while not wait([running], timeout=STREAM_INTERVAL_S).done:
                while not token_ids.empty():
                    generated.append(token_ids.get())
                text = (self.pipeline.llm.display_tokenizer.decode(generated, skip_special_tokens=True)
                        if generated else "")
                clock = self.generating_markdown(result, time.perf_counter() - started, len(generated))
                yield RaceView.of(unchanged, (clock, gr.skip(), text, gr.skip()), gr.skip())
        finally:
            # A closed stream (gradio closes it on cancel, on the server's event loop) stops generating at the next
            # token, freeing the CPU; it returns at once rather than waiting for that token, which can be a whole
            # prefill away, with every other visitor's events held up behind it.
            left.set()
            pool.shutdown(wait=False)
        race = running.result()
        # its download has the race
        finished = self.results.results_view(visit, result, llm_weight, cowatch_weight, race)
        yield RaceView.of(finished, self.race_view(visit, race), False)
