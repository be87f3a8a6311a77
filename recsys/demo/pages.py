"""The demo's text pages: what is loaded (About) and the measured results beside the paper's (Benchmarks)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from recsys import NUM_CANDIDATES
from recsys.data.test_users import COMMAND as TEST_USERS_COMMAND
from recsys.demo.words import words_for
from recsys.machine import dtype_name, usable_cores
from recsys.pipeline import Pipeline
from recsys.ranker.artefacts import RankerArtefacts, has_adapter_weights
from recsys.ranker.fusion import FusionWeights, describe_fusion
from recsys.ranker.model import TRAIN_COMMAND as RANKER_TRAIN_COMMAND
from recsys.ranker.model import loaded_quantization
from recsys.paper import GENERATION_S as PAPER_GENERATION_S
from recsys.paper import RANKER as PAPER_RANKER

RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench" / "results"
BENCH_COMMANDS = {
    "retriever_quality": "python bench/retriever_quality.py --json bench/results/retriever_quality.json",
    "ranker_quality": "python bench/ranker_quality.py --json bench/results/ranker_quality.json",
    "efficiency": "python bench/efficiency.py --json bench/results/efficiency.json",
    "app_latency": "python bench/app_latency.py --json bench/results/app_latency.json",
}


def intro_markdown(pipeline: Pipeline) -> str:
    """The page's title and what one Recommend does, in the data set's words, and which LLM ranks."""
    words = words_for(pipeline.catalog.dataset)
    stage_one = (f"LRURec retrieves its top {pipeline.retrieval.pool}, the co-watch prior keeps the 20 it backs most "
                 "(LRURec's rank stays beside each), and " if pipeline.retrieval.pool > NUM_CANDIDATES else
                 f"LRURec retrieves {NUM_CANDIDATES} candidates and ")
    if pipeline.llm.adapter:
        ranker = ""
    elif pipeline.ranker.zero_shot:
        letters = (f"its letters (the verbalizer) weigh {pipeline.fusion.llm:g}"
                   + (": shown, not ranked by" if not pipeline.fusion.llm else ""))
        titles = (f"; its **title likelihood** (how likely each candidate's title is as the history's next line) "
                  f"weighs {pipeline.fusion.titles:g}" if pipeline.fusion.titles else "")
        ranker = (f"\n\nNo LLM ranker is trained for these {words.items}: the base model reads them zero-shot. At the "
                  f"weights validation chose, {letters}{titles}.")
    else:
        ranker = ("\n\n⚠️ **No ranker adapter found: the base model ranks alone**, so its probabilities are close to "
                  f"guesses. Train one with `{RANKER_TRAIN_COMMAND}`.")
    return ("# LlamaRec: retrieve with LRURec, rank with an LLM verbalizer\n"
            f"Build a {words.history} (oldest first), then **Recommend**: {stage_one}the language model scores them "
            "in **one forward pass**, reading the probabilities of the letters A–T. The final ranking weighs the "
            f"opinions of each candidate: the retriever's, a **co-watch** prior (which {words.items} followed your "
            "latest ones in other people's histories) and the LLM's. **Race** also generates the ranked list as text, "
            f"the slow way.{ranker}")


def facts(pipeline: Pipeline) -> dict[str, str]:
    """What is loaded, in words, for the About tab: device, base model, quantization, adapter, retriever, test users,
    prompt budgets, title likelihood, final ranking."""
    named = dict(pipeline.llm.model_facts)
    model = pipeline.llm.model
    if next(model.parameters()).device.type == "cpu" and loaded_quantization(model) == "none":
        dtype = next(model.parameters()).dtype
        named["quantization"] = ({torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, dtype_name(dtype))
                                 + " base weights" + (", LoRA adapter folded into them" if pipeline.llm.folded else
                                                      ", fp32 LoRA adapter" if pipeline.llm.adapter else "")
                                 + ", fp32 letter logits")
    ranker = pipeline.ranker
    if ranker.zero_shot and ranker.folder is not None and has_adapter_weights(ranker.folder):
        named["adapter"] = (f"none: this base model ranks zero-shot beside the prior of {ranker.folder.name} "
                            f"(whose adapter fits another base model), at its fusion weights; train a ranker for "
                            f"this one with: {RANKER_TRAIN_COMMAND}")
    elif ranker.zero_shot and not pipeline.fusion.llm:
        named["adapter"] = (f"none: no LLM ranker is trained for this data set yet; the base model's letters are "
                            f"shown at weight 0 beside the prior of {ranker.folder.name if ranker.folder else ''}"
                            + (" (its title likelihood: below)" if pipeline.fusion.titles else ""))
    elif ranker.zero_shot:
        named["adapter"] = (f"none: the base model ranks zero-shot, at the weights chosen on validation "
                            f"({ranker.folder.name if ranker.folder else ''})")
    elif not pipeline.llm.adapter:
        named["adapter"] = f"none: the base model ranks alone (train an adapter with: {RANKER_TRAIN_COMMAND})"
    retriever = pipeline.retrieval.retriever.config
    folder = pipeline.retrieval.folder.name if pipeline.retrieval.folder else "in memory"
    named["retriever"] = (f"LRURec, {folder} ({len(pipeline.catalog)} items, window {retriever.max_len}); "
                          + (f"the co-watch prior keeps the best 20 of its top {pipeline.retrieval.pool}"
                             if pipeline.retrieval.pool > NUM_CANDIDATES else "its top 20 are the candidates"))
    users = pipeline.test_users
    named["test_users"] = (f"{len(users)} test users of {users.dataset}" if users is not None
                           else f"none (create them with: {TEST_USERS_COMMAND})")
    prompt = pipeline.llm.prompt_config
    named["prompt"] = (f"last {prompt.max_history} history titles, {prompt.max_title_tokens} tokens a title, "
                       f"{prompt.max_prompt_tokens} tokens in all")
    llm = pipeline.llm
    if llm.catalog_adapter_folder:
        title_model = f"catalog-pretrained adapter {llm.catalog_adapter_folder.name}"
    elif llm.base_titles:
        title_model = "the base model (the ranker's adapter off)"
    else:
        title_model = "the ranker's model"
    named["title_likelihood"] = f"{title_model}, fusion weight {pipeline.fusion.titles:g}"
    named["final_ranking"] = describe_fusion(pipeline.fusion)
    return named


def facts_markdown(pipeline: Pipeline) -> str:
    """The About tab: what is loaded, as a table."""
    names = {"device": "Device", "base_model": "Base model", "quantization": "Quantization", "adapter": "Adapter",
             "retriever": "Retriever", "test_users": "Test users", "prompt": "Prompt budgets",
             "title_likelihood": "Title likelihood", "final_ranking": "Final ranking"}
    rows = "\n".join(f"| {names.get(k, k)} | {v} |" for k, v in facts(pipeline).items())
    why = usable_cores()[1]
    return (f"| Part | Setting |\n|---|---|\n{rows}\n| CPU threads | {torch.get_num_threads()} (usable cores: {why}) |"
            f"\n| Recommends per pass | up to {pipeline.verbalizer.max_batch}, the clicks that arrive together |\n\n"
            + training_markdown(pipeline.ranker, pipeline.fusion) + "\n\n"
            # a catalog of another name is a MovieLens one (as the page's words: `recsys.demo.words`)
            + DATA_CREDITS.get(pipeline.catalog.dataset, DATA_CREDITS["ml-latest-small"]))


DATA_CREDITS = {
    "ml-latest-small": "Data: MovieLens ml-latest-small (GroupLens Research, University of Minnesota), preprocessed as "
                       "in LlamaRec; redistributed under its license "
                       "(`checkpoints/lrurec-ml-latest-small/DATA_LICENSE.txt`).",
    "beauty": "Data: Amazon review data, Beauty (McAuley et al.), preprocessed by the LlamaRec authors' code; read "
              "from its files, not redistributed here.",
    "games": "Data: Amazon review data, Video Games (McAuley et al.; 2018 metadata), preprocessed by the LlamaRec "
             "authors' code; read from its files, not redistributed here.",
}


ABLATION_LABELS = {"retriever": "Retriever (LRURec order)", "llm_alone": "LLM alone",
                   "retriever+llm": "Retriever + LLM", "retriever+cowatch": "Retriever + co-watch",
                   "retriever+cowatch+llm": "Retriever + co-watch + LLM (weight 1, as trained)",
                   "final": "Served (weights chosen on validation)"}


def ablation_rows(ablation: dict, part: str) -> dict[str, dict]:
    """{label: metrics} of an ablation result (`recsys.ranker.evaluate.ablation`) for "subset" or "overall"."""
    return {label: ablation[name][part] for name, label in ABLATION_LABELS.items() if name in ablation}


def training_markdown(ranker: RankerArtefacts, fusion: FusionWeights) -> str:
    """How the loaded adapter was trained (its training_config.json and metrics.json) and the `fusion` it serves."""
    if ranker.adapter is None:
        return "### The ranker\nNo adapter is loaded: the base model ranks alone."
    config, metrics = ranker.training, ranker.metrics
    if not config or not metrics:
        return "### The ranker\n_This adapter has no training record (training_config.json, metrics.json)._"
    pool = config.get("pool") or metrics.get("pool", 20)  # training's pool (null in the config: the served one)
    kept = f"the 20 the prior keeps of LRURec's top-{pool}" if pool > 20 else "LRURec's own top-20"
    source = (f"{kept} with its scores, from truncated LRURecs that never saw those positions "
              f"(`{config.get('heldout_dir')}`)" if config.get("examples") == "heldout"
              else "the ground truth among 19 random items, shuffled (the paper's)")
    loss = {"letters": "cross-entropy over the 20 letter logits",
            "residual": "cross-entropy over the 20 letter logits plus the fixed prior of each film (the LLM learns "
                        "what retriever and co-watch miss), candidates shuffled in the prompt"}.get(
        str(config.get("loss")), "next-token loss on the letter + EOS over the whole vocabulary (the paper's)")
    lines = [
        "### How the ranker was trained",
        f"- Examples: {metrics.get('training_examples')} ranking tasks (the kept adapter had seen "
        f"{metrics.get('examples_seen_at_best')}); candidates are {source}.",
        f"- Loss: {loss}; LoRA, lr {config.get('lr')}, batch {config.get('batch_size')}, "
        f"last {config.get('max_history')} history titles" + (", no years" if config.get("years") is False else "")
        + (f", LoRA on the top {config['lora_top_layers']} layers" if config.get("lora_top_layers") else "") + ".",
        f"- Kept: step {metrics.get('best_step')} (best held-out validation NDCG@10); fusion "
        f"{_inline(asdict(fusion))}.",
    ]
    lines.append("\nWhat the served ranking measures on test users, with intervals: the **Benchmarks** tab "
                 "(`bench/results/ranker_quality.json`, the one record of it).")
    return "\n".join(lines)


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
    parts = ["All figures on this tab are MovieLens ml-latest-small's; Amazon Beauty's and Games' are in RESULTS.md.",
             "### Retriever (LRURec), all test users"]
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
    parts.append("### Two-stage ranking: retriever, co-watch prior and LLM")
    ranker = _read_result("ranker_quality")
    if ranker and "final" in ranker.get("test", {}):
        test = ranker["test"]
        for part, label in (("subset", "valid-retrieval subset"), ("overall", "all test users")):
            users = f" ({ranker['users']} users in the subset)" if part == "subset" else ""
            parts.append(f"**Test, {label}**" + users)
            paper = ranker.get("paper") or PAPER_RANKER
            rows = {**ablation_rows(test, part), "LRURec, paper": paper[part]["retriever"],
                    "LlamaRec (Llama-2-7b), paper": paper[part]["final"]}
            parts.append(_metric_table(rows, ["M@10", "N@10", "R@10"]))
        intervals = "; ".join(f"{ABLATION_LABELS[name]} {test[name]['ci95_vs_retriever_N@10']}"
                              for name in ABLATION_LABELS if "ci95_vs_retriever_N@10" in test.get(name, {}))
        parts.append(f"Subset NDCG@10 minus the retriever's order, paired-bootstrap 95% intervals: {intervals}.")
        if "llm_contribution" in test:
            parts.append(f"The LLM's own contribution (at its trained weight 1, over retriever + co-watch): "
                         f"{_inline(test['llm_contribution'])}.")
        if "cross_fitted_val_test" in ranker:
            parts.append(f"Cross-fitted validation + test: {_inline(ranker['cross_fitted_val_test'])}.")
    else:
        parts.append(_missing("ranker_quality"))
    parts.append("### Efficiency: verbalizer vs generation")
    efficiency = _read_result("efficiency")
    if efficiency:
        lines = "\n".join(f"| {length} | {v.get('verbalizer_ms', 0):,.0f} | {v.get('generation_ms', 0):,.0f} | "
                         f"{v.get('ratio', 0):,.1f}× |" for length, v in efficiency.get("by_title_len", {}).items())
        parts.append(f"Device: {efficiency.get('device', 'unknown')}. Paper (Llama-2-7b): verbalizer under 1 s at "
                     f"every title length, generation {PAPER_GENERATION_S} s at title length 20.\n\n"
                     "| Title tokens | Verbalizer (ms) | Generation (ms) | Ratio |\n|---|---|---|---|\n" + lines)
        if efficiency.get("throughput"):
            parts.append(f"Throughput: {_inline(efficiency['throughput'])}.")
    else:
        parts.append(_missing("efficiency"))
    parts.append("### This app's latency")
    latency = _read_result("app_latency")
    if latency:
        parts.append(f"Cold start {latency['cold_start_s']:.1f} s; Recommend p50 {latency['p50_ms']:,.0f} ms, "
                     f"p95 {latency['p95_ms']:,.0f} ms (goals: < 10 s, p50 < 500 ms)"
                     + (f"; with the base model compared, p50 {latency['compare_base_p50_ms']:,.0f} ms"
                        if "compare_base_p50_ms" in latency else "") + ".")
    else:
        parts.append(_missing("app_latency"))
    return "\n\n".join(parts)


def api_descriptions(words) -> dict[str, str]:
    """What each public endpoint does for a caller (gradio_client, the page's "Use via API"), in `words` (a
    `recsys.demo.words.Words`). Every endpoint works on the caller's session: its history lasts as long as the
    client."""
    return {
        "search": f"The {words.items} whose titles match the text typed so far (case, accents and articles aside), "
                  "as the matches list to pick from.",
        "add": f"Add the {words.item} the text names exactly (a title, with or without its year). Text naming "
               f"several {words.items} adds nothing and offers them as matches; a typo gets the closest titles.",
        "pick": f"Add one {words.item}, named by its title or its {words.source_id}.",
        "remove": f"Remove one {words.item} of the {words.history}, named by its title or its {words.source_id}.",
        "clear": f"Empty the {words.history}.",
        "load_preset": f"Replace the {words.history} with a preset named by taste.",
        "load_test_user": f"Replace the {words.history} with a test user's (its id as text); their held-out next "
                          f"{words.item} is marked ★ in the results.",
        "recommend": "Retrieve 20 candidates for the history and rank them: a summary, the ranked table with every "
                     "opinion, the chart, the exact prompt, what the verbalizer read, and a CSV of the table. The "
                     "weights are the fusion's (leave them out for the served ones); the three flags each add one "
                     "forward pass (the base model, the reversed list, title likelihood; where title likelihood "
                     "is served, at a weight above 0, it is computed whatever its flag says).",
        "race": "Recommend, then let the same model write the ranked list as text and time both; streams the "
                "generated text as it is written, then the timing chart and the verbalizer's own ranking (the "
                "LLM's letters alone) beside the generated one.",
        "share": f"A link to the app that opens with this {words.history}.",
        "explore_fusion": "Re-rank the last Recommend's candidates at other LLM and co-watch weights (no model call): "
                          "the table, the chart and the CSV.",
    }
