"""The demo's event handlers and the views they build: plain functions from values to values over one pipeline.

Tested without a browser; `app.py` only wires them to Gradio components.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from collections.abc import Sequence
from dataclasses import dataclass

import gradio as gr
import pandas as pd
import torch

from recsys import plots
from recsys.data.catalog import Movie
from recsys.demo.search import TitleSearch
from recsys.metrics import spearman
from recsys.pipeline import MAX_INPUT_ITEMS, HistoryError, Pipeline, RaceResult, Recommendation
from recsys.ranker.fusion import FusionWeights, describe_fusion

HELD_OUT = "★ held out"
RESULT_COLUMNS = ["Final rank", "Letter", "Title", "Final", "LLM", "Co-watch", "Retriever", "Retriever rank", "Change",
                  "Co-watch evidence"]
BASE_COLUMN = "Base LLM"
REVERSED_COLUMN = "LLM, reversed list"
TITLES_COLUMN = "LLM, titles"  # the LLM asked by title likelihood, no letters
WEIGHT_STEP = 0.05  # the fusion sliders' resolution
MAX_WEIGHT = 4.0  # the fusion sliders' range: 0 .. MAX_WEIGHT
COMPARISON_COLUMNS = ["Position", "Verbalizer", "Generation (parsed)"]
MAX_OFFERED = 10  # matches shown to pick from, while typing and after an Add that was not exactly one title
MAX_QUERY_SHOWN = 40  # characters of the typed text the matches list names (longer text ends in "…")
STREAM_INTERVAL_S = 0.25  # how often the race redraws the generated text: often enough to watch, rare enough to be free
class RaceLeft(RuntimeError):
    """Raised inside the race's generation loop once its stream was closed, to stop generating for nobody."""


STALE = "The history changed since these results were made: click Recommend (or Race) again."
STALE_CHART = "The history changed: Recommend again."  # short enough for a narrow chart
RACE_INTRO = ("Click **Race against generation** to time both on the same history and candidates. The prompt builder "
              "is the same; its instruction asks for the titles in order instead of one letter.")
WHY_ONE_PASS = ("The answer is a single token, so one forward pass gives its whole distribution: reading it at the "
                "letters A–T scores every candidate at once, where generating a ranked list needs a pass per token.")

PRESETS = {  # classroom histories named by taste, oldest viewing first
    "Sci-fi fan": ["The Terminator (1984)", "Alien (1979)", "Blade Runner (1982)",
                   "Star Wars: Episode IV - A New Hope (1977)", "Back to the Future (1985)", "The Matrix (1999)",
                   "Inception (2010)", "Interstellar (2014)"],
    "Animation & family": ["Beauty and the Beast (1991)", "Aladdin (1992)", "The Lion King (1994)", "Toy Story (1995)",
                           "Toy Story 2 (1999)", "Monsters, Inc. (2001)", "Shrek (2001)", "Finding Nemo (2003)"],
    "Crime classics": ["The Godfather (1972)", "The Godfather: Part II (1974)", "Goodfellas (1990)",
                       "Reservoir Dogs (1992)", "Pulp Fiction (1994)", "Heat (1995)", "The Usual Suspects (1995)",
                       "Fargo (1996)"],
    "Romantic comedies": ["When Harry Met Sally... (1989)", "Pretty Woman (1990)", "Sleepless in Seattle (1993)",
                          "Four Weddings and a Funeral (1994)", "Notting Hill (1999)", "Love Actually (2003)"],
    "Horror night": ["The Exorcist (1973)", "Halloween (1978)", "The Shining (1980)",
                     "The Silence of the Lambs (1991)", "Scream (1996)"],
    "World cinema": ["Seven Samurai (1954)", "Cinema Paradiso (1989)", "Life Is Beautiful (1997)",
                     "Crouching Tiger, Hidden Dragon (2000)", "Amelie (2001)", "Spirited Away (2001)",
                     "Pan's Labyrinth (2006)"],
}


