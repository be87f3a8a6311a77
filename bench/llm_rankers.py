"""Three ways an LLM ranks, side by side: generation, the verbalizer, title likelihood.

`python bench/llm_rankers.py --catalog-adapter checkpoints/catalog-lm-smollm2-135m-ml-latest-small --json out.json`
(`--write-choice FOLDER` writes how titles are scored, `title_config.json`, into the catalog adapter's FOLDER, and
title likelihood's chosen weight into the served config of `--adapter`: `recsys.ranker.served`)

Same model family, users, candidates and machine, one run. The adapters are scored unfolded (peft's LoRA, switched
with peft's own `set_adapter`/`disable_adapter` on one model), as trained; the app folds the verbalizer's adapter on CPU
(`recsys.ranker.folded`), which moved its test contribution by 0.002 NDCG@10 (`bench/ranker_quality.py`). For each
way of asking and each model:
- ms per user (the way's one scoring call: the verbalizer's pass, the 20 titles' likelihood, the
  generated list),
- NDCG@10 of its own order,
- its own contribution over the served prior (retriever + co-watch) at weight 1, with a paired-bootstrap
  interval, on the held-out validation rows (every held-out position of the validation users whose
  target is in the truncated LRURec's top-50, the served pool's 20; a dropped target counts 0) and on
  the paper's validation users (LRURec's subset),
- order invariance: the same candidates listed in reverse, film-by-film and letter-by-letter Spearman.

Generation writes a list, not scores: it is run on `--generation-users` test users for its time and
NDCG@10 only. Then the choice: the title-likelihood weight (and sum or per-token score) with the best
held-out validation NDCG@10, kept only if it is not negative on the paper's validation users; test is
scored once with the chosen fusion and written (`--write-choice`) when given.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from common import machine_summary, order_agreement
from recsys.data import load_dataset
from recsys.machine import machine_record
from recsys.metrics import format_table, metrics_from_ranks, ndcg_at, paired_bootstrap
from recsys.ranker.artefacts import TITLE_CONFIG_FILE, RankerArtefacts
from recsys.ranker.evaluate import EVAL_KS, score_llm, score_titles, target_ranks
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.generation import generate_ranking, generation_prompt
from recsys.ranker.heldout import load_held_out, split_by_user
from recsys.ranker.model import DEFAULT_ADAPTER, RankerLoadConfig, load_adapter, load_ranker
from recsys.ranker.prior import pooled_heldout_rows
from recsys.ranker.prompt import item_texts
from recsys.ranker.rows import RankingRows, served_rows
from recsys.ranker.title_likelihood import TitleConfig, served_title_config, title_opinion
from recsys.results import write_json
from recsys.retriever.candidates import load_candidates
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0)


def row_ndcgs(rows: RankingRows, weights: FusionWeights, subset: bool) -> list[float]:
    """NDCG@10 of each row's target in the fused order (only the valid-retrieval subset rows with `subset`)."""
    ranks = target_ranks(rows, weights)
    if subset:
        ranks = ranks[rows.subset()]
    return [ndcg_at(r, 10) for r in ranks.tolist()]


def contribution(rows: RankingRows, prior: FusionWeights, ours: FusionWeights, subset: bool) -> dict:
    """Mean NDCG@10 of `ours` minus `prior` over the rows, with its paired-bootstrap 95% interval."""
    a, b = row_ndcgs(rows, ours, subset), row_ndcgs(rows, prior, subset)
    low, high = paired_bootstrap(a, b)
    return {"N@10": round(sum(a) / len(a), 4), "prior_N@10": round(sum(b) / len(b), 4),
            "diff": round((sum(a) - sum(b)) / len(a), 4), "ci95_diff": [round(low, 4), round(high, 4)]}


def alone(rows: RankingRows, name: str, subset: bool) -> float:
    """Mean NDCG@10 of one opinion's own order."""
    values = row_ndcgs(rows, replace(FusionWeights(retriever=0.0, cowatch=0.0, llm=0.0), **{name: 1.0}), subset)
    return round(sum(values) / len(values), 4)


def timed(function, *args, **kwargs):
    """(function's result, seconds it took)."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def reversed_rows(rows: RankingRows) -> RankingRows:
    """The same rows with each row's candidates listed in reverse (the target index follows)."""
    k = rows.candidate_ids.shape[1]
    return replace(rows, candidate_ids=rows.candidate_ids.flip(1), retriever_scores=rows.retriever_scores.flip(1),
                   cowatch=rows.cowatch.flip(1), target_index=torch.where(rows.target_index >= 0,
                                                                          k - 1 - rows.target_index, -1),
                   llm=None, titles=None)


