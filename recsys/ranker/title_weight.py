"""`python -m recsys.ranker.title_weight --dataset beauty`: title likelihood's weight in a served ranker folder,
chosen on validation users, the test users read once.

Title likelihood (`recsys.ranker.title_likelihood`) scores each of the 20 served candidates by the base model's
log-probability of its title as the next line after the history's titles, under a header that names the data set's
items ("Products a user bought, in order:"): no letters, no training. This step

1. scores it on the served candidates of a seeded sample of the validation users' rows (the sample the folder's
   LLM weight was chosen on by `recsys.ranker.train --zero-shot` or `--over-prior`: the seed and count its
   training_config.json records), with the base weights in the precision the app serves them in,
2. chooses its weight on top of the folder's served fusion over `evaluate.WEIGHT_GRID` by NDCG@10 (ties: the
   smaller, so a weight that buys nothing stays 0), for each score form (the title's summed log-probability, or its
   mean per token: long titles' sums lie tens of nats apart), and the form whose best weight scores higher; the
   chosen weight's validation gain over weight 0 (by the same NDCG@10 over every row) is reported with its
   paired-bootstrap interval,
3. scores every test user once with it,

and writes the weight into the folder's served_config.json (the app then computes the opinion on every Recommend
when it is above 0), the score form into its title_config.json (read by `RankerArtefacts.load`, served by
`Pipeline.load`) and the figures under "titles" in its metrics.json. In a folder with a trained adapter (the
paper's recipe over an Amazon data set's prior: `recsys.ranker.train --over-prior`) the LLM's opinion is the
adapter's and title likelihood stays the base model's, the adapter switched off, as the app then computes it for
that folder (`RankerArtefacts.base_titles`); MovieLens's trained folder scores titles with a catalog-pretrained
adapter instead (`bench/llm_rankers.py --write-choice`).

Scoring takes about an hour on 2 CPU cores (product titles are long), so each split's scores are saved as they are
computed (`recsys.ranker.title_scores`): a rerun after an interruption continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from recsys.data import load_dataset
from recsys.data.sources import DATASETS
from recsys.folders import run_folder, served_folder
from recsys.machine import machine_record
from recsys.ranker.artefacts import METRICS_FILE, TITLE_CONFIG_FILE, RankerArtefacts
from recsys.ranker.base_model import resolve_base_model
from recsys.metrics import paired_bootstrap
from recsys.ranker.evaluate import (choose_weight, ndcg10, ndcg_interval, ranking_metrics, rows_ndcgs, score_llm,
                                    score_titles, weight_gain)
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.model import RankerLoadConfig, load_adapter, load_base_model, load_tokenizer, loaded_quantization
from recsys.ranker.rows import RankingRows, split_rows
from recsys.ranker.title_likelihood import TitleConfig, served_title_config, title_opinion
from recsys.ranker.title_scores import resumable_title_scores, title_scores_key, title_scores_path
from recsys.retriever.candidates import load_candidates

VALIDATION_USERS = 1000  # as the zero-shot LLM's choice (`recsys.reproduce`)


@dataclass(frozen=True)
class TitleWeightConfig:
    """Which folder gets a title weight, and the rows that choose it."""

    dataset: str
    served: str | None = None  # the ranker folder (None: checkpoints/llamarec-DATASET, zero-shot)
    candidates: str | None = None  # LRURec's top-`pool` of each user (None: runs/candidates-DATASET)
    data_dir: str | None = None
    base_model: str | None = None  # None: SmolLM2-135M-Instruct
    precision: str = "auto"  # the base weights on CPU, as the app serves them (bf16 where the CPU has it natively)
    # the validation sample: None = the folder's LLM's (its training_config.json), so both opinions are chosen on
    # the same rows; without one, VALIDATION_USERS users at seed 42
    val_users: int | None = None
    seed: int | None = None


def contribution(rows: RankingRows, without: FusionWeights, weight: float) -> dict:
    """Subset NDCG@10 of `without` plus title likelihood at `weight`, minus `without`'s, with its paired-bootstrap
    95% interval (over the rows' users)."""
    ours = replace(without, titles=weight)
    return {"weight": weight, "N@10": round(ndcg10(rows, ours), 4),
            "diff": round(ndcg10(rows, ours) - ndcg10(rows, without), 4),
            "ci95_diff": [round(x, 4) for x in ndcg_interval(rows, ours, without)]}


def against_replaced(rows: RankingRows, ours: FusionWeights, likelihoods: tuple[torch.Tensor, torch.Tensor],
                     ranker: RankerArtefacts, titles: TitleConfig) -> dict | None:
    """A trained folder's served fusion (`ours` over `rows`, its LLM's and title opinions in them) against the folder
    its LLM was trained over (`recsys.ranker.train --over-prior --prior FOLDER`: the one it would replace), on the
    same validation rows: their NDCG@10 over every row, ours minus theirs with its paired-bootstrap 95% interval
    (RESULTS.md, "How choices are made": a replacement is served when this lies above zero). The other folder's
    title opinion comes from the same title scores (`likelihoods`, the base model's), in its own score form.

    None for a folder that is not such a replacement: no adapter, no `over_prior` training, or a prior folder that
    serves another pool, other co-watch counts, titles read otherwise, or an LLM opinion of its own (not scored
    here)."""
    if ranker.adapter is None or not ranker.training.get("over_prior") or not ranker.training.get("prior"):
        return None
    other = RankerArtefacts.load(ranker.training["prior"])
    their_titles = other.title or served_title_config(other.prompt)
    if (other.adapter is not None or other.fusion.llm or other.pool != ranker.pool
            or other.served.cowatch != ranker.served.cowatch
            or replace(their_titles, per_token=titles.per_token) != titles):
        return None
    theirs_rows = replace(rows, titles=title_opinion(*likelihoods, per_token=their_titles.per_token))
    ours_n, theirs_n = rows_ndcgs(rows, ours), rows_ndcgs(theirs_rows, other.fusion)
    return {"folder": str(other.folder), "fusion": asdict(other.fusion),
            "rows_N@10": round(sum(ours_n) / len(ours_n), 4),
            "replaced_rows_N@10": round(sum(theirs_n) / len(theirs_n), 4),
            "diff": round((sum(ours_n) - sum(theirs_n)) / len(ours_n), 4),
            "ci95_diff": [round(x, 4) for x in paired_bootstrap(ours_n, theirs_n)]}


def choose_title_weight(config: TitleWeightConfig) -> dict:
    """Score, choose, score test once, write (module docstring); returns what it wrote under "titles".

    ValueError when the folder serves another domain's items than the data set holds, or is a trained MovieLens
    folder (whose titles a catalog-pretrained adapter scores)."""
    folder = Path(config.served or served_folder(config.dataset))
    ranker = RankerArtefacts.load(folder)
    if ranker.adapter is not None and ranker.prompt.domain == "movie":
        raise ValueError(f"{folder} is a trained MovieLens folder: its title weight is chosen with its "
                         "catalog-pretrained adapter (bench/llm_rankers.py --write-choice)")
    if ranker.prompt.domain != DATASETS[config.dataset].domain:
        raise ValueError(f"{folder} serves {ranker.prompt.domain}s, {config.dataset} holds "
                         f"{DATASETS[config.dataset].domain}s")
    dataset = load_dataset(config.dataset, config.data_dir)
    candidates = load_candidates(config.candidates or run_folder("candidates", config.dataset))
    if config.val_users is not None:
        val_users: int | None = config.val_users
    else:  # the LLM's sample (None there: every row), or the default without a record
        val_users = ranker.training["val_users"] if "val_users" in ranker.training else VALIDATION_USERS
    seed = config.seed if config.seed is not None else ranker.training.get("seed", 42)
    tokenizer = load_tokenizer(config.base_model)
    model = load_base_model(RankerLoadConfig(base_model=config.base_model, cpu_precision=config.precision))
    if ranker.adapter is not None:  # the LLM's opinion; title likelihood is the base model's, the adapter off
        model = load_adapter(model, ranker.adapter)
    model.eval()
    titles = served_title_config(ranker.prompt)
    served = ranker.fusion

    def scored(split: str, max_users: int | None) -> tuple[RankingRows, tuple[torch.Tensor, torch.Tensor]]:
        """The split's rows (the served LLM's opinion in them when it has a weight) and their titles' (sums,
        token counts)."""
        rows = split_rows(dataset, split, candidates[split], ranker.counts, max_users, seed, pool=ranker.pool,
                          weights=served)
        key = title_scores_key(titles, str(resolve_base_model(config.base_model)), next(model.parameters()).dtype,
                               loaded_quantization(model))

        def score_base_titles(part: RankingRows) -> tuple[torch.Tensor, torch.Tensor]:
            with model.disable_adapter() if ranker.adapter is not None else nullcontext():
                return score_titles(model, tokenizer, dataset.catalog, part, titles)

        likelihoods = resumable_title_scores(score_base_titles, rows, title_scores_path(folder, split), key)
        return (score_llm(model, tokenizer, dataset.catalog, rows, ranker.prompt) if served.llm else rows), likelihoods

    def form(rows: RankingRows, likelihoods: tuple[torch.Tensor, torch.Tensor], per_token: bool) -> RankingRows:
        return replace(rows, titles=title_opinion(*likelihoods, per_token=per_token))

    without = replace(served, titles=0.0)
    validation, likelihoods = scored("val", val_users)
    # each score form's best weight; the form whose best is higher (ties: the smaller weight, then the sum)
    choices = {per_token: choose_weight(form(validation, likelihoods, per_token), without, "titles")
               for per_token in (False, True)}
    per_token = max(choices, key=lambda p: (choices[p][1][choices[p][0].titles], -choices[p][0].titles, not p))
    chosen, titles = choices[per_token][0], replace(titles, per_token=per_token)
    for p, (_, by_weight) in choices.items():
        print(f"validation NDCG@10 by title weight, {'per token' if p else 'summed'} ({len(validation)} rows): "
              + ", ".join(f"{w:g}: {v:.4f}" for w, v in by_weight.items()), flush=True)
    # how far validation's choice stands from no title weight: a gain whose interval holds 0 is a choice by noise
    on_validation = weight_gain(form(validation, likelihoods, per_token), without, "titles", chosen.titles)
    print(f"chosen: weight {chosen.titles:g}, {'per token' if per_token else 'summed'}; validation gain "
          f"{on_validation['diff']:+.4f} {on_validation['ci95_diff']}", flush=True)
    replaced = against_replaced(form(validation, likelihoods, per_token), chosen, likelihoods, ranker, titles)
    if replaced is not None:
        print(f"against {replaced['folder']}, which it would replace: validation NDCG@10 "
              f"{replaced['rows_N@10']:.4f} vs {replaced['replaced_rows_N@10']:.4f}, {replaced['diff']:+.4f} "
              f"{replaced['ci95_diff']}", flush=True)
    test = form(*scored("test", None), per_token)
    on_test: dict[str, Any] = {"titles_alone_N@10": round(ndcg10(test, FusionWeights(0.0, 0.0, 0.0, titles=1.0)), 4),
                               "at_weight_1": contribution(test, without, 1.0),
                               "served": {part: {k: round(v, 4) for k, v in values.items()}
                                          for part, values in ranking_metrics(test, chosen).items()}}
    if chosen.titles:
        on_test["at_chosen_weight"] = contribution(test, without, chosen.titles)
    result = {"validation_rows": len(validation), "validation_sample": {"users": val_users, "seed": seed},
              "val_ndcg10_by_titles_weight": {"sum": choices[False][1], "per_token": choices[True][1]},
              "weight": chosen.titles, "val_at_chosen_weight": on_validation,
              **({"val_against_replaced": replaced} if replaced is not None else {}),
              "title": asdict(titles), "machine": machine_record(next(model.parameters()).dtype),
              "test_users_in_subset": int(test.subset().sum()), "test_users": test.total_users, "test": on_test}
    metrics_path = folder / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["titles"] = result
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    replace(ranker.served, fusion=chosen).save_pretrained(folder)
    (folder / TITLE_CONFIG_FILE).write_text(json.dumps({"title": asdict(titles), "validation": {
        "rows": len(validation), "chosen_weight": chosen.titles}}, indent=2) + "\n")
    print(f"test ({result['test_users_in_subset']} users in the subset), title weight {chosen.titles:g}: title "
          f"likelihood alone {on_test['titles_alone_N@10']:.4f}, its contribution at weight 1 "
          f"{on_test['at_weight_1']['diff']:+.4f} {on_test['at_weight_1']['ci95_diff']}")
    return result


def main(argv=None) -> dict:
    """Parse the flags and run `choose_title_weight`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--served", default=None, help="the ranker folder (default: "
                        "checkpoints/llamarec-DATASET)")
    parser.add_argument("--candidates", default=None, help="python -m recsys.retriever.candidates's output (default: "
                        "runs/candidates-DATASET)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--base-model", default=None, help="default: SmolLM2-135M-Instruct")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="the base weights on CPU (auto: bf16 where the CPU has it natively, as the app)")
    parser.add_argument("--val-users", type=int, default=None, help="validation users that choose the weight "
                        "(default: the folder's LLM's sample, from the folder's training config; else "
                        f"{VALIDATION_USERS})")
    parser.add_argument("--seed", type=int, default=None, help="the sample's seed (default: as --val-users)")
    args = parser.parse_args(argv)
    return choose_title_weight(TitleWeightConfig(args.dataset, args.served, args.candidates, args.data_dir,
                                                 args.base_model, args.precision, args.val_users, args.seed))


if __name__ == "__main__":
    main()