MAX_TYPED = 200  # characters of typed text read (a title is at most ~160); the rest is ignored
# What makes markup inside a line of Markdown: emphasis, code, links and images (their brackets), HTML tags,
# strike-through, tables, headings. Parentheses, dots and dashes only do so after these or at a line's start.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>~|#])")
_AUTOLINK = re.compile(r"(?i)(https?|ftp|www)([:.])")  # where GitHub-style Markdown starts a bare link


def plain(text: str) -> str:
    """`text` (a title, or what someone typed) shown literally in Markdown: every character Markdown or HTML would
    read as markup is backslash-escaped ("M*A*S*H" stays M*A*S*H, "[x](http://...)" is no link)."""
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))  # one line: no list or heading can start
    return _AUTOLINK.sub(r"\1\\\2", text)  # "http\://", "www\.": shown as typed, never made a link


def marked(text: str, item_id: int, target: int | None) -> str:
    """`text` with the held-out marker when `item_id` is the session's held-out movie."""
    return f"{text}  {HELD_OUT}" if item_id == target else text


def new_session() -> dict:
    """A user's per-session state: history (item ids, oldest first), held-out item and test user (or None)."""
    return {"history": [], "target": None, "user": None}


@dataclass(frozen=True)
class ShownResults:
    """The recommendation on screen and the session (history, held-out movie) it was made for."""

    session: dict
    recommendation: Recommendation


def rounded(probability: float | None) -> float | None:
    """A probability to 4 decimals for the table (None stays None)."""
    return None if probability is None else round(probability, 4)


def change_label(retriever_rank: int, final_rank: int | None) -> str:
    """How far the final rank moved from the candidate's place in the retriever's order of the 20: "=", "▲ n" (up)
    or "▼ n" (down); "" when unranked."""
    if final_rank is None:
        return ""
    if final_rank == retriever_rank:
        return "="
    return f"▲ {retriever_rank - final_rank}" if final_rank < retriever_rank else f"▼ {final_rank - retriever_rank}"


