"""LlamaRec demo: build a watch history, retrieve with LRURec, rank with the verbalizer, race the generation baseline.

`python app.py` serves on http://127.0.0.1:7860 with the committed checkpoints; `--help` lists the flags.
This file is the wiring: flags, load the pipeline once, build the Blocks from the page's panels
(`recsys.demo.panels`), launch. The handlers and the views they build live in `recsys.demo`; the models in
`recsys.pipeline`.
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
import torch

from recsys import plots
from recsys.demo.downloads import MAX_AGE_S, PRUNE_EVERY_S
from recsys.demo.gpu import PLACEMENTS, on_zerogpu, race_seconds, zerogpu_device
from recsys.demo.handlers import DemoHandlers
from recsys.demo.panels import ModelEvents, Page, history_panel, race_panel, results_panel
from recsys.demo.words import words_for
from recsys.demo.pages import BENCH_COMMANDS, benchmarks_markdown, facts_markdown, intro_markdown
from recsys.folders import retriever_folder, served_folder
from recsys.pipeline import MAX_BATCH, SHARED_RESULTS, Pipeline, PipelineConfig, ServingConfig
from recsys.ranker.artefacts import default_adapter
from recsys.machine import lower_priority, process_threads, usable_cores
from recsys.ranker.base_model import cache_description, resolve_base_model
from recsys.ranker.model import QUANTIZATIONS, RankerLoadConfig, parameter_count

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
CSS = """
.results-table table { min-width: 640px; }  /* narrow screens scroll the table instead of breaking words */
/* a header or a cell wraps between words, never inside one ("Fin / al / ran / k") */
.results-table td, .results-table th, .results-table td *, .results-table th * {
  word-break: normal !important; overflow-wrap: normal !important; hyphens: none; }
"""
def build_demo(pipeline: Pipeline, warm_presets: bool = False) -> gr.Blocks:
    """The Blocks UI over a loaded pipeline (not launched): the Recommend tab's three panels (`recsys.demo.panels`),
    the About and Benchmarks tabs. With `warm_presets` the presets' results are computed in the background, so a
    class that loads one gets its results without waiting for the model."""
    handlers = DemoHandlers.of(pipeline)
    # paid here, at start-up, rather than by the first user's click: plotly loads its figure classes on first use, and
    # Gradio switches matplotlib's backend around every event, which imports pyplot when the backend is still unset
    plots.message_figure("")
    matplotlib.use("agg")
    if warm_presets and pipeline.shared.size:  # nothing to warm when no result is kept
        def warm() -> None:  # once the runner serves, if it is going to: the passes must run on its thread
            pipeline.runner.started.wait(timeout=WARM_AFTER_S)
            began = time.perf_counter()
            handlers.history.warm_presets()
            count = len(handlers.history.presets)
            print(f"{PRESETS_READY}: " + (f"{count} presets' results computed in {time.perf_counter() - began:.1f} "
                                          "s; a click on one is answered without the model." if count else
                                          "this data set has none."), flush=True)

        threading.Thread(target=warm, name="warm-presets", daemon=True).start()
    zerogpu = gpu_calls(pipeline)
    # twice the batch in flight: the next batch already waits when the model frees, and an answer computed before
    # (a shared result) passes a busy model instead of waiting for a slot behind it
    model = ModelEvents(spaces if zerogpu else None,
                        ZEROGPU_CONCURRENCY if zerogpu else min(RECOMMEND_CONCURRENCY,
                                                                2 * pipeline.verbalizer.max_batch),
                        ZEROGPU_CONCURRENCY if zerogpu else RACE_CONCURRENCY,
                        race_seconds(pipeline.llm.race_token_budget()))
    # Gradio's copies of the offered CSVs, bounded as our own (`recsys.demo.downloads`)
    cleanup = (int(PRUNE_EVERY_S), int(MAX_AGE_S))
    with gr.Blocks(title="LlamaRec demo", delete_cache=cleanup) as demo:
        gr.Markdown(intro_markdown(pipeline))
        page = Page(demo, words_for(pipeline.catalog.dataset))
        with gr.Tab("Recommend"):
            edits = history_panel(handlers, page)
            recommended = results_panel(handlers, page, model)
            race_panel(handlers, page, model, edits, recommended)
        with gr.Tab("About the model"):
            gr.Markdown(facts_markdown(pipeline))
        with gr.Tab("Benchmarks"):
            gr.Markdown(benchmarks_markdown())
            if EFFICIENCY_FIGURE.is_file():
                gr.Image(str(EFFICIENCY_FIGURE), label="Efficiency: verbalizer vs generation", interactive=False)
            else:
                gr.Markdown(f"_Efficiency figure not drawn yet: run `{BENCH_COMMANDS['efficiency']}`._")
    return demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=8)


def gpu_calls(pipeline: Pipeline) -> bool:
    """Whether the model events ask ZeroGPU for a GPU: on a ZeroGPU Space, for a model placed on the GPU. A model
    served on the CPU (`recsys.demo.gpu.zerogpu_device`) runs as on any CPU host."""
    return on_zerogpu(spaces) and pipeline.llm.model.device.type != "cpu"


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
                             "the repository), beauty or games (Amazon: items.csv and sequences.csv, read from "
                             "--data-dir, else $RECSYS_DATA_DIR, data/ or ../shared/data; python -m "
                             "recsys.data.download NAME gets them)")
    parser.add_argument("--data-dir", default=None, help="the folder holding the Amazon data set's files (or its "
                                                         "parent); the only place looked in when given")
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
        adapter = default_adapter() if movielens else served_folder(args.dataset)
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
        config = PipelineConfig(retriever=args.retriever or retriever_folder(args.dataset),
                                dataset=args.dataset, data_dir=args.data_dir,
                                # the title-likelihood adapter was trained on MovieLens titles
                                catalog_adapter="auto" if movielens else None,
                                cpu_precision=args.precision, adapter_weights=adapter_weights,
                                serving=ServingConfig(args.max_batch, args.shared_results),
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
    serve_here = pipeline.llm.model.device.type == "cpu"
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
