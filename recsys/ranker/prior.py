"""The fixed prior of stage two: retriever + co-watch, its window/span chosen and its weights fitted on
held-out examples.

`python -m recsys.ranker.prior` reads the held-out examples (`python -m recsys.ranker.heldout`)
whose target is in their retriever's top-20 (as the paper's stage one gives them), splits them by
user into training rows and validation rows (~15% of users), and for every (window, span) of the grid
  1. counts co-watch pairs in what each example's truncated retriever saw,
  2. fits the weights of log-softmax(retriever) and co-watch by maximum likelihood on the training rows
     (a two-parameter conditional logit: softmax over the 20 candidates),
  3. scores NDCG@10 of the fused order on the validation rows.
The best (window, span) by validation NDCG@10 is kept. Then the candidate pool (`recsys.ranker.pool`):
how many of LRURec's top films the prior re-ranks to keep 20, chosen on the paper's 610 validation users.
`--write` saves the counts over every user's training part (`cowatch.safetensors`), `prior.json` (the choice and
its grids) and the prior's part of `served_config.json` (`serve_prior`) into the adapter folder; the ranker is then
trained on top of this prior and served with it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from recsys import NUM_CANDIDATES
from recsys.data import SequenceDataset, load_dataset
from recsys.data.amazon import SOURCES
from recsys.data.sources import DATASETS
from recsys.folders import retriever_folder, served_folder
from recsys.ranker.cowatch import CoWatchConfig, CoWatchCounts
from recsys.metrics import ndcg_at, paired_bootstrap
from recsys.ranker.artefacts import PRIOR_FILE
from recsys.ranker.evaluate import RETRIEVER, all_user_ranks, ndcg10
from recsys.ranker.fusion import FusionWeights, retriever_opinion
from recsys.ranker.heldout import HeldOutExamples, load_held_out, split_by_user, truncated_sequences
from recsys.ranker.pool import MAX_POOL, keep_best
from recsys.ranker.prompt import PromptConfig
from recsys.ranker.rows import RankingRows, split_rows
from recsys.ranker.served import SERVED_CONFIG_FILE, ServedConfig
from recsys.results import write_json
from recsys.retriever.candidates import retrieve_split
from recsys.retriever.checkpoint import load_model
from recsys.retriever.model import LRURec

WINDOW_GRID = (1, 2, 3, 5, 10)
SPAN_GRID = (1, 3, 5, 10, 20)


def heldout_rows(examples: HeldOutExamples, dataset: SequenceDataset, config: CoWatchConfig) -> RankingRows:
    """Held-out examples as RankingRows, each co-watch scored from its own truncated retriever's sequences."""
    cowatch = torch.zeros(examples.candidate_ids.shape)
    histories = examples.histories(dataset)
    for cut in examples.cuts.unique().tolist():
        counts = CoWatchCounts.from_sequences(truncated_sequences(dataset, cut).values(), dataset.num_items, config)
        index = (examples.cuts == cut).nonzero().flatten()
        cowatch[index] = counts.scores([histories[i] for i in index.tolist()], examples.candidate_ids[index])
    return RankingRows(histories, examples.candidate_ids, examples.candidate_scores, cowatch, examples.answer_index,
                       len(examples))


def pooled_heldout_rows(examples: HeldOutExamples, dataset: SequenceDataset, config: CoWatchConfig,
                        weights: FusionWeights, pool: int, misses: bool = False) -> RankingRows:
    """Held-out examples as the served pool gives them: of each row's top-`pool` (its retriever's order), the 20 the
    prior (`weights`, co-watch from the row's own truncated retriever) keeps (`recsys.ranker.pool.keep_best`), in the
    retriever's order. A row whose target was not kept is left out (a training row needs its answer), or with
    `misses` kept with target_index -1 (a miss, as evaluation counts it). `retriever_rank` keeps the target's rank in
    the retriever's own order. `pool` 20: the rows whose target is in the top-20, as they are."""
    rows = heldout_rows(examples.top(pool), dataset, config)
    kept = keep_best(rows.retriever_scores, rows.cowatch, weights)
    hit = kept == rows.target_index.view(-1, 1)
    found = hit.any(dim=1)
    index = torch.arange(len(rows)) if misses else found.nonzero().flatten()
    kept, hit = kept[index], hit[index]
    return RankingRows([rows.histories[i] for i in index.tolist()], rows.candidate_ids[index].gather(1, kept),
                       rows.retriever_scores[index].gather(1, kept), rows.cowatch[index].gather(1, kept),
                       torch.where(found[index], hit.int().argmax(dim=1), torch.tensor(-1)), len(index),
                       retriever_rank=rows.target_index[index] + 1.0)