def main(argv=None) -> dict:
    """Score every row set with each way and model, print the table and the choice, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER), help="the served verbalizer adapter")
    parser.add_argument("--catalog-adapter", default=None, help="catalog-pretrained adapter (title likelihood)")
    parser.add_argument("--retriever", default=str(DEFAULT_CHECKPOINT), help="folder with candidates.safetensors")
    parser.add_argument("--heldout-dir", default="runs/heldout", help="python -m recsys.ranker.heldout's output")
    parser.add_argument("--max-heldout", type=int, default=None, help="a seeded sample of the held-out rows")
    parser.add_argument("--max-users", type=int, default=None, help="a seeded sample of each user split (a quick run)")
    parser.add_argument("--order-users", type=int, default=30, help="test users listed both ways (order invariance)")
    parser.add_argument("--generation-users", type=int, default=20, help="test users ranked by generation (slow)")
    parser.add_argument("--write-choice", default=None, help="the catalog adapter's folder: its title config goes "
                        "there, the chosen weight into --adapter's served_config.json")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    dataset = load_dataset("ml-latest-small")
    ranker = RankerArtefacts.load(args.adapter)
    saved_prior = ranker.require_prior()
    served = ranker.fusion
    prior = served.prior
    counts = ranker.counts
    candidates = load_candidates(args.retriever)
    _, val_part = split_by_user(load_held_out(args.heldout_dir))
    heldout = pooled_heldout_rows(val_part, dataset, saved_prior.cowatch, saved_prior.weights, ranker.pool,
                                  misses=True)
    if args.max_heldout is not None and args.max_heldout < len(heldout):
        heldout = heldout.select(sorted(torch.randperm(len(heldout), generator=torch.Generator().manual_seed(0))
                                        [: args.max_heldout].tolist()))
    row_sets = {"heldout_val": (heldout, False),
                "paper_val": (served_rows(dataset, "val", candidates["val"], ranker, counts, args.max_users), True),
                "test": (served_rows(dataset, "test", candidates["test"], ranker, counts, args.max_users), True)}
    model, tokenizer = load_ranker(RankerLoadConfig(adapter=ranker.adapter, cpu_precision="auto"))
    if args.catalog_adapter:
        model = load_adapter(model, args.catalog_adapter, name="catalog")
    machine = machine_record(next(model.parameters()).dtype)
    prompt_config = ranker.prompt
    titles_config = served_title_config(prompt_config)
    models = {"base": ("none", None), "verbalizer adapter": ("default", "llm")}
    if args.catalog_adapter:
        models["catalog-trained"] = ("catalog", "titles")
    results: dict = {"rows": {name: len(rows) for name, (rows, _) in row_sets.items()}, "ways": {}}
    title_scores: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
    llm_scores: dict[str, dict[str, torch.Tensor]] = {}
    for model_name, (adapter_name, way) in models.items():
        context = model.disable_adapter() if adapter_name == "none" else nullcontext_set(model, adapter_name)
        with context:
            for way_name in ("verbalizer", "title likelihood"):
                if (way == "titles" and way_name == "verbalizer") or (way == "llm" and way_name != "verbalizer"):
                    continue  # each adapter asked the way it was trained for; the base model both ways
                entry: dict = {}
                for set_name, (rows, subset) in row_sets.items():
                    if model_name == "base" and way_name == "verbalizer" and set_name == "heldout_val":
                        continue  # the base model's letters were measured on the users sets; the time goes elsewhere
                    if way_name == "verbalizer":
                        scored, seconds = timed(score_llm, model, tokenizer, dataset.catalog, rows, prompt_config)
                        llm_scores.setdefault(model_name, {})[set_name] = scored.llm
                        weights = replace(prior, llm=1.0)
                        name = "llm"
                    else:
                        (sums, lengths), seconds = timed(score_titles, model, tokenizer, dataset.catalog, rows,
                                                         titles_config)
                        title_scores.setdefault(model_name, {})[set_name] = (sums, lengths)
                        scored = replace(rows, titles=title_opinion(sums, lengths))
                        weights = replace(prior, titles=1.0)
                        name = "titles"
                    entry[set_name] = {"ms_per_user": round(seconds * 1000 / len(rows), 1),
                                       "alone_N@10": alone(scored, name, subset),
                                       "contribution_at_weight_1": contribution(scored, prior, weights, subset)}
                    print(model_name, way_name, set_name, json.dumps(entry[set_name]), flush=True)
                order_rows = row_sets["test"][0].select(list(range(min(args.order_users, len(row_sets["test"][0])))))
                flipped = reversed_rows(order_rows)
                if way_name == "verbalizer":
                    a = score_llm(model, tokenizer, dataset.catalog, order_rows, prompt_config, progress=False).llm
                    b = score_llm(model, tokenizer, dataset.catalog, flipped, prompt_config, progress=False).llm
                else:
                    a = title_opinion(*score_titles(model, tokenizer, dataset.catalog, order_rows, titles_config,
                                                    progress=False))
                    b = title_opinion(*score_titles(model, tokenizer, dataset.catalog, flipped, titles_config,
                                                    progress=False))
                agreement = order_agreement(a, b.flip(1))
                entry["order_invariance_test"] = {"film_by_film": agreement["film_by_film_spearman"],
                                                  "letter_by_letter": agreement["letter_by_letter_spearman"]}
                results["ways"][f"{way_name}, {model_name}"] = entry
    results["ways"]["verbalizer, verbalizer adapter, letter prior removed"] = letter_prior_entry(
        row_sets, llm_scores["verbalizer adapter"], prior)
    results["ways"]["generation, verbalizer adapter"] = generation_entry(model, tokenizer, dataset,
                                                                         row_sets["test"][0], prompt_config,
                                                                         args.generation_users)
    if args.catalog_adapter:
        results["choice"] = choose(row_sets, title_scores["catalog-trained"], prior, served, titles_config)
        if args.write_choice:
            chosen = results["choice"]
            path = Path(args.write_choice) / TITLE_CONFIG_FILE
            path.write_text(json.dumps({"title": asdict(chosen["config"]), "validation": {
                "chosen_weight": chosen["weight"], **chosen["validation"]}}, indent=2) + "\n")
            replace(ranker.served, fusion=replace(served, titles=chosen["weight"])).save_pretrained(args.adapter)
        results["choice"]["config"] = asdict(results["choice"]["config"])
    results.update(served=asdict(served), machine=machine)
    print_table(results)
    write_json(args.json, results)
    return results


def nullcontext_set(model, adapter_name: str):
    """A context that activates peft adapter `adapter_name` and restores the served one ("default") after."""
    from contextlib import contextmanager

    @contextmanager
    def active():
        model.set_adapter(adapter_name)
        try:
            yield
        finally:
            model.set_adapter("default")
    return active()


def letter_prior_entry(row_sets, scores: dict[str, torch.Tensor], prior: FusionWeights) -> dict:
    """The verbalizer with its letter habit removed (PriDe-style, Zheng et al. 2023): the mean log-probability of
    each letter over the held-out validation rows is subtracted from every row's scores. Estimated on the held-out
    rows, so it is judged on the paper's validation users and test only; it costs one (20,) subtraction a user."""
    letter_prior = scores["heldout_val"].mean(dim=0)
    entry: dict = {"letter_prior": [round(x, 3) for x in letter_prior.tolist()], "ms_per_user": 0.0}
    for set_name in ("paper_val", "test"):
        rows, subset = row_sets[set_name]
        debiased = replace(rows, llm=torch.log_softmax(scores[set_name] - letter_prior, dim=-1))
        entry[set_name] = {"ms_per_user": 0.0, "alone_N@10": alone(debiased, "llm", subset),
                           "contribution_at_weight_1": contribution(debiased, prior, replace(prior, llm=1.0), subset)}
    return entry


