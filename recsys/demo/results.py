"""Recommend's results: the summary, the ranked table and the opinions chart, the prompt and what the verbalizer
read; the fusion sliders re-rank them without a model call. Handlers return a `ResultsView` (or, for the sliders, a
`FusionView`) whose fields name the components `results_panel` (`recsys.demo.panels`) wires them to."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
import torch

from recsys import plots
from recsys.demo.downloads import Downloads
from recsys.demo.markdown import HELD_OUT, marked, plain
from recsys.demo.visit import Visit
from recsys.demo.words import words_for
from recsys.metrics import spearman
from recsys.pipeline import Pipeline, RaceResult, Recommendation
from recsys.retrieval import HistoryError
from recsys.ranker.fusion import FusionWeights, describe_fusion

# the key columns first (a narrow screen shows them without scrolling), then the details
KEY_COLUMNS = ["Final rank", "Title", "Final", "LLM", "Co-watch", "Retriever"]
RESULT_COLUMNS = [*KEY_COLUMNS, "Letter", "Retriever rank", "Change", "Co-watch evidence"]

BASE_COLUMN = "Base LLM"

REVERSED_COLUMN = "LLM, reversed list"

TITLES_COLUMN = "LLM, titles"  # the LLM asked by title likelihood, no letters

WEIGHT_STEP = 0.05  # the fusion sliders' resolution

MAX_WEIGHT = 4.0  # the fusion sliders' range: 0 .. MAX_WEIGHT

WAIT_SHOWN_MS = 250  # a wait for the model shorter than this is not worth a word
STALE = "The history changed since these results were made: click Recommend (or Race) again."

STALE_CHART = "The history changed: Recommend again."  # short enough for a narrow chart

NO_RESULTS = "Click Recommend first: there are no results to re-rank yet."

ALONE = ("The LLM, Co-watch and Retriever columns (and LLM, titles, when computed) show each opinion alone, as a "
         "probability over the 20; only Final moves with the weights. Change counts places from the candidate's "
         "letter (A = 1, the retriever's order of the 20), not from its Retriever rank among all items.")

NOTHING_TO_DOWNLOAD = "Nothing to download yet: click Recommend first, then download its results."

WHY_ONE_PASS = ("The answer is a single token, so one forward pass gives its whole distribution: reading it at the "
                "letters A–T scores every candidate at once, where generating a ranked list needs a pass per token.")


@dataclass(frozen=True)
class ShownResults:
    """The recommendation on screen and the visit (history, held-out item) it was made for."""

    visit: Visit
    recommendation: Recommendation
    race: RaceResult | None = None  # the race run on it, once finished (its timings go into the download)


class ResultsView(NamedTuple):
    """The outputs of Recommend."""

    summary: str  # timings, notices, the held-out movie (Markdown)
    formula: str  # the final score the table is ranked by, at the weights it was ranked with (Markdown)
    table: pd.DataFrame  # the ranked candidates with every opinion
    chart: Any  # the opinions chart (plotly figure)
    prompt: str  # the exact prompt the verbalizer read
    reading: str  # what the verbalizer read: the letters' share and the top other tokens (Markdown)
    last: ShownResults | None  # the results on screen, for the sliders
    download: str | None  # a CSV of the table on screen, every opinion, the prompt (and the race's timings)


class FusionView(NamedTuple):
    """The outputs of a fusion slider: the results re-ranked at its weights."""

    formula: str
    table: pd.DataFrame
    chart: Any
    download: str | None


def rounded(probability: float | None) -> float | None:
    """A probability to 4 decimals for the table (None stays None)."""
    return None if probability is None else round(probability, 4)


def change_label(place: int, final_rank: int | None) -> str:
    """How far the final rank moved from the candidate's `place` among the 20 in the retriever's order (its letter:
    A = 1), not from its "Retriever rank" among all films: "=", "▲ n" (up) or "▼ n" (down); "" when unranked."""
    if final_rank is None:
        return ""
    if final_rank == place:
        return "="
    return f"▲ {place - final_rank}" if final_rank < place else f"▼ {final_rank - place}"


class ResultsHandlers:
    """Recommend and the fusion explorer over one shared, read-only pipeline."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.catalog = pipeline.catalog
        self.downloads = Downloads()

    @property
    def fusion(self) -> FusionWeights:
        """The fusion the pipeline serves: prior weights fitted on held-out examples, the LLM's chosen on validation."""
        return self.pipeline.fusion

    def weights_at(self, llm_weight: float | None, cowatch_weight: float | None) -> FusionWeights:
        """The served fusion with the explorer's LLM and co-watch weights (None, or the slider's rounding of the
        served value, keeps the served one); the retriever's weight stays."""
        def pick(value, served):
            if value is None or abs(float(value) - served) < WEIGHT_STEP / 2:
                return served
            return min(max(float(value), 0.0), MAX_WEIGHT)
        return replace(self.fusion, llm=pick(llm_weight, self.fusion.llm),
                       cowatch=pick(cowatch_weight, self.fusion.cowatch))

    def evidence_text(self, candidate) -> str:
        """The candidate's co-watch evidence in words: "followed The Matrix (1999) 14×" ("" without any)."""
        if candidate.cowatch_evidence is None:
            return ""
        item, count = candidate.cowatch_evidence
        return f"followed {self.catalog.title(item)} {count}×"

    def summary_markdown(self, visit: Visit, result: Recommendation) -> str:
        """Timings, notices, where the held-out movie landed and how the final rank is made."""
        target = visit.target
        held_out = result.index_of(target)
        lines = [f"**Retrieval** {result.retrieval_ms:,.0f} ms"
                 + (f" · **verbalizer ranking** {result.ranking_ms:,.0f} ms" if result.ranking_ms is not None else "")
                 + (f" (one pass for {result.batch_size} users who clicked together)" if result.batch_size > 1 else "")
                 + (f" · waited {result.waited_ms / 1000:,.1f} s for the model (other users)"
                    if result.waited_ms >= WAIT_SHOWN_MS else "")
                 + (" · **shared**: this history's result, computed once (for an earlier click, or at start-up for a "
                    "preset): no model call now"
                    if result.shared else "")
                 + (f" · **title likelihood** {result.titles_ms:,.0f} ms" if result.titles_ms is not None else "")
                 + f" · history of {words_for(self.catalog.dataset).count(len(result.history))}"
                 + (f" (the prompt shows the last {len(result.prompt.history_titles)})" if result.prompt else "")]
        lines += [f"ℹ️ {plain(n)}" for n in result.notices]
        if target is not None:
            if held_out is None:
                lines.append(f"{HELD_OUT}: **{plain(self.catalog.title(target))}** is not among the "
                             f"{len(result.candidates)} candidates, so the ranker cannot find it.")
            else:
                found = result.candidates[held_out]
                final = f", final rank **{found.final_rank}**" if found.final_rank else ""
                lines.append(f"{HELD_OUT}: **{plain(found.title)}**, retriever rank {found.retriever_rank}{final} "
                             "(at the served fusion).")
        if result.ranker_error:
            lines.append(f"⚠️ **The ranker failed**: {result.ranker_error}. The table shows the retriever's order.")
        return "\n\n".join(lines)

    def formula_markdown(self, weights: FusionWeights, held_out: bool = False) -> str:
        """The final score the table is ranked by, at `weights`, and whether they are the served ones."""
        served = weights == self.fusion
        why = ("the served weights: the retriever's and co-watch fitted on held-out examples, the LLM's chosen on "
               "validation users). Move the sliders to weigh the opinions differently (no model call)." if served else
               "the sliders' weights; **Served weights** goes back to the served ones).")
        star = f" ★ marks the held-out {words_for(self.catalog.dataset).item}." if held_out else ""
        return (f"**Final score** = {describe_fusion(weights)} ({why} {ALONE}{star}")

    def reading_markdown(self, result: Recommendation) -> str:
        """What the verbalizer read: the letters' share of the next-token probability and the top other tokens."""
        if result.letter_mass is None:
            return "_The verbalizer did not run._"
        others = ", ".join(f"`{token!r}` {p:.1%}" for token, p in result.top_other_tokens)
        base = (f" (the base model without the adapter: {result.base_letter_mass:.1%})"
                if result.base_letter_mass is not None else "")
        text = (f"**What the verbalizer reads.** The {len(result.candidates)} candidate letters hold "
                f"**{result.letter_mass:.1%}** of the next-token probability{base}; the likeliest other tokens: "
                f"{others}. The probabilities shown are the letters' share renormalised to 1. {WHY_ONE_PASS}")
        reversed_ = [c.reversed_probability for c in result.candidates]
        if all(p is not None for p in reversed_):
            shown = torch.tensor([c.llm_probability for c in result.candidates])
            films = spearman(shown, torch.tensor(reversed_))
            letters = spearman(shown, torch.tensor(reversed_[::-1]))
            verdict = ("its opinion follows the **films**" if films > letters else
                       "its opinion follows the **letters** (a position habit), not the films")
            text += (f"\n\n**Films or letters?** With the same candidates listed in reverse, the LLM's probabilities "
                     f"agree film by film with Spearman **{films:+.2f}** and letter by letter with **{letters:+.2f}**: "
                     f"{verdict}.")
        return text

    def ranking_view(self, visit: Visit, shown: ShownResults | None, llm_weight: float | None = None,
                     cowatch_weight: float | None = None):
        """The results on screen re-ranked at the explorer's LLM and co-watch weights (`FusionView`: formula, table,
        chart, download); no model call.

        None (or the sliders' rounding of it) is the served fusion; LLM weight 0 is the prior alone (retriever +
        co-watch), both 0 the retriever's order. Results made for another visit (the history changed since)
        are not redrawn.
        """
        if shown is None:
            return FusionView(f"⚠️ {NO_RESULTS}", pd.DataFrame(columns=RESULT_COLUMNS),
                              plots.message_figure(NO_RESULTS), None)
        if shown.visit != visit:
            return FusionView(f"⚠️ {STALE}", pd.DataFrame(columns=RESULT_COLUMNS), plots.message_figure(STALE_CHART),
                              None)
        result = shown.recommendation
        weights = self.weights_at(llm_weight, cowatch_weight)
        target = shown.visit.target
        candidates = result.candidates
        fused = result.fused_at(weights)
        order = fused.order if result.ranking is not None else None
        final = {index: rank for rank, index in enumerate(order, start=1)} if order else {}
        alone = result.alone
        final_probabilities = fused.probabilities if order else [None] * len(candidates)
        extra = [name for name, field in ((BASE_COLUMN, "base_probability"), (REVERSED_COLUMN, "reversed_probability"),
                                          (TITLES_COLUMN, "title_probability"))
                 if any(getattr(c, field) is not None for c in candidates)]
        rows = []
        for index in order or range(len(candidates)):  # index: the candidate's place in LRURec's order of the 20
            c = candidates[index]
            row = {"Final rank": final.get(index), "Letter": c.letter, "Title": marked(c.title, c.item_id, target),
                   "Final": rounded(final_probabilities[index]), "LLM": rounded(c.llm_probability),
                   "Co-watch": round(alone["cowatch"][index], 4),
                   "Retriever": round(alone["retriever"][index], 4),
                   "Retriever rank": c.retriever_rank, "Change": change_label(index + 1, final.get(index)),
                   "Co-watch evidence": self.evidence_text(c), BASE_COLUMN: rounded(c.base_probability),
                   REVERSED_COLUMN: rounded(c.reversed_probability), TITLES_COLUMN: rounded(c.title_probability)}
            rows.append(row)
        columns = KEY_COLUMNS + extra + RESULT_COLUMNS[len(KEY_COLUMNS):]
        held_out = result.index_of(target)
        formula = self.formula_markdown(weights, held_out is not None)
        if order is None:
            table = pd.DataFrame(rows, columns=columns)
            return FusionView("", table, plots.message_figure("No probabilities: the ranker failed (see above)."),
                              self.export(table, shown, weights))
        bars = {"Final": final_probabilities, "LLM": [c.llm_probability for c in candidates],
                "Co-watch": alone["cowatch"], "Retriever": alone["retriever"]}
        if BASE_COLUMN in extra:
            bars["LLM base model (no adapter)"] = [c.base_probability for c in candidates]
        if TITLES_COLUMN in extra:
            bars["LLM by title likelihood"] = [c.title_probability for c in candidates]
        figure = plots.opinions_figure([c.letter for c in candidates], [c.title for c in candidates], bars, order,
                                       highlight=held_out)
        table = pd.DataFrame(rows, columns=columns)
        return FusionView(formula, table, figure, self.export(table, shown, weights))

    def error_results(self, message: str):
        """Results outputs that only carry a message."""
        return ResultsView(f"⚠️ {message}", "", pd.DataFrame(columns=RESULT_COLUMNS), plots.message_figure(message), "",
                           "", None, None)

    def results_view(self, visit: Visit, result: Recommendation, llm_weight: float | None = None,
                     cowatch_weight: float | None = None, race: RaceResult | None = None) -> ResultsView:
        """Recommend's outputs for a recommendation made for `visit` (and the race run on it, once finished)."""
        shown = ShownResults(visit, result, race)
        formula, table, figure, download = self.ranking_view(visit, shown, llm_weight, cowatch_weight)
        prompt = result.prompt.text if result.prompt else ""
        return ResultsView(self.summary_markdown(visit, result), formula, table, figure, prompt,
                           self.reading_markdown(result), shown, download)

    def export(self, table: pd.DataFrame, shown: ShownResults, weights: FusionWeights) -> str:
        """A CSV file of the ranked table as shown (one row a candidate, every opinion), each row also carrying the
        item's source id (MovieLens id, ASIN) and the run: the history's source ids, the fusion, the timings, the
        prompt and, after a race, generation's timings and text. Returns its path (`Downloads`: the same table is the
        same file)."""
        result = shown.recommendation
        frame = table.copy()
        source_id = {c.letter: self.catalog[c.item_id].source_id for c in result.candidates}
        id_name = words_for(self.catalog.dataset).source_id
        frame.insert(3, id_name, [source_id[letter] for letter in frame["Letter"]])
        history = " ".join(str(self.catalog[i].source_id) for i in result.history)
        run = {f"History ({id_name}s, oldest first)": history,
               "Fusion": describe_fusion(weights), "Retrieval ms": round(result.retrieval_ms, 1),
               "Verbalizer ms": None if result.ranking_ms is None else round(result.ranking_ms, 1),
               "Prompt": result.prompt.text if result.prompt else ""}
        race = shown.race
        if race is not None and race.generation_ms is not None:
            run.update({"Generation ms": round(race.generation_ms, 1), "Generated tokens": race.num_generated_tokens,
                        "Generated text": race.generated_text})
        for column, value in run.items():
            frame[column] = value
        return str(self.downloads.write("llamarec-results.csv", frame.to_csv(index=False).encode()))

    @staticmethod
    def download_hint(shown: ShownResults | None) -> None:
        """Say why the download button gives nothing before any Recommend (a toast; a click with results on screen
        downloads them and says nothing)."""
        if shown is None:
            gr.Warning(NOTHING_TO_DOWNLOAD)

    def history_problem(self, visit: Visit, *rest) -> str | None:
        """Why the visit's history cannot be recommended for (the message Recommend would show), or None: checked
        before a GPU is asked for."""
        try:
            self.pipeline.retrieval.check_history(visit.history)
        except HistoryError as error:
            return str(error)
        return None

    def recommend(self, visit: Visit, llm_weight: float | None = None, cowatch_weight: float | None = None,
                  compare_base: bool = False, reverse_check: bool = False, titles: bool = False,
                  progress=gr.Progress()):
        """Retrieve and rank for the visit's history (`ResultsView`).
        With `titles` the LLM is also asked by title likelihood (one more pass, shown beside the letters)."""
        progress(0.1, desc="Retrieving with LRURec, then ranking with the verbalizer")
        try:
            result = self.pipeline.recommend(visit.history, compare_base=bool(compare_base),
                                             reverse_check=bool(reverse_check), titles=bool(titles))
        except HistoryError as error:
            return self.error_results(str(error))
        return self.results_view(visit, result, llm_weight, cowatch_weight)
