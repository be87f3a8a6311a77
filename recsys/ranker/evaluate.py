"""Two-stage evaluation: the retriever's top-20 re-ranked by the fused opinions (retriever, co-watch, LLM).

`python -m recsys.ranker.evaluate --adapter checkpoints/llamarec-smollm2-135m-ml-latest-small --json out.json`

Metrics follow the paper: on the valid-retrieval subset (users whose held-out item is in the
top-20) and overall (the subset's ranks, every other user a miss). Every caller (training
validation, evaluation, benchmarks) scores the LLM through `score_llm`, the app through the same
`recsys.ranker.verbalizer.letter_logits`, and ranks by `recsys.ranker.fusion`.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from recsys.data import Catalog, SequenceDataset, load_dataset
from recsys.data.errors import one_line
from recsys.metrics import format_table, metrics_from_ranks, ndcg_at, paired_bootstrap
from recsys.ranker.cowatch import COUNTS_FILE, CoWatchCounts
from recsys.ranker.fusion import FusionWeights, fused_scores, llm_opinion, retriever_opinion
from recsys.ranker.model import DEFAULT_ADAPTER, TRAIN_COMMAND, RankerLoadConfig, load_ranker
from recsys.ranker.prompt import PromptConfig, build_prompt, evidence_notes, item_texts
from recsys.ranker.verbalizer import build_prefix_cache, letter_logits, letter_token_ids
from recsys.results import write_json
from recsys.retriever.candidates import SplitCandidates, load_candidates
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

EVAL_KS = (1, 5, 10)
RANKER_CONFIG_FILE = "ranker_config.json"


@dataclass
class RankingRows:
    """Ranking tasks (one per user, or per held-out position) with every opinion's scores of their 20 candidates."""

    histories: list[list[int]]  # item ids, oldest first
    candidate_ids: torch.Tensor  # (N, K) the retriever's order
    retriever_scores: torch.Tensor  # (N, K) raw retriever scores
    cowatch: torch.Tensor  # (N, K) co-watch scores
    target_index: torch.Tensor  # (N,) 0-based position of the target among the candidates
    total_users: int  # users of the whole split, for overall metrics (misses outside the subset)
    llm: torch.Tensor | None = None  # (N, K) the LLM's log-probabilities once scored

    def __len__(self) -> int:
        return len(self.histories)

    def opinions(self) -> dict[str, torch.Tensor]:
        """The named opinions (N, K) for `recsys.ranker.fusion`; "llm" only once scored."""
        named = {"retriever": retriever_opinion(self.retriever_scores), "cowatch": self.cowatch}
        if self.llm is not None:
            named["llm"] = self.llm
        return named

    def select(self, index: list[int]) -> "RankingRows":
        """The rows at `index`, in that order."""
        picked = torch.as_tensor(index, dtype=torch.long)
        return replace(self, histories=[self.histories[i] for i in index], candidate_ids=self.candidate_ids[picked],
                       retriever_scores=self.retriever_scores[picked], cowatch=self.cowatch[picked],
                       target_index=self.target_index[picked],
                       llm=None if self.llm is None else self.llm[picked])


def subset_rows(candidates: SplitCandidates, max_users: int | None = None, seed: int = 0) -> list[int]:
    """Rows whose target is among the candidates; a seeded sample of `max_users` of them when given."""
    rows = [i for i, p in enumerate(candidates.target_positions().tolist()) if p >= 0]
    if max_users is not None and max_users < len(rows):
        generator = torch.Generator().manual_seed(seed)
        picked = torch.randperm(len(rows), generator=generator)[:max_users].tolist()
        rows = sorted(rows[i] for i in picked)
    return rows


def histories_of(dataset: SequenceDataset, split: str, users: list[int]) -> list[list[int]]:
    """Input histories (item ids) of `users` for "val" or "test"."""
    return [(dataset.val_input(u) if split == "val" else dataset.test_input(u))[0] for u in users]