def training_counts(dataset: SequenceDataset, config: CoWatchConfig) -> CoWatchCounts:
    """Co-watch counts over every user's training part: what validation and test users (and the app) are scored with."""
    return CoWatchCounts.from_sequences((dataset.train(u) for u in sorted(dataset.sequences)), dataset.num_items,
                                        config)


def fit_prior_weights(retriever_scores: torch.Tensor, cowatch_scores: torch.Tensor,
                      target_index: torch.Tensor, steps: int = 100) -> FusionWeights:
    """Maximum-likelihood weights (>= 0) of retriever and co-watch: softmax over the K candidates, (N, K) inputs."""
    opinions = torch.stack([retriever_opinion(retriever_scores), cowatch_scores.float()])  # (2, N, K)
    raw = torch.zeros(2, requires_grad=True)  # weights = softplus(raw) / softplus(0), starting at 1
    optimizer = torch.optim.LBFGS([raw], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")
    scale = torch.nn.functional.softplus(torch.zeros(()))

    def closure():
        optimizer.zero_grad()
        weights = torch.nn.functional.softplus(raw) / scale
        loss = torch.nn.functional.cross_entropy((weights.view(2, 1, 1) * opinions).sum(0), target_index)
        loss.backward()
        return loss

    optimizer.step(closure)
    retriever, cowatch = (torch.nn.functional.softplus(raw) / scale).tolist()
    return FusionWeights(retriever=round(retriever, 4), cowatch=round(cowatch, 4), llm=1.0)


@dataclass
class PriorChoice:
    """The chosen co-watch config and prior weights, with the evidence for the choice."""

    cowatch: CoWatchConfig
    weights: FusionWeights
    validation: dict  # held-out validation rows: NDCG@10 of the retriever's order and of the prior
    grid: list[dict]  # every (window, span): fitted weights and validation NDCG@10
    pool: int = NUM_CANDIDATES  # LRURec's top films the prior re-ranks to keep 20 (`recsys.ranker.pool`)
    pool_grid: list[dict] = field(default_factory=list)  # every pool size on the validation users

    def to_json(self) -> dict:
        return {"cowatch": asdict(self.cowatch), "weights": asdict(self.weights), "validation": self.validation,
                "grid": self.grid, "pool": self.pool, "pool_grid": self.pool_grid}


def choose_prior(examples: HeldOutExamples, dataset: SequenceDataset, windows=WINDOW_GRID,
                 spans=SPAN_GRID) -> PriorChoice:
    """Fit the weights on training rows and pick (window, span) by validation NDCG@10 (ties: the smaller window, span);
    rows whose target is in their retriever's top-20."""
    train_rows, val_rows = split_by_user(examples.top())
    grid = []
    for window in windows:
        for span in spans:
            config = CoWatchConfig(window, span)
            train = heldout_rows(train_rows, dataset, config)
            weights = fit_prior_weights(train.retriever_scores, train.cowatch, train.target_index)
            grid.append({"window": window, "span": span, "weights": asdict(weights),
                         "val_N@10": round(ndcg10(heldout_rows(val_rows, dataset, config),
                                                  weights.prior), 4)})
            print(f"window {window:>2} span {span:>2}: weights retriever {weights.retriever:.3f} cowatch "
                  f"{weights.cowatch:.3f}; held-out validation NDCG@10 {grid[-1]['val_N@10']:.4f}")
    best = max(grid, key=lambda g: (g["val_N@10"], -g["window"], -g["span"]))
    retriever_only = ndcg10(heldout_rows(val_rows, dataset, CoWatchConfig(1, 1)), RETRIEVER)
    validation = {"examples": len(val_rows), "users": int(val_rows.users.unique().numel()),
                  "training_examples": len(train_rows), "retriever_N@10": round(retriever_only, 4),
                  "prior_N@10": best["val_N@10"]}
    return PriorChoice(CoWatchConfig(best["window"], best["span"]), FusionWeights(**best["weights"]), validation, grid)


POOL_GRID = (NUM_CANDIDATES, 30, 50, MAX_POOL)
CHOOSE_SHARE = 0.5  # on validation users: the share whose rows choose, the rest fit the weights


def split_users(users: list[int], seed: int = 0, share: float = CHOOSE_SHARE) -> tuple[set[int], set[int]]:
    """(users whose rows fit the weights, users whose rows choose): a seeded split of `users`."""
    order = torch.randperm(len(users), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = round(len(users) * (1 - share))
    return {users[i] for i in order[:cut]}, {users[i] for i in order[cut:]}


def choose_on_validation(model: LRURec, dataset: SequenceDataset, windows=WINDOW_GRID, spans=SPAN_GRID,
                         pools=POOL_GRID, seed: int = 0) -> PriorChoice:
    """The prior of a data set without held-out examples (Amazon: sequences of ~9 items leave no room for truncated
    retrievers), chosen on its validation users alone: for every (window, span), the weights are fitted on half of
    them (rows whose target is in LRURec's top-20, co-watch counted over every user's training part) and NDCG@10 is
    scored on the other half; then the pool, by the other half's NDCG@10 over all its users (within 0.001, the
    smaller). The test users are not read."""
    candidates = retrieve_split(model, dataset, "val", k=max(pools))
    fit_users, choose_users = split_users(candidates.users.tolist(), seed)

    def halves(rows: RankingRows) -> tuple[RankingRows, RankingRows]:
        assert rows.users is not None
        users = rows.users.tolist()
        return (rows.select([i for i, u in enumerate(users) if u in fit_users]),
                rows.select([i for i, u in enumerate(users) if u in choose_users]))

    grid = []
    for window in windows:
        counts = training_counts(dataset, CoWatchConfig(window, max(spans)))
        for span in spans:
            counts.config = CoWatchConfig(window, span)  # the counts depend on the window; scoring reads the span
            fit, choose = halves(split_rows(dataset, "val", candidates, counts))
            weights = fit_prior_weights(fit.retriever_scores, fit.cowatch, fit.target_index)
            grid.append({"window": window, "span": span, "weights": asdict(weights),
                         "val_N@10": round(ndcg10(choose, weights.prior), 4)})
            print(f"window {window:>2} span {span:>2}: weights retriever {weights.retriever:.3f} cowatch "
                  f"{weights.cowatch:.3f}; validation NDCG@10 (choosing half) {grid[-1]['val_N@10']:.4f}", flush=True)
    best = max(grid, key=lambda g: (g["val_N@10"], -g["window"], -g["span"]))
    config, weights = CoWatchConfig(best["window"], best["span"]), FusionWeights(**best["weights"]).prior
    counts = training_counts(dataset, config)
    fit, choose = halves(split_rows(dataset, "val", candidates, counts))
    validation = {"examples": len(choose), "users": len(choose_users), "training_examples": len(fit),
                  "retriever_N@10": round(ndcg10(choose, RETRIEVER), 4), "prior_N@10": best["val_N@10"]}
    chosen = sorted(choose_users)
    pool_grid = []
    for pool in pools:
        ranks = all_user_ranks(split_rows(dataset, "val", candidates, counts, pool=pool, weights=weights), weights,
                               chosen)
        pool_grid.append({"pool": pool, "N@10": round(sum(ndcg_at(r, 10) for r in ranks) / len(ranks), 4),
                          "R@10": round(sum(r <= 10 for r in ranks) / len(ranks), 4),
                          "coverage@20": round(sum(r <= NUM_CANDIDATES for r in ranks) / len(ranks), 4)})
    top = max(row["N@10"] for row in pool_grid)
    pool = min(row["pool"] for row in pool_grid if row["N@10"] >= top - 0.001)
    return PriorChoice(config, FusionWeights(**best["weights"]), validation, grid, pool, pool_grid)


def pooled_ndcg(model: LRURec, dataset: SequenceDataset, counts: CoWatchCounts, weights: FusionWeights,
                pool: int, split: str = "val") -> dict[str, list[float]]:
    """Per user of `split` (in the split's order): NDCG@10, Recall@10 and coverage@20 of the prior's order of the
    20 it keeps from LRURec's top-`pool`, ranked as evaluation ranks them (`split_rows`; a target not kept is a
    miss)."""
    candidates = retrieve_split(model, dataset, split, k=pool)
    prior = weights.prior
    rows = split_rows(dataset, split, candidates, counts, pool=pool, weights=prior)
    ranks = all_user_ranks(rows, prior, candidates.users.tolist())
    return {"N@10": [ndcg_at(r, 10) for r in ranks], "R@10": [float(r <= 10) for r in ranks],
            "coverage@20": [float(r <= NUM_CANDIDATES) for r in ranks]}


def choose_pool(model: LRURec, dataset: SequenceDataset, counts: CoWatchCounts, weights: FusionWeights,
                pools=POOL_GRID) -> tuple[int, list[dict]]:
    """(the pool size with the best mean validation NDCG@10, within 0.001 the smaller; every size's means and
    paired-bootstrap intervals against a pool of 20)."""
    per_user = {pool: pooled_ndcg(model, dataset, counts, weights, pool) for pool in pools}
    rows = []
    for pool in pools:
        row = {"pool": pool, **{k: round(sum(v) / len(v), 4) for k, v in per_user[pool].items()}}
        if pool != NUM_CANDIDATES and NUM_CANDIDATES in per_user:
            row["ci95_diff_vs_20"] = {k: [round(x, 4) for x in paired_bootstrap(per_user[pool][k],
                                                                                 per_user[NUM_CANDIDATES][k])]
                                      for k in ("N@10", "R@10")}
        rows.append(row)
    best = max(row["N@10"] for row in rows)
    return min(row["pool"] for row in rows if row["N@10"] >= best - 0.001), rows


def serve_prior(folder: Path, choice: PriorChoice, domain: str) -> ServedConfig:
    """The served config with `choice` as its prior: its pool, co-watch window/span and the prior's two weights. A
    folder that serves a ranker keeps its LLM's and title likelihood's weights and its prompt (`--write` over a
    trained adapter's folder); a new one serves the prior alone (the LLM's weight 0: shown, not ranked by) with the
    paper's prompt in `domain`'s words."""
    if (folder / SERVED_CONFIG_FILE).is_file():  # a damaged one raises: never silently reset under an adapter
        before = ServedConfig.from_pretrained(folder)
        fusion, prompt = before.fusion, before.prompt
    else:
        fusion, prompt = choice.weights.prior, PromptConfig(domain=domain)
    return ServedConfig(choice.pool, choice.cowatch,
                        replace(fusion, retriever=choice.weights.retriever, cowatch=choice.weights.cowatch), prompt)


def main(argv=None) -> PriorChoice:
    """Choose the prior on held-out examples and the pool on validation users, print both; with --write save
    the counts, prior.json and the served config (`serve_prior`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small", choices=sorted(DATASETS))
    parser.add_argument("--heldout", default="runs/heldout", help="folder written by recsys.ranker.heldout")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None, help="where --write puts prior.json and the counts (default: the "
                        "committed adapter's folder for MovieLens, checkpoints/llamarec-DATASET for the others)")
    parser.add_argument("--retriever", default=None,
                        help="LRURec checkpoint for the pool (default: checkpoints/lrurec-DATASET)")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--json", default=None, help="also write the choice and the grid here")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.dataset, args.data_dir)
    retriever = load_model(args.retriever or retriever_folder(args.dataset))
    if args.dataset in SOURCES:  # Amazon: too short for held-out positions; fitted and chosen on validation users
        choice = choose_on_validation(retriever, dataset)
        counts = training_counts(dataset, choice.cowatch)
    else:
        choice = choose_prior(load_held_out(args.heldout), dataset)
        counts = training_counts(dataset, choice.cowatch)
        choice.pool, choice.pool_grid = choose_pool(retriever, dataset, counts, choice.weights)
    print(json.dumps({"chosen": asdict(choice.cowatch), "weights": asdict(choice.weights), **choice.validation}))
    for row in choice.pool_grid:
        print(f"pool {row['pool']:>3}: validation users' NDCG@10 {row['N@10']:.4f}, R@10 {row['R@10']:.4f}, "
              f"coverage@20 {row['coverage@20']:.4f} {row.get('ci95_diff_vs_20', '')}")
    print(f"chosen pool: {choice.pool}")
    output = Path(args.output or served_folder(args.dataset))
    if args.write:
        counts.save(output)
        (output / PRIOR_FILE).write_text(json.dumps(choice.to_json(), indent=2) + "\n")
        serve_prior(output, choice, DATASETS[args.dataset].domain).save_pretrained(output)
        print(f"wrote {output / PRIOR_FILE}, the co-watch counts and {output / SERVED_CONFIG_FILE}")
    write_json(args.json, choice.to_json())
    return choice


if __name__ == "__main__":
    main()
