"""LlamaRec demo: build a watch history, retrieve with LRURec, rank with the verbalizer, race the generation baseline.

`python app.py` serves on http://127.0.0.1:7860 with the committed checkpoints; `--help` lists the flags.
This file is the wiring: flags, load the pipeline once, build the Blocks, launch. The handlers and
the views they build live in `recsys.demo`; the models in `recsys.pipeline`.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no version check or telemetry: start offline

try:  # Hugging Face ZeroGPU: `spaces` must be imported before torch
    import spaces
except ImportError:
    spaces = None

import argparse
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import matplotlib
import pandas as pd
import torch

from recsys import plots
from recsys.demo.downloads import MAX_AGE_S, PRUNE_EVERY_S
from recsys.demo.components import FreeDropdown, FreeRadio, SavedHistory
from recsys.demo.gpu import PLACEMENTS, RECOMMEND_S, gpu_event, on_zerogpu, race_seconds, zerogpu_device
from recsys.demo.handlers import DemoHandlers
from recsys.demo.history import MAX_TYPED, AddView, HistoryView, new_session
from recsys.demo.race import COMPARISON_COLUMNS, RACE_INTRO, RaceView
from recsys.demo.words import words_for
from recsys.demo.results import MAX_WEIGHT, RESULT_COLUMNS, WEIGHT_STEP, FusionView, ResultsView
from recsys.demo.pages import BENCH_COMMANDS, api_descriptions, benchmarks_markdown, facts_markdown, intro_markdown
from recsys.pipeline import MAX_BATCH, SHARED_RESULTS, Pipeline, PipelineConfig
from recsys.ranker.artefacts import default_adapter
from recsys.machine import lower_priority, process_threads, usable_cores
from recsys.ranker.base_model import cache_description, resolve_base_model
from recsys.ranker.model import QUANTIZATIONS, RankerLoadConfig, parameter_count
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

CHECKPOINTS = DEFAULT_CHECKPOINT.parent
APP_DATASETS = ["ml-latest-small", "beauty", "games"]

EFFICIENCY_FIGURE = Path(__file__).resolve().parent / "assets" / "efficiency.png"
# Recommends in flight at once (at most twice the batch): they share the model through its lock, and those waiting
# together are scored in one padded pass (`recsys.batcher`), so a class's clicks do not queue one by one.
RECOMMEND_CONCURRENCY = 16
RACE_CONCURRENCY = 1  # on CPU one generation at a time: two would interleave their tokens and each take twice as long
ZEROGPU_CONCURRENCY = 8  # on ZeroGPU each model event runs in a GPU worker of its own: no shared cores to wait for
QUEUE_SIZE = 64  # model events waiting (Recommend, race); history edits, search and sliders never queue
MODEL_NICENESS = 10  # how much lower the model's threads run than the web server's on CPU (Linux nice levels)
WARM_AFTER_S = 5.0  # the presets are warmed once the model runner serves, or after this long without it
PRESETS_READY = "Presets ready"  # the start of the line printed once they are (benches wait for it)
NEXT_RECOMMEND = "Applies to the next Recommend."  # what ticking a box changes: results already shown stay as they are
INSTANT = {"queue": False, "show_progress": "hidden"}  # events without the model: answered at once, never refused
CSS = """
.results-table table { min-width: 640px; }  /* narrow screens scroll the table instead of breaking words */
/* a header or a cell wraps between words, never inside one ("Fin / al / ran / k") */
.results-table td, .results-table th, .results-table td *, .results-table th * {
  word-break: normal !important; overflow-wrap: normal !important; hyphens: none; }
"""
# the key columns' widths (`recsys.demo.results.KEY_COLUMNS`): together about 660 px, so they fit the table's box
# beside the chart at 1,400 px; the other columns size to their content after them
KEY_COLUMN_WIDTHS = ["72px", "246px", "74px", "74px", "92px", "100px"]


def wired(view: type, components: dict[str, gr.components.Component]) -> list:
    """The components a handler returning `view` (a NamedTuple of outputs) writes to, in its fields' order: each field
    names the component it fills, so a handler's outputs cannot be wired out of order."""
    return [components[name] for name in view._fields]


