"""LlamaRec demo: build a watch history, retrieve with LRURec, rank with the verbalizer, race the generation baseline.

`python app.py` serves on http://127.0.0.1:7860 with the committed checkpoints; `--help` lists the flags.
The work is done by `recsys.pipeline.Pipeline`; this file builds the UI and wires it to the pipeline.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no version check or telemetry: start offline

try:  # Hugging Face ZeroGPU: `spaces` must be imported before torch
    import spaces
except ImportError:
    spaces = None

import argparse
import json
import sys
from pathlib import Path

import gradio as gr
import pandas as pd
import torch

from recsys import plots
from recsys.pipeline import (MAX_INPUT_ITEMS, HistoryError, Pipeline, PipelineConfig, RaceResult, Recommendation,
                             default_adapter)
from recsys.ranker.model import TRAIN_COMMAND as RANKER_TRAIN_COMMAND
from recsys.ranker.model import RankerLoadConfig
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

REPO_ROOT = Path(__file__).resolve().parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
EFFICIENCY_FIGURE = REPO_ROOT / "assets" / "efficiency.png"
MODEL_CONCURRENCY = 1  # one model job at a time: a CPU forward pass already uses every core
QUEUE_SIZE = 64
HELD_OUT = "★ held out"
RESULT_COLUMNS = ["Final rank", "Letter", "Title", "Probability", "Retriever rank", "Change"]
COMPARISON_COLUMNS = ["Position", "Verbalizer", "Generation (parsed)"]

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

BENCH_COMMANDS = {
    "retriever_quality": "python bench/retriever_quality.py --json bench/results/retriever_quality.json",
    "ranker_quality": "python bench/ranker_quality.py --json bench/results/ranker_quality.json",
    "efficiency": "python bench/efficiency.py --json bench/results/efficiency.json",
    "app_latency": "python bench/app_latency.py --json bench/results/app_latency.json",
}
# The paper's ML (ml-latest-small) numbers: Table 3 (valid-retrieval subset) and Table 1 (all users).
PAPER_RANKER = {"subset": {"retriever": {"N@10": 0.3367, "R@10": 0.6654},
                           "two_stage": {"N@10": 0.3766, "R@10": 0.7560}},
                "overall": {"retriever": {"M@10": 0.0491, "N@10": 0.0705, "R@10": 0.1426},
                            "two_stage": {"M@10": 0.0529, "N@10": 0.0759, "R@10": 0.1524}}}
PAPER_GENERATION_S = 56.16  # Fig. 3: generating a ranked list of titles, average title length 20


def gpu(function, duration: int = 60):
    """`spaces.GPU` (ZeroGPU Spaces) around a model-running handler; the handler itself elsewhere."""
    return spaces.GPU(function, duration=duration) if spaces is not None else function


def marked(text: str, item_id: int, target: int | None) -> str:
    """`text` with the held-out marker when `item_id` is the session's held-out movie."""
    return f"{text}  {HELD_OUT}" if item_id == target else text


def new_session() -> dict:
    """A user's per-session state: history (item ids, oldest first), held-out item and test user (or None)."""
    return {"history": [], "target": None, "user": None}


