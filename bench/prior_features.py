"""Would a richer prior help? Extra stage-two features, fitted and chosen on held-out rows, confirmed on real users.

`python bench/prior_features.py --json bench/results/prior_features.json`

The served prior is log-softmax(LRURec) + co-watch (window 3, span 3; `recsys.ranker.prior`). Here each
candidate set of features is fitted the same way (a conditional logit over the 20 candidates, maximum
likelihood on the held-out training rows of `python -m recsys.ranker.heldout`) and scored on the held-out
validation rows (~1,170, ~94 users). Features, all from training sequences only (for held-out rows, only
what their truncated retriever saw):
  retriever     log-softmax of LRURec's scores
  cowatch       the served co-watch score (window 3, span 3)
  cowatch_long  the same counted within 10 positions, over the last 10 history items
  reverse       how often the candidate came *before* the recent history items (window 3, span 3)
  popularity    log(1 + how often the candidate occurs in training sequences)
The best set by held-out validation NDCG@10 is then confirmed (or not) against the served prior on the
paper's 136 validation users, whose candidates come from the committed LRURec and whose counts from every
user's training part; a paired bootstrap over users gives each difference's 95% interval. Test users are
never read. Takes seconds.
"""

from __future__ import annotations

import argparse

import torch


from recsys.data import SequenceDataset, load_dataset
from recsys.machine import machine_record
from recsys.metrics import ndcg_at, paired_bootstrap
from recsys.ranker.cowatch import CoWatchConfig, CoWatchCounts
from recsys.ranker.rows import split_rows
from recsys.ranker.fusion import retriever_opinion
from recsys.ranker.heldout import is_validation_user, load_held_out, truncated_sequences
from recsys.results import write_json
from recsys.retriever.candidates import load_candidates

SERVED = ("retriever", "cowatch")
CANDIDATE_SETS = [SERVED, *[SERVED + extra for extra in (
    ("reverse",), ("cowatch_long",), ("popularity",), ("cowatch_long", "popularity"), ("reverse", "cowatch_long"),
    ("reverse", "cowatch_long", "popularity"))]]