def build_demo(pipeline: Pipeline, warm_presets: bool = False) -> gr.Blocks:
    """The Blocks UI over a loaded pipeline (not launched). With `warm_presets` the presets' results are computed in
    the background, so a class that loads one gets its results without waiting for the model."""
    handlers = DemoHandlers(pipeline)
    words = words_for(pipeline.catalog.dataset)
    # paid here, at start-up, rather than by the first user's click: plotly loads its figure classes on first use, and
    # Gradio switches matplotlib's backend around every event, which imports pyplot when the backend is still unset
    plots.message_figure("")
    matplotlib.use("agg")
    if warm_presets and pipeline.shared.size:  # nothing to warm when no result is kept
        def warm() -> None:  # once the runner serves, if it is going to: the passes must run on its thread
            pipeline.runner.started.wait(timeout=WARM_AFTER_S)
            began = time.perf_counter()
            handlers.warm_presets()
            print(f"{PRESETS_READY}: {len(handlers.presets)} presets' results computed in "
                  f"{time.perf_counter() - began:.1f} s; a click on one is answered without the model.", flush=True)

        threading.Thread(target=warm, name="warm-presets", daemon=True).start()
    zerogpu = gpu_calls(pipeline)
    gpu = spaces if zerogpu else None
    # twice the batch in flight: the next batch already waits when the model frees, and an answer computed before
    # (a shared result) passes a busy model instead of waiting for a slot behind it
    recommend_jobs = ZEROGPU_CONCURRENCY if zerogpu else min(RECOMMEND_CONCURRENCY, 2 * pipeline.verbalizer.max_batch)
    race_jobs = ZEROGPU_CONCURRENCY if zerogpu else RACE_CONCURRENCY
    fusion = handlers.fusion
    # Gradio's copies of the offered CSVs, bounded as our own (`recsys.demo.downloads`)
    cleanup = (int(PRUNE_EVERY_S), int(MAX_AGE_S))
    with gr.Blocks(title="LlamaRec demo", delete_cache=cleanup) as demo:
        gr.Markdown(intro_markdown(pipeline))
        session = gr.State(new_session())
        # the history as MovieLens ids in this browser: a reload (or the next visit) starts from it
        saved = SavedHistory([], storage_key="llamarec-history", secret="llamarec-history",
                             label=f"{words.history} ({words.source_id}s)")
        last = gr.State(None)  # the latest Recommendation: the fusion slider re-ranks it without a model call
        race_streaming = gr.State(False)  # set while a race streams; still set after one was cancelled half-way
        with gr.Tab("Recommend"):
            with gr.Row():
                with gr.Column(scale=2, min_width=300):
                    with gr.Row():
                        movie = gr.Textbox(label=f"Find a {words.item}", placeholder=words.search_example,
                                           max_length=MAX_TYPED,
                                           info="Matches appear below as you type: accents, case, a moved article "
                                                "('Misérables, Les') and alternative titles ('The Boat') don't "
                                                "matter. Click one to add it; Add (or Enter) takes the typed text "
                                                f"only when it names exactly one {words.item}.", scale=4)
                        add = gr.Button("Add", variant="secondary", scale=1, min_width=100)
                    matches = FreeRadio([], value=None, label=f"Matches: click the {words.item} you mean",
                                        visible=False, api_types=("string", "integer"),
                                        api_description=f"a title or a {words.source_id}")
                    with gr.Row():
                        preset = FreeDropdown(list(handlers.presets), value=None, label="Preset history", scale=3,
                                              api_description="a preset's name: " + ", ".join(handlers.presets))
                        load_preset = gr.Button("Load preset", scale=1, min_width=100)
                    with gr.Row():
                        users = handlers.user_choices()
                        user = FreeDropdown(users, value=None, scale=3,
                                            label=f"Test user ({pipeline.catalog.dataset})",
                                            api_description="a test user's id, as text"
                                                            + (f", e.g. {users[0][1]!r}" if users else ""))
                        load_user = gr.Button("Load a test user", scale=1, min_width=100)
                    with gr.Row():
                        removable = FreeDropdown([], value=None, label=f"{words.item.capitalize()} to remove", scale=3,
                                                 api_types=("string", "integer"),
                                                 api_description=f"a title or a {words.source_id}")
                        remove = gr.Button("Remove", scale=1, min_width=100)
                        clear = gr.Button("Clear", variant="stop", scale=1, min_width=100)
                with gr.Column(scale=3, min_width=300):
                    history = gr.Dataframe(pd.DataFrame(columns=["#", "Title", "Genres"]),
                                           label=f"{words.history.capitalize()} ({words.order}, oldest first)",
                                           interactive=False, max_height=330, wrap=True)
                    notice = gr.Markdown(label="Notice")
                    with gr.Row():
                        share = gr.Button("Share this history", scale=1, min_width=100)
                        # no placeholder and no copy button: either would take the place of the label as the box's
                        # accessible name (what a screen reader says)
                        link = gr.Textbox(label="Link to this history", scale=4, interactive=False)
            with gr.Row():
                recommend = gr.Button("Recommend", variant="primary", size="lg")
                race = gr.Button("Race against generation", variant="secondary", size="lg")
            with gr.Row():
                llm_weight = gr.Slider(0.0, MAX_WEIGHT, value=fusion.llm, step=WEIGHT_STEP, scale=3,
                                       label="LLM weight", info=f"0 = the prior alone. Served: {fusion.llm:g} "
                                                                f"(chosen on validation).")
                cowatch_weight = gr.Slider(0.0, MAX_WEIGHT, value=fusion.cowatch, step=WEIGHT_STEP, scale=3,
                                           label="Co-watch weight",
                                           info="0 = no co-watch in the ranking"
                                                + (" (it still chose the 20 candidates)" if pipeline.pool > 20 else "")
                                                + f". Served: {fusion.cowatch:g} (fitted on held-out "
                                                f"examples; the retriever's weight stays {fusion.retriever:g}).")
                reset = gr.Button("Served weights", scale=1, min_width=120)
            with gr.Row():
                # short labels (they fit a phone's width), the details under them
                compare = gr.Checkbox(False, label="Compare with the base model", interactive=pipeline.can_compare_base,
                                      info=("One more forward pass, without the adapter. " + NEXT_RECOMMEND
                                            if pipeline.can_compare_base else "No adapter is loaded."))
                reverse = gr.Checkbox(False, label="Also rank the list reversed",
                                      info=f"One more forward pass: does the LLM follow the {words.items} or the "
                                           f"letters? {NEXT_RECOMMEND}")
                titles = gr.Checkbox(bool(fusion.titles), interactive=not fusion.titles,
                                     label="Also ask by title likelihood",
                                     info="Each title's likelihood after your history, without letters (one more pass "
                                          f"over the 20 titles). Served with weight {fusion.titles:g}" + (
                                         " (chosen on validation), so always computed." if fusion.titles else
                                         f": validation gave it no weight; shown, not ranked by. {NEXT_RECOMMEND}"))
            summary = gr.Markdown(label="Summary")
            formula = gr.Markdown(label="Final score")  # the one the table is ranked by, after every slider move
            with gr.Row():
                with gr.Column(scale=3, min_width=300):
                    chart = gr.Plot(label="Each opinion's probability")
                with gr.Column(scale=4, min_width=300):
                    table = gr.Dataframe(pd.DataFrame(columns=RESULT_COLUMNS), label="Ranked candidates",
                                         interactive=False, max_height=640, wrap=True, elem_classes="results-table",
                                         column_widths=KEY_COLUMN_WIDTHS)
            download = gr.DownloadButton("Download these results (CSV)", value=None, size="sm")
            reading = gr.Markdown(label="What the verbalizer read")
            with gr.Accordion("The exact prompt", open=False):
                prompt = gr.Textbox(label="Prompt", lines=12, max_lines=60, interactive=False, buttons=["copy"])
            gr.Markdown("### The race: verbalizer vs generation")
            race_summary = gr.Markdown(RACE_INTRO, label="Race summary")
            with gr.Row():
                timing = gr.Plot(label="Time per stage")
                generated = gr.Textbox(label="Generated text", lines=10, max_lines=30, interactive=False)
            comparison = gr.Dataframe(pd.DataFrame(columns=COMPARISON_COLUMNS), interactive=False, wrap=True,
                                      label="Verbalizer ranking beside the parsed generated ranking",
                                      elem_classes="results-table")
        with gr.Tab("About the model"):
            gr.Markdown(facts_markdown(pipeline))
        with gr.Tab("Benchmarks"):
            gr.Markdown(benchmarks_markdown())
            if EFFICIENCY_FIGURE.is_file():
                gr.Image(str(EFFICIENCY_FIGURE), label="Efficiency: verbalizer vs generation", interactive=False)
            else:
                gr.Markdown(f"_Efficiency figure not drawn yet: run `{BENCH_COMMANDS['efficiency']}`._")

        components = {"session": session, "history": history, "removable": removable, "notice": notice,
                      "matches": matches, "movie": movie, "summary": summary, "formula": formula, "table": table,
                      "chart": chart,
                      "prompt": prompt, "reading": reading, "last": last, "race_summary": race_summary,
                      "timing": timing, "generated": generated, "comparison": comparison,
                      "race_streaming": race_streaming, "download": download, "saved": saved}
        described = api_descriptions(words)

        def api(name: str) -> dict:  # an endpoint's name and what it does for a client (`api_descriptions`)
            return {"api_name": name, "api_description": described[name]}

        history_outputs, add_outputs = wired(HistoryView, components), wired(AddView, components)
        result_outputs, race_outputs = wired(ResultsView, components), wired(RaceView, components)
        # always_last: the matches follow the text as it is once the previous search returns (one search at a time)
        movie.input(handlers.suggest, movie, matches, trigger_mode="always_last", **api("search"), **INSTANT)
        race_s = race_seconds(pipeline.race_token_budget())
        racing = race.click(gpu_event(handlers.race, gpu, race_s, handlers.race_error, handlers.history_problem),
                            [session, llm_weight, cowatch_weight, compare],
                            race_outputs,
                            **api("race"), concurrency_id="race", concurrency_limit=race_jobs,
                            show_progress="minimal")
        stop_race = {"cancels": [racing]}  # a new history stops a race for the old one (its generation ends too)
        edit = {**stop_race, **INSTANT}
        events = [
            add.click(handlers.add_and_clear, [session, movie], add_outputs, **api("add"), **edit),
            movie.submit(handlers.add_and_clear, [session, movie], add_outputs, api_visibility="private", **edit),
            matches.input(handlers.pick, [session, matches], add_outputs, **api("pick"), **edit),
            remove.click(handlers.remove, [session, removable], history_outputs, **api("remove"), **edit),
            clear.click(handlers.clear, [session], history_outputs, **api("clear"), **edit),
            load_preset.click(handlers.load_preset, [session, preset], history_outputs, **api("load_preset"),
                              **edit),
            load_user.click(handlers.load_test_user, [session, user], history_outputs, **api("load_test_user"),
                            **edit),
            recommend.click(gpu_event(handlers.recommend, gpu, RECOMMEND_S, handlers.error_results,
                                      handlers.history_problem),
                            [session, llm_weight, cowatch_weight, compare, reverse, titles],
                            result_outputs,
                            **api("recommend"), concurrency_id="recommend", concurrency_limit=recommend_jobs),
            racing,
        ]
        for event in events:  # results made for another history are cleared, whichever finished last
            event.then(handlers.stale_results, [session, last, race_streaming], race_outputs,
                       api_visibility="private", **INSTANT)
        share.click(handlers.share, session, link, **api("share"), **INSTANT)
        download.click(handlers.download_hint, last, None, api_visibility="private", **INSTANT)
        demo.load(handlers.restore, saved, history_outputs, api_visibility="private", **INSTANT)
        explore = ([session, last, llm_weight, cowatch_weight], wired(FusionView, components))
        # on every change (a drag, the arrow keys, a number typed, Served weights); always_last: one re-rank at a
        # time, and the latest value is always the last one drawn
        for slider in (llm_weight, cowatch_weight):
            name = api("explore_fusion") if slider is llm_weight else {"api_visibility": "private"}
            slider.change(handlers.ranking_view, *explore, **name, trigger_mode="always_last", **INSTANT)
        reset.click(lambda: (fusion.llm, fusion.cowatch), None, [llm_weight, cowatch_weight], api_visibility="private",
                    **INSTANT)
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=8)