def generation_entry(model, tokenizer, dataset, rows: RankingRows, prompt_config, users: int) -> dict:
    """Time and NDCG@10 of the generated list on the first `users` test rows (their subset rows)."""
    picked = [i for i in range(len(rows)) if bool(rows.subset()[i])][:users]
    ndcgs, seconds, tokens = [], [], []
    for i in picked:
        history = item_texts(dataset.catalog, rows.histories[i][-prompt_config.max_history:], prompt_config)
        titles = item_texts(dataset.catalog, rows.candidate_ids[i].tolist(), prompt_config)
        result = generate_ranking(model, tokenizer, generation_prompt(tokenizer, history, titles, prompt_config))
        target = int(rows.target_index[i])
        ndcgs.append(ndcg_at(result.ranking.index(target) + 1, 10) if target >= 0 else 0.0)
        seconds.append(result.seconds)
        tokens.append(result.num_generated_tokens)
    return {"test_users": len(picked), "ms_per_user": round(1000 * sum(seconds) / len(picked), 1),
            "alone_N@10_test": round(sum(ndcgs) / len(ndcgs), 4),
            "generated_tokens": round(sum(tokens) / len(tokens), 1)}


def choose(row_sets, scores, prior: FusionWeights, served: FusionWeights, config: TitleConfig) -> dict:
    """The title-likelihood weight and score form with the best held-out validation NDCG@10 (ties: the smaller
    weight), kept only when not negative on the paper's validation users; test scored once with the choice."""
    def rows_with(set_name: str, per_token: bool) -> RankingRows:
        rows, _ = row_sets[set_name]
        return replace(rows, titles=title_opinion(*scores[set_name], per_token=per_token))

    grid = {}
    for per_token in (False, True):
        rows = rows_with("heldout_val", per_token)
        for weight in WEIGHT_GRID:
            values = row_ndcgs(rows, replace(prior, titles=weight), subset=False)
            grid[(per_token, weight)] = sum(values) / len(values)
    best = max(grid.values())
    per_token, weight = min((k for k, v in grid.items() if v == best), key=lambda k: (k[1], k[0]))
    confirm = contribution(rows_with("paper_val", per_token), prior, replace(prior, titles=weight), subset=True)
    if weight and confirm["diff"] < 0:
        weight = 0.0  # held-out validation's choice did not hold on the paper's validation users
    chosen = replace(served, titles=weight)
    test_rows = rows_with("test", per_token)
    ranks = target_ranks(test_rows, chosen)
    test = {"subset": metrics_from_ranks(ranks[test_rows.subset()].tolist(), EVAL_KS),
            "overall": metrics_from_ranks(ranks.tolist() + [float("inf")] * (test_rows.total_users - len(test_rows)),
                                          EVAL_KS),
            "vs_served_without": contribution(test_rows, replace(served, titles=0.0), chosen, subset=True),
            "vs_retriever": contribution(test_rows, FusionWeights(1.0, 0.0, 0.0), chosen, subset=True)}
    return {"config": replace(config, per_token=per_token), "weight": weight,
            "validation": {"heldout_val_N@10_by_weight": {f"{'per_token' if k[0] else 'sum'}@{k[1]:g}": round(v, 4)
                                                           for k, v in grid.items()},
                           "paper_val_at_choice": confirm},
            "test": {part: ({k: round(v, 4) for k, v in value.items()} if part in ("subset", "overall") else value)
                     for part, value in test.items()}}