class DemoHandlers:
    """The event handlers over one shared, read-only pipeline."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.catalog = pipeline.catalog
        self.search = TitleSearch(self.catalog)
        self.presets = {name: ids for name, titles in PRESETS.items()
                        if (ids := [m[0].item_id for t in titles if len(m := self.search.find(t)) == 1])}

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
        return self.fusion.but(llm=pick(llm_weight, self.fusion.llm), cowatch=pick(cowatch_weight, self.fusion.cowatch))

    def evidence_text(self, candidate) -> str:
        """The candidate's co-watch evidence in words: "followed The Matrix (1999) 14×" ("" without any)."""
        if candidate.cowatch_evidence is None:
            return ""
        item, count = candidate.cowatch_evidence
        return f"followed {self.catalog.title(item)} {count}×"

    def user_choices(self) -> list[tuple[str, int]]:
        """(label, user id) for the test-user dropdown."""
        users = self.pipeline.test_users
        if users is None:
            return []
        return [(f"User {u} ({len(users[u].history)} movies)", u) for u in users.ids()]

    def matches_update(self, movies: list[Movie], text: str = ""):
        """The matches list showing the first MAX_OFFERED of `movies` to pick from (hidden when there are none).

        The label names the typed `text` the matches answer, so a person (and a browser test) can tell a list
        that follows the latest keystroke from one still answering an earlier prefix.
        """
        shown = movies[:MAX_OFFERED]
        more = f" ({len(shown)} of {len(movies)}: type more of the title)" if len(movies) > len(shown) else ""
        shown_text = " ".join(text.split())  # one line, single spaces
        shown_text = shown_text if len(shown_text) <= MAX_QUERY_SHOWN else shown_text[:MAX_QUERY_SHOWN - 1] + "…"
        query = f" for “{shown_text}”" if shown_text else ""
        return gr.update(choices=[(self.search.label(m, text), m.item_id) for m in shown], value=None,
                         visible=bool(shown),
                         label=f"Matches{query}{more}: click the movie you mean")

    def suggest(self, text: str):
        """The matches list for the text typed so far, by the forgiving search: exact titles first, then partial."""
        text = (text or "")[:MAX_TYPED]
        return self.matches_update(self.search.search(text).ranked, text)

    # --- the watch history -------------------------------------------------------------------------------------

    def history_view(self, session: dict, notice: str = "", offered: Sequence[Movie] = (), query: str = ""):
        """Outputs after a history event: (session, history table, remove-dropdown update, notice, matches update).

        `offered` are the matches of the typed `query` to pick from (the matches list is hidden when there are none).
        """
        history = session["history"]
        table = pd.DataFrame({"#": range(1, len(history) + 1), "Title": self.catalog.titles(history),
                              "Genres": [", ".join(self.catalog[i].genres) for i in history]})
        notes = [notice] if notice else []
        if len(history) > self.pipeline.window:
            notes.append(f"LRURec reads only the latest {self.pipeline.window} of these {len(history)} movies "
                         "(the oldest are dropped from its input).")
        if session["user"] is not None:
            notes.append(f"Test user {session['user']}: the held-out next movie is hidden until you click "
                         "Recommend, then marked ★ in every result.")
        remove = gr.update(choices=[(f"{n}. {t}", i) for n, (t, i) in
                                    enumerate(zip(self.catalog.titles(history), history), start=1)], value=None)
        return session, table, remove, "\n\n".join(notes), self.matches_update(list(offered), query)

    def add(self, session: dict, movie):
        """Add the movie the person chose: an item id picked from the matches, or typed text naming exactly one movie.

        Typed text is always a title ("300" is the film 300, never item id 300). Text that names several
        movies, or only part of a title, adds nothing: its matches are offered to pick from instead.
        """
        if isinstance(movie, int) and not isinstance(movie, bool):
            if movie not in self.catalog:
                return self.history_view(session, f"⚠️ Unknown item id {movie}: pick a movie from the list.")
            return self.append(session, movie)
        text = "" if movie is None else str(movie)[:MAX_TYPED].strip()
        if not text:
            return self.history_view(session, "⚠️ Type a title in the search box first.")
        found = self.search.search(text)
        if len(found.exact) == 1:
            movie = found.exact[0]
            return self.append(session, movie.item_id,
                               "" if text == movie.title else f"Added '{plain(self.search.label(movie, text))}'.")
        offered = found.ranked
        if not offered:
            return self.history_view(session, f"⚠️ Unknown title '{plain(text)}': it is not in the catalog. "
                                              "Type part of it and pick a movie from the matches.")
        count = "1 movie matches" if len(offered) == 1 else f"{len(offered)} movies match"
        return self.history_view(session, f"'{plain(text)}' is not exactly one title; {count}. Click the one you mean "
                                          "under **Matches**: nothing was added.", offered, text)

    def add_and_clear(self, session: dict, movie):
        """`add`, plus the search box's update: emptied once the history took the movie (so Enter cannot add it again
        by accident), left as typed when nothing was added."""
        outputs = self.add(session, movie)
        return (*outputs, "" if outputs[0]["history"] != session["history"] else gr.skip())

    def append(self, session: dict, item_id: int, notice: str = ""):
        """History outputs with `item_id` appended; a repeat moves it to the latest viewing."""
        history = list(session["history"])
        if item_id in history:
            history.remove(item_id)
            notice = f"'{plain(self.catalog.title(item_id))}' was already in the history: moved to the latest viewing."
        if len(history) >= MAX_INPUT_ITEMS:
            return self.history_view(session, f"⚠️ The history is full ({len(history)} movies): remove some first.")
        history.append(item_id)
        return self.history_view({**session, "history": history}, notice)

    def remove(self, session: dict, item_id):
        """Remove one movie (by item id) from the history."""
        if item_id is None or item_id not in session["history"]:
            return self.history_view(session, "⚠️ Pick a movie of the history to remove.")
        return self.history_view({**session, "history": [i for i in session["history"] if i != item_id]})

    def clear(self, session: dict):
        """Empty the history and forget any test user."""
        return self.history_view(new_session(), "History cleared.")

    def load_test_user(self, session: dict, user):
        """Replace the history with a real test user's; their held-out next movie is kept for the results."""
        users = self.pipeline.test_users
        if users is None:
            return self.history_view(session, "⚠️ No test users in this checkpoint; create them with: "
                                              "python -m recsys.data.test_users")
        try:
            test_user = users[int(user)]
        except (KeyError, TypeError, ValueError):
            return self.history_view(session, f"⚠️ Unknown test user {user!r}: pick one from the list.")
        return self.history_view({"history": list(test_user.history), "target": test_user.target,
                                  "user": test_user.user}, f"Loaded test user {test_user.user}.")

    def load_preset(self, session: dict, name):
        """Replace the history with a preset named by taste."""
        if name not in self.presets:
            return self.history_view(session, f"⚠️ Unknown preset {name!r}: pick one from the list.")
        return self.history_view({**new_session(), "history": list(self.presets[name])}, f"Loaded preset '{name}'.")

    # --- results ------------------------------------------------------------------------------------------------

    def summary_markdown(self, session: dict, result: Recommendation) -> str:
        """Timings, notices, where the held-out movie landed and how the final rank is made."""
        target = session["target"]
        held_out = result.index_of(target)
        lines = [f"**Retrieval** {result.retrieval_ms:,.0f} ms"
                 + (f" · **verbalizer ranking** {result.ranking_ms:,.0f} ms" if result.ranking_ms is not None else "")
                 + (f" · **title likelihood** {result.titles_ms:,.0f} ms" if result.titles_ms is not None else "")
                 + f" · history of {len(result.history)} movies"
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
                             "(at the validation-chosen fusion).")
        if result.ranker_error:
            lines.append(f"⚠️ **The ranker failed**: {result.ranker_error}. The table shows the retriever's order.")
        else:
            lines.append(f"ℹ️ Final score = {describe_fusion(self.fusion)}: the opinions of each candidate, "
                         "the retriever's and co-watch weights fitted on held-out examples, the LLM's chosen on "
                         "validation users. Move the sliders to weigh them differently (no model call).")
        return "\n\n".join(lines)

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
            shown = torch.tensor([c.probability for c in result.candidates])
            films = spearman(shown, torch.tensor(reversed_))
            letters = spearman(shown, torch.tensor(reversed_[::-1]))
            verdict = ("its opinion follows the **films**" if films > letters else
                       "its opinion follows the **letters** (a position habit), not the films")
            text += (f"\n\n**Films or letters?** With the same candidates listed in reverse, the LLM's probabilities "
                     f"agree film by film with Spearman **{films:+.2f}** and letter by letter with **{letters:+.2f}**: "
                     f"{verdict}.")
        return text

    def ranking_view(self, session: dict, shown: ShownResults | None, llm_weight: float | None = None,
                     cowatch_weight: float | None = None):
        """(results table, opinions chart) of the results on screen at the explorer's LLM and co-watch weights; no
        model call.

        None (or the sliders' rounding of it) is the served fusion; LLM weight 0 is the prior alone (retriever +
        co-watch), both 0 the retriever's order. Results made for another session (the history changed since)
        are not redrawn.
        """
        if shown is None:
            return pd.DataFrame(columns=RESULT_COLUMNS), plots.message_figure("Click Recommend first.")
        if shown.session != session:
            return pd.DataFrame(columns=RESULT_COLUMNS), plots.message_figure(STALE_CHART)
        result = shown.recommendation
        weights = self.weights_at(llm_weight, cowatch_weight)
        target = shown.session["target"]
        candidates = result.candidates
        fused = result.at(weights)
        order = fused.order if result.ranking is not None else None
        final = {index: rank for rank, index in enumerate(order, start=1)} if order else {}
        opinions = fused.terms
        final_probabilities = fused.probabilities if order else [None] * len(candidates)
        extra = [name for name, field in ((BASE_COLUMN, "base_probability"), (REVERSED_COLUMN, "reversed_probability"),
                                          (TITLES_COLUMN, "title_probability"))
                 if any(getattr(c, field) is not None for c in candidates)]
        rows = []
        for index in order or range(len(candidates)):  # index: the candidate's place in LRURec's order of the 20
            c = candidates[index]
            row = {"Final rank": final.get(index), "Letter": c.letter, "Title": marked(c.title, c.item_id, target),
                   "Final": rounded(final_probabilities[index]), "LLM": rounded(c.probability),
                   "Co-watch": round(opinions["cowatch"][index], 4),
                   "Retriever": round(opinions["retriever"][index], 4),
                   "Retriever rank": c.retriever_rank, "Change": change_label(index + 1, final.get(index)),
                   "Co-watch evidence": self.evidence_text(c), BASE_COLUMN: rounded(c.base_probability),
                   REVERSED_COLUMN: rounded(c.reversed_probability), TITLES_COLUMN: rounded(c.title_probability)}
            rows.append(row)
        columns = RESULT_COLUMNS[:5] + extra + RESULT_COLUMNS[5:]
        if order is None:
            return pd.DataFrame(rows, columns=columns), plots.message_figure(
                "No probabilities: the ranker failed (see above).")
        held_out = result.index_of(target)
        bars = {"Final": final_probabilities, "LLM": [c.probability for c in candidates],
                "Co-watch": opinions["cowatch"], "Retriever": opinions["retriever"]}
        if BASE_COLUMN in extra:
            bars["LLM base model (no adapter)"] = [c.base_probability for c in candidates]
        if TITLES_COLUMN in extra:
            bars["LLM by title likelihood"] = [c.title_probability for c in candidates]
        figure = plots.opinions_figure(
            [c.letter for c in candidates], [c.title for c in candidates], bars, order, highlight=held_out,
            title=f"Three opinions and the final one: {describe_fusion(weights)}"
                  + (" (★ = held-out movie)" if held_out is not None else ""))
        return pd.DataFrame(rows, columns=columns), figure

    def error_results(self, message: str):
        """Results outputs that only carry a message."""
        return (f"⚠️ {message}", pd.DataFrame(columns=RESULT_COLUMNS), plots.message_figure(message), "", "", None)

    def results_view(self, session: dict, result: Recommendation, llm_weight: float | None = None,
                     cowatch_weight: float | None = None):
        """(summary, table, chart, prompt, verbalizer reading, shown results) of a recommendation for `session`."""
        shown = ShownResults(session, result)
        table, figure = self.ranking_view(session, shown, llm_weight, cowatch_weight)
        prompt = result.prompt.text if result.prompt else ""
        return self.summary_markdown(session, result), table, figure, prompt, self.reading_markdown(result), shown

    def history_problem(self, session: dict, *rest) -> str | None:
        """Why the session's history cannot be recommended for (the message Recommend would show), or None: checked
        before a GPU is asked for."""
        try:
            self.pipeline.check_history(session["history"])
        except HistoryError as error:
            return str(error)
        return None

    def race_error(self, message: str):
        """Results and race outputs (and the streaming flag, off) that only carry a message."""
        return (*self.error_results(message), f"⚠️ {message}", plots.message_figure(message), "",
                pd.DataFrame(columns=COMPARISON_COLUMNS), False)

    def stale_results(self, session: dict, shown: ShownResults | None, race_streaming: bool = False):
        """Results and race outputs (and the race's streaming flag) after an event: when the results on screen were
        made for another session, the results are cleared with a note and the race section starts over; when a race
        was cancelled half-way (`race_streaming` still set), its section starts over; else nothing changes."""
        race_reset = (RACE_INTRO, None, "", pd.DataFrame(columns=COMPARISON_COLUMNS), False)
        if shown is None or shown.session == session:
            return (*(gr.skip() for _ in range(6)), *(race_reset if race_streaming else (gr.skip(),) * 5))
        return (f"⚠️ {STALE}", pd.DataFrame(columns=RESULT_COLUMNS), plots.message_figure(STALE_CHART), "", "", None,
                *race_reset)

    def recommend(self, session: dict, llm_weight: float | None = None, cowatch_weight: float | None = None,
                  compare_base: bool = False, reverse_check: bool = False, titles: bool = False,
                  progress=gr.Progress()):
        """Retrieve and rank for the session's history: (summary, table, chart, prompt, reading, shown results).
        With `titles` the LLM is also asked by title likelihood (one more pass, shown beside the letters)."""
        progress(0.1, desc="Retrieving with LRURec, then ranking with the verbalizer")
        try:
            result = self.pipeline.recommend(session["history"], compare_base=bool(compare_base),
                                             reverse_check=bool(reverse_check), titles=bool(titles))
        except HistoryError as error:
            return self.error_results(str(error))
        return self.results_view(session, result, llm_weight, cowatch_weight)

    def generating_markdown(self, result: Recommendation, seconds: float, num_tokens: int) -> str:
        """The race's running clock while generation writes its list, beside the verbalizer's time."""
        ratio = seconds * 1000 / (result.ranking_ms or float("nan"))
        gap = f": already **{ratio:,.1f}×** its time" if ratio >= 1 else ""
        tokens = f"{num_tokens} token" + ("" if num_tokens == 1 else "s")
        return (f"**Generating** the ranked list… **{seconds:,.1f} s**, **{tokens}** so far. The "
                f"verbalizer ranked all {len(result.candidates)} candidates in **{result.ranking_ms:,.0f} ms** "
                f"(one forward pass){gap}.")

    def race_view(self, session: dict, race: RaceResult):
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
                       f"**{race.ratio:,.1f}×** as long (the paper: {plots.PAPER_GENERATION_S} s vs under 1 s with "
                       "Llama-2-7b).")
            if race.num_named is not None and race.num_named < len(result.candidates):
                summary += (f" The generated text named **{race.num_named} of {len(result.candidates)}** candidates; "
                            "the parsed column lists the rest in the retriever's order.")
        ratio = f" — generation / verbalizer = {race.ratio:,.1f}×" if race.ratio else ""
        figure = plots.timing_figure(stages, title=f"Time per stage (ms){ratio}")

        names = [marked(f"({c.letter}) {c.title}", c.item_id, session["target"]) for c in result.candidates]
        verbalizer = [names[i] for i in result.ranking or []]
        generated = [names[i] for i in race.generated_ranking]
        size = max(len(verbalizer), len(generated))
        table = pd.DataFrame(zip(range(1, size + 1), verbalizer + [""] * (size - len(verbalizer)),
                                 generated + [""] * (size - len(generated))), columns=COMPARISON_COLUMNS)
        return summary, figure, race.generated_text, table

    def race(self, session: dict, llm_weight: float | None = None, cowatch_weight: float | None = None,
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
            result = self.pipeline.recommend(session["history"], compare_base=bool(compare_base))
        except HistoryError as error:
            yield self.race_error(str(error))
            return
        results = self.results_view(session, result, llm_weight, cowatch_weight)
        if result.ranking is None:
            yield (*results, *self.race_view(session, self.pipeline.race(result)), False)
            return
        yield (*results, *self.race_view(session, RaceResult(result)), True)
        token_ids: queue.SimpleQueue[int] = queue.SimpleQueue()
        left = threading.Event()  # set when nobody watches any more: the stream was closed (history changed, page left)

        def on_token(token_id: int) -> None:  # inside generation's timed loop: a flag check and a queue put
            if left.is_set():
                raise RaceLeft("the race was left before generation ended")
            token_ids.put(token_id)

        generated: list[int] = []
        unchanged = tuple(gr.skip() for _ in results)
        with ThreadPoolExecutor(max_workers=1) as pool:
            started = time.perf_counter()
            running = pool.submit(self.pipeline.race, result, on_token)
            try:
                while not wait([running], timeout=STREAM_INTERVAL_S).done:
                    while not token_ids.empty():
                        generated.append(token_ids.get())
                    text = self.pipeline.tokenizer.decode(generated, skip_special_tokens=True) if generated else ""
                    yield (*unchanged, self.generating_markdown(result, time.perf_counter() - started, len(generated)),
                           gr.skip(), text, gr.skip(), gr.skip())
            finally:  # a closed stream (gradio closes it on cancel) stops generating at the next token, freeing the CPU
                left.set()
            race = running.result()
        yield (*results, *self.race_view(session, race), False)