class DemoHandlers:
    """The event handlers: plain functions from values to values over one shared, read-only pipeline."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.catalog = pipeline.catalog
        self.by_title = {m.title.lower(): m.item_id for m in self.catalog.movies}
        self.presets = {name: ids for name, titles in PRESETS.items()
                        if (ids := [self.by_title[t.lower()] for t in titles if t.lower() in self.by_title])}

    def movie_choices(self) -> list[tuple[str, int]]:
        """(title with year, item id) for the catalog dropdown, sorted by title."""
        return sorted(((m.title, m.item_id) for m in self.catalog.movies), key=lambda c: c[0].lower())

    def user_choices(self) -> list[tuple[str, int]]:
        """(label, user id) for the test-user dropdown."""
        users = self.pipeline.test_users
        if users is None:
            return []
        return [(f"User {u} ({len(users[u].history)} movies)", u) for u in users.ids()]

    def find_movie(self, movie) -> int:
        """An item id from a dropdown value: an id, or a typed title (exact, else one unique partial match)."""
        if movie is None or str(movie).strip() == "":
            raise HistoryError("Pick a movie in the search box first.")
        text = str(movie).strip()
        if text.isdigit() and int(text) in self.catalog:
            return int(text)
        if text.lower() in self.by_title:
            return self.by_title[text.lower()]
        matches = [m for m in self.catalog.movies if text.lower() in m.title.lower()]
        if len(matches) == 1:
            return matches[0].item_id
        if matches:
            shown = ", ".join(m.title for m in matches[:4]) + (" ..." if len(matches) > 4 else "")
            raise HistoryError(f"'{text}' matches {len(matches)} movies ({shown}): pick one from the list.")
        raise HistoryError(f"Unknown title '{text}': it is not in the catalog. Pick a movie from the list.")

    def history_view(self, session: dict, notice: str = ""):
        """Outputs after a history change: (session, history table, remove-dropdown update, notice)."""
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
        return session, table, remove, "\n\n".join(notes)

    def add(self, session: dict, movie):
        """Append a movie (id or title) to the history; a repeat moves it to the latest position."""
        try:
            item_id = self.find_movie(movie)
        except HistoryError as error:
            return self.history_view(session, f"⚠️ {error}")
        history = list(session["history"])
        notice = ""
        if item_id in history:
            history.remove(item_id)
            notice = f"'{self.catalog.title(item_id)}' was already in the history: moved to the latest viewing."
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

    def results_view(self, session: dict, result: Recommendation):
        """(summary, results table, probability chart, prompt) of a recommendation."""
        target = session["target"]
        held_out = result.index_of(target)
        lines = [f"**Retrieval** {result.retrieval_ms:,.0f} ms"
                 + (f" · **verbalizer ranking** {result.ranking_ms:,.0f} ms" if result.ranking_ms is not None else "")
                 + f" · history of {len(result.history)} movies"
                 + (f" (the prompt shows the last {len(result.prompt.history_titles)})" if result.prompt else "")]
        lines += [f"ℹ️ {n}" for n in result.notices]
        if target is not None:
            if held_out is None:
                lines.append(f"{HELD_OUT}: **{self.catalog.title(target)}** is not among LRURec's "
                             f"{len(result.candidates)} candidates, so the ranker cannot find it.")
            else:
                found = result.candidates[held_out]
                final = f", final rank **{found.final_rank}**" if found.final_rank else ""
                lines.append(f"{HELD_OUT}: **{found.title}**, retriever rank {found.retriever_rank}{final}.")
        if result.ranker_error:
            lines.append(f"⚠️ **The ranker failed**: {result.ranker_error}. The table shows the retriever's order.")
        elif self.pipeline.fusion_weight:
            lines.append(f"ℹ️ Final rank = the verbalizer's log-probability + {self.pipeline.fusion_weight:g} × the "
                         "retriever's log-softmax score (weight chosen on validation users); the chart shows the "
                         "verbalizer alone.")
        rows = []
        for c in result.ranked():
            change = "" if c.final_rank is None else (
                "=" if c.final_rank == c.retriever_rank else
                f"▲ {c.retriever_rank - c.final_rank}" if c.final_rank < c.retriever_rank else
                f"▼ {c.final_rank - c.retriever_rank}")
            rows.append({"Final rank": c.final_rank, "Letter": c.letter,
                         "Title": marked(c.title, c.item_id, target),
                         "Probability": None if c.probability is None else round(c.probability, 4),
                         "Retriever rank": c.retriever_rank, "Change": change})
        if result.ranking is None:
            figure = plots.message_figure("No probabilities: the ranker failed (see above).")
        else:
            candidates = result.candidates
            figure = plots.probability_figure([c.letter for c in candidates], [c.title for c in candidates],
                                              [c.probability for c in candidates], highlight=held_out,
                                              title="Verbalizer probabilities"
                                                    + (" (★ = held-out movie)" if held_out is not None else ""))
        prompt = result.prompt.text if result.prompt else ""
        return "\n\n".join(lines), pd.DataFrame(rows, columns=RESULT_COLUMNS), figure, prompt

    def error_results(self, message: str):
        """Results outputs that only carry a message."""
        return f"⚠️ {message}", pd.DataFrame(columns=RESULT_COLUMNS), plots.message_figure(message), ""

    def recommend(self, session: dict, progress=gr.Progress()):
        """Retrieve and rank for the session's history: (summary, table, probability chart, prompt)."""
        progress(0.1, desc="Retrieving with LRURec, then ranking with the verbalizer")
        try:
            result = self.pipeline.recommend(session["history"])
        except HistoryError as error:
            return self.error_results(str(error))
        return self.results_view(session, result)

    def race_view(self, session: dict, race: RaceResult):
        """(race summary, timing chart, generated text, ranking comparison table) of a race."""
        result = race.recommendation
        stages = {"retrieval": result.retrieval_ms}
        if result.ranking_ms is not None:
            stages["verbalizer ranking"] = result.ranking_ms
        if race.error:
            summary = f"⚠️ **The generation baseline failed**: {race.error}"
        else:
            stages["generation"] = race.generation_ms
            summary = (f"**Generation** {race.generation_ms:,.0f} ms for {race.num_generated_tokens} tokens vs "
                       f"**verbalizer** {result.ranking_ms:,.0f} ms for one forward pass: generation takes "
                       f"**{race.ratio:,.1f}×** as long (the paper: {PAPER_GENERATION_S} s vs under 1 s with "
                       "Llama-2-7b).")
        ratio = f" — generation / verbalizer = {race.ratio:,.1f}×" if race.ratio else ""
        figure = plots.timing_figure(stages, title=f"Time per stage (ms){ratio}")

        names = [marked(f"({c.letter}) {c.title}", c.item_id, session["target"]) for c in result.candidates]
        verbalizer = [names[i] for i in result.ranking or []]
        generated = [names[i] for i in race.generated_ranking]
        size = max(len(verbalizer), len(generated))
        table = pd.DataFrame(zip(range(1, size + 1), verbalizer + [""] * (size - len(verbalizer)),
                                 generated + [""] * (size - len(generated))), columns=COMPARISON_COLUMNS)
        return summary, figure, race.generated_text, table

    def race(self, session: dict, progress=gr.Progress()):
        """Recommend, then run the generation baseline on the same prompt: results outputs + race outputs."""
        progress(0.05, desc="Retrieving and ranking with the verbalizer")
        try:
            result = self.pipeline.recommend(session["history"])
        except HistoryError as error:
            return (*self.error_results(str(error)), f"⚠️ {error}", plots.message_figure(str(error)), "",
                    pd.DataFrame(columns=COMPARISON_COLUMNS))
        progress(0.3, desc="Generating the ranked list token by token (the slow way)")
        race = self.pipeline.race(result)
        return (*self.results_view(session, result), *self.race_view(session, race))