def print_table(results: dict) -> None:
    """The three ways as one table: ms a user, NDCG@10 alone, own contribution at weight 1 over the prior (with its
    interval below), order invariance. Columns: hv = held-out validation rows, pv = the paper's validation users."""
    print(f"\nrows: {results['rows']}\n(NDCG@10 of the way alone on hv = held-out validation rows, pv = the paper's "
          "validation users, test; hv+ etc.: NDCG@10 at weight 1 on top of the prior minus the prior's; film / letter: "
          "Spearman with the candidates reversed, film by film / letter by letter; ms a user)")
    table = {}
    for name, entry in results["ways"].items():
        first = next((entry[s] for s in ("heldout_val", "paper_val", "test") if s in entry), entry)
        row = {"ms": first.get("ms_per_user", 0.0)}
        for set_name, short in (("heldout_val", "hv"), ("paper_val", "pv"), ("test", "test")):
            if set_name in entry:
                row[short] = entry[set_name]["alone_N@10"]
                row[f"{short}+"] = entry[set_name]["contribution_at_weight_1"]["diff"]
        if "alone_N@10_test" in entry:
            row["test"] = entry["alone_N@10_test"]
        if entry.get("order_invariance_test"):
            row["film"] = entry["order_invariance_test"]["film_by_film"]
            row["letter"] = entry["order_invariance_test"]["letter_by_letter"]
        table[name] = row
    print(format_table(table, ["ms", "hv", "hv+", "pv", "pv+", "test", "test+", "film", "letter"]))
    for name, entry in results["ways"].items():
        intervals = {s: entry[s]["contribution_at_weight_1"]["ci95_diff"] for s in ("heldout_val", "paper_val", "test")
                     if s in entry}
        if intervals:
            print(f"  {name}: 95% intervals of the '+' columns: {intervals}")
    if "choice" in results:
        print(f"choice: {json.dumps(results['choice'])}")
    machine = results["machine"]
    print(machine_summary(machine))


if __name__ == "__main__":
    main()