def gpu_calls(pipeline: Pipeline) -> bool:
    """Whether the model events ask ZeroGPU for a GPU: on a ZeroGPU Space, for a model placed on the GPU. A model
    served on the CPU (`recsys.demo.gpu.zerogpu_device`) runs as on any CPU host."""
    return on_zerogpu(spaces) and pipeline.model.device.type != "cpu"


def launch_style() -> dict:
    """Theme and CSS for `launch` (Gradio 6 takes them there, not in Blocks)."""
    return {"theme": gr.themes.Soft(), "css": CSS}


def default_threads() -> int:
    """Torch threads when --threads is not given: every usable core (the affinity, capped by a container's CPU quota:
    `recsys.machine.usable_cores`).

    Chosen by measurement: every core was the fastest for one user and for four clicking at once (`python
    bench/threads.py`; its record, with the machine, is bench/results/threads.json). On a machine shared with other
    busy processes, pass fewer (--threads 1): threads waiting on a busy core stall every forward pass.
    """
    return usable_cores()[0]


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=cache_description())
    # Spaces sets GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; an explicit flag would override them.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on (0.0.0.0 for a LAN); default $GRADIO_SERVER_NAME or 127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="default $GRADIO_SERVER_PORT or 7860")
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    # A Space runs `python app.py` without flags: its variables (Settings) choose the model there.
    parser.add_argument("--base-model", default=os.environ.get("LLAMAREC_BASE_MODEL"),
                        help="hub name or folder (default: $LLAMAREC_BASE_MODEL, else SmolLM2-135M-Instruct)")
    parser.add_argument("--adapter", default=os.environ.get("LLAMAREC_ADAPTER"),
                        help="ranker adapter or zero-shot ranker folder (default: $LLAMAREC_ADAPTER, else the "
                             "committed adapter with the default base model; another base model keeps the committed "
                             "prior and pool, not its adapter weights; 'none': the base model alone)")
    parser.add_argument("--dataset", default=os.environ.get("LLAMAREC_DATASET", "ml-latest-small"),
                        choices=APP_DATASETS,
                        help="what to recommend from: ml-latest-small (default; $LLAMAREC_DATASET; needs nothing but "
                             "the repository), beauty or games (Amazon: their files are read from --data-dir, "
                             "data/ or ../shared/data; python -m recsys.data.download NAME gets them)")
    parser.add_argument("--data-dir", default=None, help="where the Amazon data set's files are")
    parser.add_argument("--retriever", default=None, help="LRURec checkpoint folder (default: the data set's)")
    parser.add_argument("--quantization", default="auto", choices=list(QUANTIZATIONS),
                        help="ranker weights on CUDA: auto = 4-bit NF4 for models of about 1B parameters and more, "
                             "bf16 otherwise; none, 4bit or 8bit to choose (a failed bitsandbytes load falls back "
                             "to bf16)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="ranker precision on CPU; auto = bf16 where the CPU computes it natively, else fp32")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH,
                        help=f"Recommends that arrived together scored in one padded pass, at most (default "
                             f"{MAX_BATCH}; 1: each alone, one at a time)")
    parser.add_argument("--shared-results", type=int, default=SHARED_RESULTS,
                        help=f"recent Recommend results kept for whoever asks the same history (a preset, a shared "
                             f"link) (default {SHARED_RESULTS}; 0: compute every click)")
    parser.add_argument("--zerogpu", default=os.environ.get("LLAMAREC_ZEROGPU", "auto"), choices=list(PLACEMENTS),
                        help="on a ZeroGPU Space, where the LLM serves: auto (default; $LLAMAREC_ZEROGPU) = the "
                             "Space's CPU for models under 1B parameters, asking for no GPU, a lent GPU for bigger "
                             "ones; cpu or gpu to choose")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch; 0 (default) = every usable core, the fastest for 1 and for 4 "
                             "users at once (bench/threads.py); fewer when other busy processes share the cores, "
                             "whose threads would stall every forward pass")
    return parser.parse_args(argv)