def facts_markdown(pipeline: Pipeline) -> str:
    """The About tab: what is loaded, as a table."""
    names = {"device": "Device", "base_model": "Base model", "quantization": "Quantization", "adapter": "Adapter",
             "retriever": "Retriever", "test_users": "Test users", "prompt": "Prompt budgets",
             "final_ranking": "Final ranking"}
    facts = pipeline.describe()
    rows = "\n".join(f"| {names.get(k, k)} | {v} |" for k, v in facts.items())
    return (f"| Part | Setting |\n|---|---|\n{rows}\n| CPU threads | {torch.get_num_threads()} |\n\n"
            "Data: MovieLens ml-latest-small (GroupLens Research, University of Minnesota), preprocessed as in "
            "LlamaRec; redistributed under its license (`checkpoints/lrurec-ml-latest-small/DATA_LICENSE.txt`).")


def _read_result(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _missing(name: str) -> str:
    return f"_Not measured yet: run `{BENCH_COMMANDS[name]}`._"


def _inline(results: dict) -> str:
    """A results dict (nested dicts allowed) as one line of text: "a b 1; c: d 2"."""
    return "; ".join(f"{key.replace('_', ' ')}: {_inline(value)}" if isinstance(value, dict)
                     else f"{key.replace('_', ' ')} {value}" for key, value in results.items())


def _metric_table(rows: dict[str, dict], columns: list[str]) -> str:
    head = "| | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns)
    body = "\n".join(f"| {name} | " + " | ".join(f"{values[c]:.4f}" if c in values else "–" for c in columns) + " |"
                     for name, values in rows.items())
    return f"{head}\n{body}"


def benchmarks_markdown() -> str:
    """The Benchmarks tab: our measured results beside the paper's, read from bench/results/*.json."""
    parts = ["### Retriever (LRURec), all test users"]
    retriever = _read_result("retriever_quality")
    columns = ["M@5", "N@5", "R@5", "M@10", "N@10", "R@10"]
    if retriever:
        parts.append(_metric_table({"LRURec, ours": retriever.get("ours", {}),
                                    "LRURec, paper (Table 1)": retriever.get("paper", {})}, columns))
        if "coverage@20" in retriever:
            parts.append(f"Coverage@20 (test users whose next movie is among the 20 candidates): "
                         f"{retriever['coverage@20']:.1%}.")
    else:
        parts.append(_missing("retriever_quality"))
    parts.append("### Two-stage ranking (LRURec → verbalizer)")
    ranker = _read_result("ranker_quality")
    if ranker:
        weight = ranker.get("fusion_weight")
        for part, label in (("subset", "valid-retrieval subset"), ("overall", "all test users")):
            ours = ranker.get(part, {})
            paper = ranker.get("paper", PAPER_RANKER)[part]
            parts.append(f"**{label.capitalize()}**" + (f" ({ranker['users']} users in the subset)"
                                                        if part == "subset" and "users" in ranker else ""))
            rows = {"LRURec order, ours": ours.get("retriever", {})}
            if "llm_only" in ours:
                rows["LLM alone, ours"] = ours["llm_only"]
            rows["Two-stage, ours" + (f" (fusion weight {weight:g})" if weight else "")] = ours.get("two_stage", {})
            rows.update({"LRURec, paper": paper["retriever"], "LlamaRec (Llama-2-7b), paper": paper["two_stage"]})
            parts.append(_metric_table(rows, ["M@10", "N@10", "R@10"]))
    else:
        parts.append(_missing("ranker_quality"))
    parts.append("### Efficiency: verbalizer vs generation")
    efficiency = _read_result("efficiency")
    if efficiency:
        rows = "\n".join(f"| {length} | {v.get('verbalizer_ms', 0):,.0f} | {v.get('generation_ms', 0):,.0f} | "
                         f"{v.get('ratio', 0):,.1f}× |" for length, v in efficiency.get("by_title_len", {}).items())
        parts.append(f"Device: {efficiency.get('device', 'unknown')}. Paper (Llama-2-7b): verbalizer under 1 s at "
                     f"every title length, generation {PAPER_GENERATION_S} s at title length 20.\n\n"
                     "| Title tokens | Verbalizer (ms) | Generation (ms) | Ratio |\n|---|---|---|---|\n" + rows)
        if efficiency.get("throughput"):
            parts.append(f"Throughput: {_inline(efficiency['throughput'])}.")
    else:
        parts.append(_missing("efficiency"))
    parts.append("### This app's latency")
    latency = _read_result("app_latency")
    if latency:
        parts.append(f"Cold start {latency['cold_start_s']:.1f} s; Recommend p50 {latency['p50_ms']:,.0f} ms, "
                     f"p95 {latency['p95_ms']:,.0f} ms (goals: < 20 s, p50 < 1,500 ms).")
    else:
        parts.append(_missing("app_latency"))
    return "\n\n".join(parts)


def build_demo(pipeline: Pipeline) -> gr.Blocks:
    """The Blocks UI over a loaded pipeline (not launched)."""
    handlers = DemoHandlers(pipeline)
    adapter_note = ("" if pipeline.adapter else "\n\n⚠️ **No ranker adapter found: the base model ranks alone**, "
                    f"so its probabilities are close to guesses. Train one with `{RANKER_TRAIN_COMMAND}`.")
    with gr.Blocks(title="LlamaRec demo") as demo:
        gr.Markdown("# LlamaRec: retrieve with LRURec, rank with an LLM verbalizer\n"
                    "Build a watch history (oldest first), then **Recommend**: LRURec retrieves 20 candidates and "
                    "the language model scores them in **one forward pass**, reading the probabilities of the "
                    "letters A–T. **Race** also generates the ranked list as text, the slow way." + adapter_note)
        session = gr.State(new_session())
        with gr.Tab("Recommend"):
            with gr.Row():
                with gr.Column(scale=2):
                    with gr.Row():
                        movie = gr.Dropdown(handlers.movie_choices(), value=None, label="Find a movie",
                                            info="Type to search the catalog (title and year)",
                                            allow_custom_value=True, filterable=True, scale=4)
                        add = gr.Button("Add", variant="secondary", scale=1, min_width=120)
                    with gr.Row():
                        preset = gr.Dropdown(list(handlers.presets), value=None, label="Preset history", scale=3)
                        load_preset = gr.Button("Load preset", scale=1, min_width=120)
                    with gr.Row():
                        user = gr.Dropdown(handlers.user_choices(), value=None, label="Test user (ml-latest-small)",
                                           scale=3)
                        load_user = gr.Button("Load a test user", scale=1, min_width=120)
                    with gr.Row():
                        removable = gr.Dropdown([], value=None, label="Movie to remove", scale=3)
                        remove = gr.Button("Remove", scale=1, min_width=120)
                        clear = gr.Button("Clear", variant="stop", scale=1, min_width=120)
                with gr.Column(scale=3):
                    history = gr.Dataframe(pd.DataFrame(columns=["#", "Title", "Genres"]),
                                           label="Watch history (viewing order, oldest first)",
                                           interactive=False, max_height=330, wrap=True)
                    notice = gr.Markdown()
            with gr.Row():
                recommend = gr.Button("Recommend", variant="primary", size="lg")
                race = gr.Button("Race against generation", variant="secondary", size="lg")
            summary = gr.Markdown()
            with gr.Row():
                with gr.Column(scale=3):
                    chart = gr.Plot(label="Verbalizer probabilities")
                with gr.Column(scale=4):
                    table = gr.Dataframe(pd.DataFrame(columns=RESULT_COLUMNS), label="Ranked candidates",
                                         interactive=False, max_height=640, wrap=True,
                                         column_widths=["9%", "10%", "37%", "16%", "14%", "14%"])
            with gr.Accordion("The exact prompt", open=False):
                prompt = gr.Textbox(label="Prompt", lines=12, max_lines=60, interactive=False, buttons=["copy"])
            gr.Markdown("### The race: verbalizer vs generation")
            race_summary = gr.Markdown("Click **Race against generation** to time both on the same history and "
                                       "candidates. The prompt builder is the same; its instruction asks for the "
                                       "titles in order instead of one letter.")
            with gr.Row():
                timing = gr.Plot(label="Time per stage")
                generated = gr.Textbox(label="Generated text", lines=10, max_lines=30, interactive=False)
            comparison = gr.Dataframe(pd.DataFrame(columns=COMPARISON_COLUMNS), interactive=False, wrap=True,
                                      label="Verbalizer ranking beside the parsed generated ranking",
                                      column_widths=["10%", "45%", "45%"])
        with gr.Tab("About the model"):
            gr.Markdown(facts_markdown(pipeline))
        with gr.Tab("Benchmarks"):
            gr.Markdown(benchmarks_markdown())
            if EFFICIENCY_FIGURE.is_file():
                gr.Image(str(EFFICIENCY_FIGURE), label="Efficiency: verbalizer vs generation", interactive=False)
            else:
                gr.Markdown(f"_Efficiency figure not drawn yet: run `{BENCH_COMMANDS['efficiency']}`._")

        history_outputs = [session, history, removable, notice]
        result_outputs = [summary, table, chart, prompt]
        add.click(handlers.add, [session, movie], history_outputs, api_name="add")
        remove.click(handlers.remove, [session, removable], history_outputs, api_name="remove")
        clear.click(handlers.clear, [session], history_outputs, api_name="clear")
        load_preset.click(handlers.load_preset, [session, preset], history_outputs, api_name="load_preset")
        load_user.click(handlers.load_test_user, [session, user], history_outputs, api_name="load_test_user")
        recommend.click(gpu(handlers.recommend), [session], result_outputs, api_name="recommend",
                        concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY)
        race.click(gpu(handlers.race, duration=180), [session],
                   result_outputs + [race_summary, timing, generated, comparison], api_name="race",
                   concurrency_id="model", concurrency_limit=MODEL_CONCURRENCY)
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=8)