def split_rows(dataset: SequenceDataset, split: str, candidates: SplitCandidates, counts: CoWatchCounts | None,
               max_users: int | None = None, seed: int = 0) -> RankingRows:
    """The valid-retrieval subset of a split ("val" or "test") as RankingRows, co-watch scored with `counts`
    (zeros without counts)."""
    rows = subset_rows(candidates, max_users, seed)
    histories = histories_of(dataset, split, candidates.users[rows].tolist())
    candidate_ids = candidates.candidate_ids[rows].long()
    cowatch = counts.scores(histories, candidate_ids) if counts else torch.zeros(candidate_ids.shape)
    return RankingRows(histories, candidate_ids, candidates.candidate_scores[rows].float(), cowatch,
                       candidates.target_positions()[rows].long(), int(candidates.users.numel()))


def score_llm(model, tokenizer, catalog: Catalog, rows: RankingRows, prompt_config: PromptConfig,
              batch_size: int = 1, progress: bool = True, permutation: torch.Tensor | None = None) -> RankingRows:
    """The rows with the LLM's log-probabilities (N, K) filled in: one verbalizer pass per prompt.

    `batch_size` 1 (the default) scores exactly as the app does: one unpadded prompt per pass after the
    cached instruction prefix (`build_prefix_cache`), so that every figure measured here is the one a
    user gets; larger batches are left-padded and can differ in the last bits of bf16.
    The prompt lists the candidates in the retriever's order, or in `permutation[i]` order for row i
    ((N, K) indices; the scores come back in the retriever's order either way).
    """
    letter_ids = letter_token_ids(tokenizer)
    was_training = model.training
    model.eval()
    prefix = build_prefix_cache(model, tokenizer)  # as the app: the shared instruction's keys/values computed once
    scores = []
    for start in tqdm(range(0, len(rows), batch_size), desc="verbalizer", disable=not progress, leave=False):
        index = range(start, min(start + batch_size, len(rows)))
        orders = [permutation[i] if permutation is not None else torch.arange(rows.candidate_ids.shape[1])
                  for i in index]
        prompts = [build_prompt(tokenizer, item_texts(catalog, rows.histories[i], prompt_config),
                                item_texts(catalog, rows.candidate_ids[i][o].tolist(), prompt_config), prompt_config,
                                notes=evidence_notes(rows.cowatch[i], o) if prompt_config.evidence else None)
                   for i, o in zip(index, orders)]
        logits = letter_logits(model, tokenizer, [p.text for p in prompts], letter_ids, prefix).cpu()
        for row, o in zip(llm_opinion(logits), orders):
            back = torch.empty_like(row)
            back[o] = row  # the candidate shown at letter j is candidate o[j] of the retriever's order
            scores.append(back)
    model.train(was_training)
    return replace(rows, llm=torch.stack(scores))


def target_ranks(rows: RankingRows, weights: FusionWeights) -> torch.Tensor:
    """1-based rank (N,) of each row's target in the fused order; ties go to the retriever's order."""
    scores = fused_scores(rows.opinions(), weights)
    target = scores.gather(1, rows.target_index.view(-1, 1))
    index = torch.arange(scores.shape[1]).view(1, -1)
    ahead = (scores > target) | ((scores == target) & (index < rows.target_index.view(-1, 1)))
    return ahead.sum(dim=1) + 1


def ranking_metrics(rows: RankingRows, weights: FusionWeights) -> dict[str, dict[str, float]]:
    """{"subset": metrics, "overall": metrics} at k in EVAL_KS for the fused order."""
    ranks = target_ranks(rows, weights).tolist()
    misses = [math.inf] * (rows.total_users - len(rows))
    return {"subset": metrics_from_ranks(ranks, EVAL_KS), "overall": metrics_from_ranks(ranks + misses, EVAL_KS)}