def features(sequences: list[list[int]], num_items: int, histories: list[list[int]], candidate_ids: torch.Tensor,
             retriever_scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every feature (N, 20) of the rows, counted in `sequences` (training parts only)."""
    short = CoWatchCounts.from_sequences(sequences, num_items, CoWatchConfig(3, 3))
    long = CoWatchCounts.from_sequences(sequences, num_items, CoWatchConfig(10, 10))
    reverse = CoWatchCounts(short.counts.T.contiguous(), short.config)
    occurrences = torch.zeros(num_items + 1)
    for sequence in sequences:
        occurrences.index_add_(0, torch.as_tensor(sequence, dtype=torch.long), torch.ones(len(sequence)))
    return {"retriever": retriever_opinion(retriever_scores), "cowatch": short.scores(histories, candidate_ids),
            "cowatch_long": long.scores(histories, candidate_ids), "reverse": reverse.scores(histories, candidate_ids),
            "popularity": torch.log1p(occurrences[candidate_ids])}


def heldout_features(dataset: SequenceDataset,
                     folder: str) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features of every held-out row, target index (N,), user (N,), is-validation (N,))."""
    examples = load_held_out(folder).top()  # the rows the prior is fitted on: target in the top-20
    histories = examples.histories(dataset)
    rows: dict[str, torch.Tensor] = {}
    for cut in examples.cuts.unique().tolist():
        index = (examples.cuts == cut).nonzero().flatten()
        part = features(list(truncated_sequences(dataset, cut).values()), dataset.num_items,
                        [histories[i] for i in index.tolist()], examples.candidate_ids[index],
                        examples.candidate_scores[index])
        for name, values in part.items():
            rows.setdefault(name, torch.zeros(examples.candidate_ids.shape))[index] = values
    return rows, examples.answer_index, examples.users, is_validation_user(examples.users)


def fit(rows: dict[str, torch.Tensor], names: tuple[str, ...], target: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood weights (F,) of the named features: softmax over the candidates (any sign)."""
    x = torch.stack([rows[n] for n in names], -1)
    weights = torch.zeros(len(names), requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy((x * weights).sum(-1), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return weights.detach()


def ndcg_each(rows: dict[str, torch.Tensor], names: tuple[str, ...], weights: torch.Tensor,
              target: torch.Tensor) -> torch.Tensor:
    """NDCG@10 (N,) of each row's target in the order of the weighted feature sum (ties: the retriever's order, the
    rule of `recsys.ranker.evaluate.target_ranks`)."""
    scores = (torch.stack([rows[n] for n in names], -1) * weights).sum(-1)
    mine = scores.gather(1, target.view(-1, 1))
    ahead = (scores > mine) | ((scores == mine) & (torch.arange(scores.shape[1]) < target.view(-1, 1)))
    return torch.tensor([ndcg_at(rank, 10) for rank in (ahead.sum(1) + 1).tolist()])


def per_user_interval(difference: torch.Tensor, users: torch.Tensor, seed: int = 0) -> list[float]:
    """95% interval of the mean row difference, resampling users (rows of one user stay together)."""
    ids = users.unique()
    sums = torch.stack([difference[users == u].sum() for u in ids])
    counts = torch.stack([(users == u).sum() for u in ids]).float()
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(len(ids), (1000, len(ids)), generator=generator)
    means = (sums[draws].sum(1) / counts[draws].sum(1)).sort().values
    return [round(means[25].item(), 4), round(means[974].item(), 4)]


def main(argv=None) -> dict:
    """Fit every candidate set on held-out training rows, choose on held-out validation, confirm on the paper's."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heldout", default="runs/heldout", help="folder written by recsys.ranker.heldout")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    machine = machine_record(torch.float32)
    dataset = load_dataset("ml-latest-small", args.data_dir)
    rows, target, users, validation = heldout_features(dataset, args.heldout)
    train = {n: v[~validation] for n, v in rows.items()}
    held = {n: v[validation] for n, v in rows.items()}
    table = []
    for names in CANDIDATE_SETS:
        weights = fit(train, names, target[~validation])
        ndcg = ndcg_each(held, names, weights, target[validation])
        table.append({"features": list(names), "weights": [round(w, 3) for w in weights.tolist()],
                      "heldout_val_N@10": round(ndcg.mean().item(), 4), "per_row": ndcg})
        print(f"{' + '.join(names):<55} held-out validation NDCG@10 {ndcg.mean().item():.4f}  weights "
              f"{[round(w, 2) for w in weights.tolist()]}")
    served, best = table[0], max(table, key=lambda row: row["heldout_val_N@10"])
    heldout_interval = per_user_interval(best["per_row"] - served["per_row"], users[validation])

    candidates = load_candidates()["val"]
    paper = split_rows(dataset, "val", candidates, None)
    sequences = [dataset.train(u) for u in sorted(dataset.sequences)]
    paper_rows = features(sequences, dataset.num_items, paper.histories, paper.candidate_ids, paper.retriever_scores)
    confirm = {}
    for row in (served, best):
        confirm[" + ".join(row["features"])] = ndcg_each(paper_rows, tuple(row["features"]),
                                                         torch.tensor(row["weights"]), paper.target_index)
    (served_name, served_ndcg), (best_name, best_ndcg) = confirm.items()
    paper_interval = [round(x, 4) for x in paired_bootstrap(best_ndcg.tolist(), served_ndcg.tolist())]
    print(f"chosen on held-out validation: {best_name} ({best['heldout_val_N@10']:.4f} vs "
          f"{served['heldout_val_N@10']:.4f};"
          f" difference interval {heldout_interval})")
    print(f"the paper's {len(paper)} validation users: served prior {served_ndcg.mean():.4f}, chosen "
          f"{best_ndcg.mean():.4f}, difference interval {paper_interval}")
    result = {"heldout_validation_rows": int(validation.sum()), "heldout_training_rows": int((~validation).sum()),
              "table": [{k: v for k, v in row.items() if k != "per_row"} for row in table],
              "chosen": best["features"], "heldout_val_ci95_diff": heldout_interval,
              "paper_val_users": len(paper), "paper_val_served_N@10": round(served_ndcg.mean().item(), 4),
              "paper_val_chosen_N@10": round(best_ndcg.mean().item(), 4), "paper_val_ci95_diff": paper_interval,
              "confirmed": paper_interval[0] > 0, "machine": machine}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