def load_pipeline(args: argparse.Namespace) -> Pipeline:
    """Load the pipeline the flags name; exits with the fixing command when a checkpoint is missing or corrupt."""
    # The committed adapter's weights fit only the base model they were trained on; its prior (co-watch counts,
    # pool, fusion weights) fits any: another base model ranks beside it, zero-shot.
    movielens = args.dataset == "ml-latest-small"
    if args.adapter is None:  # Amazon: the prior chosen on its validation users, served with the base model
        adapter = default_adapter() if movielens else CHECKPOINTS / f"llamarec-{args.dataset}"
    else:
        adapter = None if args.adapter == "none" else args.adapter
    adapter_weights = args.adapter is not None or args.base_model is None
    if args.max_batch < 1 or args.shared_results < 0:
        sys.exit(f"Cannot start the demo: --max-batch must be at least 1 and --shared-results 0 or more, got "
                 f"{args.max_batch} and {args.shared_results}")
    try:
        # on ZeroGPU "auto" would pick the GPU that `spaces` reports: the placement decides instead
        device = (zerogpu_device(parameter_count(str(resolve_base_model(args.base_model))), args.zerogpu)
                  if on_zerogpu(spaces) else "auto")
        config = PipelineConfig(retriever=args.retriever or CHECKPOINTS / f"lrurec-{args.dataset}",
                                dataset=args.dataset, data_dir=args.data_dir,
                                # the title-likelihood adapter was trained on MovieLens titles
                                catalog_adapter="auto" if movielens else None,
                                cpu_precision=args.precision, max_batch=args.max_batch,
                                adapter_weights=adapter_weights,
                                shared_results=args.shared_results,
                                ranker=RankerLoadConfig(base_model=args.base_model, adapter=adapter, device=device,
                                                        quantization=args.quantization))
        return Pipeline.load(config, start_on_device=device != "cuda")
    except (RuntimeError, OSError, ValueError) as error:  # CheckpointError is a RuntimeError
        sys.exit(f"Cannot start the demo: {error}")


def main(argv=None) -> None:
    """Parse flags, load the models once, build the UI and serve it."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads or default_threads())
    pipeline = load_pipeline(args)
    model_threads = process_threads()  # this thread and torch's: the web server's come with the launch
    demo = build_demo(pipeline, warm_presets=not gpu_calls(pipeline))  # with GPU calls no model runs outside one
    serve_here = pipeline.model.device.type == "cpu"
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, footer_links=["api"],
                prevent_thread_lock=serve_here, **launch_style())
    if serve_here:  # on CPU every pass runs on this thread, the one that loaded the model (`recsys.model_runner`)
        # the web server's threads first: typing, search and sliders answer at once while the model works
        lower_priority(model_threads, MODEL_NICENESS)
        try:
            if on_zerogpu(spaces):  # `spaces` put its torch modes on this thread: the model serves from a fresh one
                model = threading.Thread(target=pipeline.runner.serve, name="model", daemon=True)
                model.start()
                model.join()
            else:
                pipeline.runner.serve()
        except KeyboardInterrupt:
            demo.close()

if __name__ == "__main__":
    main()