def ndcg10(rows: RankingRows, weights: FusionWeights) -> float:
    """Mean subset NDCG@10 of the fused order."""
    return sum(ndcg_at(r, 10) for r in target_ranks(rows, weights).tolist()) / len(rows)


RETRIEVER = FusionWeights(retriever=1.0, cowatch=0.0, llm=0.0)


def ablation_weights(final: FusionWeights) -> dict[str, FusionWeights]:
    """The ablation rows of a served fusion: the retriever's order, each opinion added, the LLM on top of the
    prior at the weight it was trained with (1), and the served fusion (whose LLM weight validation chose)."""
    return {"retriever": RETRIEVER, "llm_alone": FusionWeights(retriever=0.0, cowatch=0.0, llm=1.0),
            "retriever+llm": final.but(cowatch=0.0, llm=final.llm or 1.0), "retriever+cowatch": final.but(llm=0.0),
            "retriever+cowatch+llm": final.but(llm=1.0), "final": final}


def ndcg_interval(rows: RankingRows, ours: FusionWeights, baseline: FusionWeights = RETRIEVER,
                  resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Paired-bootstrap 95% interval of subset NDCG@10, `ours` minus `baseline`, over the rows."""
    mine = [ndcg_at(r, 10) for r in target_ranks(rows, ours).tolist()]
    theirs = [ndcg_at(r, 10) for r in target_ranks(rows, baseline).tolist()]
    return paired_bootstrap(mine, theirs, resamples, seed)


def ablation(rows: RankingRows, final: FusionWeights) -> dict:
    """Every ablation row's subset and overall metrics, with its paired interval against the retriever's order,
    and the LLM's own contribution with its interval: retriever + co-watch + LLM (at its trained weight 1)
    minus retriever + co-watch."""
    result = {}
    for name, weights in ablation_weights(final).items():
        if weights.llm and rows.llm is None:
            continue
        metrics = ranking_metrics(rows, weights)
        entry = {part: {k: round(v, 4) for k, v in metrics[part].items()} for part in metrics}
        entry["weights"] = weights.__dict__
        if name != "retriever":
            entry["ci95_vs_retriever_N@10"] = [round(x, 4) for x in ndcg_interval(rows, weights)]
        result[name] = entry
    if rows.llm is not None:
        prior, with_llm = final.but(llm=0.0), final.but(llm=1.0)
        gain = ndcg10(rows, with_llm) - ndcg10(rows, prior)
        result["llm_contribution"] = {"N@10": round(gain, 4), "llm_weight": 1.0,
                                      "ci95_N@10": [round(x, 4) for x in ndcg_interval(rows, with_llm, prior)]}
    return result


def print_ablation(result: dict, title: str) -> None:
    """Print an `ablation` result as subset and overall tables."""
    columns = [f"{m}@{k}" for k in EVAL_KS for m in ("M", "N", "R")]
    print(title)
    for part in ("subset", "overall"):
        print(f"[{part}]")
        print(format_table({n: r[part] for n, r in result.items() if isinstance(r, dict) and part in r}, columns))
    for name, entry in result.items():
        if isinstance(entry, dict) and "ci95_vs_retriever_N@10" in entry:
            print(f"  {name}: subset NDCG@10 minus the retriever's, 95% interval {entry['ci95_vs_retriever_N@10']}")
    if "llm_contribution" in result:
        print(f"  the LLM's own contribution: {result['llm_contribution']}")


def ranker_config_error(path: Path, reason: str) -> RuntimeError:
    """The one-line error for an unusable ranker_config.json: the file and the command that re-creates it."""
    return RuntimeError(f"{path} is corrupt ({reason}). Re-create it with: {TRAIN_COMMAND}")


def read_ranker_config(adapter: str | Path | None) -> dict:
    """The ranker_config.json saved beside an adapter ({} when there is none); RuntimeError when it is unreadable."""
    if not adapter or not (Path(adapter) / RANKER_CONFIG_FILE).is_file():
        return {}
    path = Path(adapter) / RANKER_CONFIG_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:  # ValueError covers bad JSON and bad UTF-8
        raise ranker_config_error(path, one_line(error)) from error
    if not isinstance(saved, dict):
        raise ranker_config_error(path, "not a JSON object")
    return saved


def read_fusion_weights(adapter: str | Path | None) -> FusionWeights:
    """The fusion weights saved with an adapter ("fusion"), or from an older config's single "fusion_weight"
    (retriever weight, no co-watch); the LLM alone when none was saved."""
    saved = read_ranker_config(adapter)
    path = Path(adapter or ".") / RANKER_CONFIG_FILE
    try:
        if "fusion" in saved:
            if not isinstance(saved["fusion"], dict):
                raise TypeError("not a JSON object")
            return FusionWeights(**saved["fusion"])
        return FusionWeights(retriever=saved.get("fusion_weight", 0.0), cowatch=0.0, llm=1.0)
    except (TypeError, ValueError) as error:
        raise ranker_config_error(path, f"fusion: {one_line(error)}") from error


def read_cowatch(adapter: str | Path | None) -> CoWatchCounts | None:
    """The co-watch counts saved beside an adapter (None for an adapter without them: no co-watch opinion).

    An adapter whose fusion gives co-watch a weight, or whose prompt shows co-watch evidence, must have them:
    FileNotFoundError says how to make them.
    """
    if adapter and (Path(adapter) / COUNTS_FILE).is_file():
        return CoWatchCounts.load(adapter)
    if adapter and (read_fusion_weights(adapter).cowatch or read_prompt_config(adapter).evidence):
        raise FileNotFoundError(f"{Path(adapter) / COUNTS_FILE} not found. Create it with: "
                                "python -m recsys.ranker.prior --write")
    return None


def read_prompt_config(adapter: str | Path | None) -> PromptConfig:
    """The prompt budgets an adapter was trained with (the paper's defaults when none were saved)."""
    saved = read_ranker_config(adapter).get("prompt", {})
    try:
        config = PromptConfig(**saved)
    except TypeError as error:  # not a JSON object, or unknown keys
        raise ranker_config_error(Path(adapter) / RANKER_CONFIG_FILE, f"prompt: {one_line(error)}") from error
    for name in saved:
        default = getattr(PromptConfig, name)
        if type(saved[name]) is not type(default) or (isinstance(default, int) and saved[name] < 0):
            raise ranker_config_error(Path(adapter) / RANKER_CONFIG_FILE, f"prompt {name} {saved[name]!r}")
    return config


def main(argv=None) -> dict:
    """Evaluate on validation or test users; print the ablation tables and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None, help="hub name or folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER), help="peft adapter folder, or 'none'")
    parser.add_argument("--retriever", default=str(DEFAULT_CHECKPOINT), help="folder with candidates.safetensors")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--max-users", type=int, default=None, help="evaluate a seeded sample of the subset")
    parser.add_argument("--batch-size", type=int, default=1, help="1 = exactly as the app scores")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="unquantized CPU weights (auto: bf16 where the CPU has it natively, as the app)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    adapter = None if args.adapter == "none" else args.adapter
    dataset = load_dataset("ml-latest-small", args.data_dir)
    weights = read_fusion_weights(adapter)
    counts = read_cowatch(adapter)
    rows = split_rows(dataset, args.split, load_candidates(args.retriever)[args.split], counts, args.max_users)
    model, tokenizer = load_ranker(RankerLoadConfig(base_model=args.base_model, adapter=adapter,
                                                   cpu_precision=args.precision))
    rows = score_llm(model, tokenizer, dataset.catalog, rows, read_prompt_config(adapter), args.batch_size)
    result = ablation(rows, weights)
    result.update(users=len(rows), total_users=rows.total_users, fusion=weights.__dict__)
    print_ablation(result, f"{args.split}: {len(rows)} users in the valid-retrieval subset of {rows.total_users}; fusion {weights}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