def default_threads() -> int:
    """Torch threads when --threads is not given: the usable cores minus one (for the server), at least 1.

    Measured on 2 cores shared with other busy processes: a verbalizer pass took 9 s with 2 threads
    and 0.5-1 s with 1; on an idle machine a second thread can gain at most 2x.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 1)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # Spaces sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; an explicit flag would override them.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (0.0.0.0 for a LAN); default $GRADIO_SERVER_NAME or 127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="default $GRADIO_SERVER_PORT or 7860")
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--base-model", default=None, help="hub name or folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--adapter", default=None,
                        help="peft adapter folder (default: the committed one when present; 'none': base model alone)")
    parser.add_argument("--retriever", default=str(DEFAULT_CHECKPOINT), help="LRURec checkpoint folder")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="ranker precision on CPU; auto = bf16 where the CPU computes it natively, else fp32")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch; 0 (default) = one less than the cores, at least 1, which leaves "
                             "a core to the web server: threads that wait on a busy core stall every forward pass")
    return parser.parse_args(argv)


def load_pipeline(args: argparse.Namespace) -> Pipeline:
    """Load the pipeline the flags name; exits with the fixing command when a checkpoint is missing or corrupt."""
    adapter = default_adapter() if args.adapter is None else (None if args.adapter == "none" else args.adapter)
    config = PipelineConfig(retriever=args.retriever, cpu_precision=args.precision,
                            ranker=RankerLoadConfig(base_model=args.base_model, adapter=adapter))
    try:
        return Pipeline.load(config)
    except (RuntimeError, OSError, ValueError) as error:  # CheckpointError is a RuntimeError
        sys.exit(f"Cannot start the demo: {error}")


def main(argv=None) -> None:
    """Parse flags, load the models once, build the UI and serve it."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads or default_threads())
    pipeline = load_pipeline(args)
    build_demo(pipeline).launch(server_name=args.host, server_port=args.port, share=args.share,
                                theme=gr.themes.Soft(), footer_links=["api"])


if __name__ == "__main__":
    main()
