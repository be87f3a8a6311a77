"""Two-stage evaluation: the retriever's top-20 re-ranked by the verbalizer, beside the retriever's own order.

`python -m recsys.ranker.evaluate --adapter checkpoints/llamarec-smollm2-135m-ml-latest-small --json out.json`

Metrics follow the paper: on the valid-retrieval subset (users whose held-out item is in the
top-20) and overall (the subset's ranks, every other user a miss).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from recsys.data import Catalog, SequenceDataset, load_dataset
from recsys.data.errors import one_line
from recsys.metrics import format_table, metrics_from_ranks, ndcg_at, paired_bootstrap
from recsys.ranker.fusion import WEIGHT_GRID, final_order
from recsys.ranker.model import DEFAULT_ADAPTER, TRAIN_COMMAND, RankerLoadConfig, load_ranker
from recsys.ranker.prompt import PromptConfig, build_prompt, item_texts
from recsys.ranker.verbalizer import candidate_probabilities, letter_token_ids
from recsys.retriever.candidates import SplitCandidates, load_candidates
from recsys.results import write_json
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT

EVAL_KS = (1, 5, 10)
RANKER_CONFIG_FILE = "ranker_config.json"


@dataclass
class ScoredSubset:
    """Verbalizer probabilities for the valid-retrieval subset of one split."""

    rows: list[int]  # row indices into the split's candidates
    probabilities: torch.Tensor  # (len(rows), K)
    retriever_scores: torch.Tensor  # (len(rows), K)
    target_positions: list[int]  # 0-based position of the target among the candidates
    total_users: int  # users of the whole split (for overall metrics)


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


def score_subset(model, tokenizer, catalog: Catalog, dataset: SequenceDataset, split: str,
                 candidates: SplitCandidates, prompt_config: PromptConfig, rows: list[int],
                 batch_size: int = 4, progress: bool = True) -> ScoredSubset:
    """Run the verbalizer on the given rows of a split's candidates."""
    letter_ids = letter_token_ids(tokenizer)
    users = candidates.users[rows].tolist()
    histories = histories_of(dataset, split, users)
    probabilities = []
    was_training = model.training
    model.eval()
    for start in tqdm(range(0, len(rows), batch_size), desc=f"verbalizer ({split})", disable=not progress, leave=False):
        prompts = [build_prompt(tokenizer, item_texts(catalog, h, prompt_config),
                                item_texts(catalog, candidates.candidate_ids[r].tolist(), prompt_config), prompt_config)
                   for h, r in zip(histories[start:start + batch_size], rows[start:start + batch_size])]
        probabilities += candidate_probabilities(model, tokenizer, prompts, letter_ids)
    model.train(was_training)
    positions = candidates.target_positions()[rows].tolist()
    return ScoredSubset(rows, torch.stack(probabilities), candidates.candidate_scores[rows], positions,
                        int(candidates.users.numel()))


def two_stage_ranks(scored: ScoredSubset, weight: float) -> list[int]:
    """Each subset user's 1-based target rank in the final (fused) order."""
    return [final_order(probs, scores, weight).index(p) + 1
            for probs, scores, p in zip(scored.probabilities, scored.retriever_scores, scored.target_positions)]


def ndcg_difference_interval(scored: ScoredSubset, weight: float, resamples: int = 1000,
                             seed: int = 0) -> tuple[float, float]:
    """Paired-bootstrap 95% interval of subset NDCG@10, two-stage minus the retriever's order."""
    ours = [ndcg_at(r, 10) for r in two_stage_ranks(scored, weight)]
    baseline = [ndcg_at(p + 1, 10) for p in scored.target_positions]
    return paired_bootstrap(ours, baseline, resamples, seed)


def two_stage_metrics(scored: ScoredSubset, weight: float) -> dict[str, dict[str, dict[str, float]]]:
    """{"subset"|"overall": {"retriever"|"two_stage": metrics}} at k in EVAL_KS."""
    retriever_ranks = [p + 1 for p in scored.target_positions]
    final_ranks = two_stage_ranks(scored, weight)
    misses = [math.inf] * (scored.total_users - len(scored.rows))
    return {"subset": {"retriever": metrics_from_ranks(retriever_ranks, EVAL_KS),
                       "two_stage": metrics_from_ranks(final_ranks, EVAL_KS)},
            "overall": {"retriever": metrics_from_ranks(retriever_ranks + misses, EVAL_KS),
                        "two_stage": metrics_from_ranks(final_ranks + misses, EVAL_KS)}}


def choose_weight(scored: ScoredSubset, grid=WEIGHT_GRID) -> tuple[float, dict[float, float]]:
    """The fusion weight with the best subset NDCG@10 (ties: the smallest weight), and every weight's NDCG@10."""
    by_weight = {w: two_stage_metrics(scored, w)["subset"]["two_stage"]["N@10"] for w in grid}
    best = max(by_weight.values())
    return min(w for w, v in by_weight.items() if v == best), by_weight


def print_report(result: dict, title: str) -> None:
    """Print subset and overall tables, retriever order beside two-stage."""
    columns = [f"{m}@{k}" for k in EVAL_KS for m in ("M", "N", "R")]
    print(title)
    for part in ("subset", "overall"):
        print(f"[{part}]")
        print(format_table(result[part], columns))


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


def read_fusion_weight(adapter: str | Path | None) -> float:
    """The fusion weight saved with an adapter (0 = LLM alone when none was saved)."""
    weight = read_ranker_config(adapter).get("fusion_weight", 0.0)
    try:
        weight = float(weight)
    except (TypeError, ValueError) as error:
        raise ranker_config_error(Path(adapter) / RANKER_CONFIG_FILE, f"fusion_weight {weight!r}") from error
    if not weight >= 0.0:  # also refuses NaN
        raise ranker_config_error(Path(adapter) / RANKER_CONFIG_FILE, f"fusion_weight {weight!r} is not >= 0")
    return weight


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
    """Evaluate on test users; print the tables and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None, help="hub name or folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--adapter", default=str(DEFAULT_ADAPTER), help="peft adapter folder, or 'none'")
    parser.add_argument("--retriever", default=str(DEFAULT_CHECKPOINT), help="folder with candidates.safetensors")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--max-users", type=int, default=None, help="evaluate a seeded sample of the subset")
    parser.add_argument("--fusion-weight", type=float, default=None, help="default: the adapter's saved weight")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="unquantized CPU weights (auto: bf16 where the CPU has it natively, as the app)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    adapter = None if args.adapter == "none" else args.adapter
    model, tokenizer = load_ranker(RankerLoadConfig(base_model=args.base_model, adapter=adapter,
                                                   cpu_precision=args.precision))
    dataset = load_dataset("ml-latest-small", args.data_dir)
    candidates = load_candidates(args.retriever)[args.split]
    rows = subset_rows(candidates, args.max_users)
    scored = score_subset(model, tokenizer, dataset.catalog, dataset, args.split, candidates,
                          read_prompt_config(adapter), rows, args.batch_size)
    weight = read_fusion_weight(adapter) if args.fusion_weight is None else args.fusion_weight
    result = two_stage_metrics(scored, weight)
    result.update(users=len(rows), total_users=scored.total_users, fusion_weight=weight,
                  llm_only=two_stage_metrics(scored, 0.0)["subset"]["two_stage"])
    print_report(result, f"{args.split}: {len(rows)} users in the valid-retrieval subset of {scored.total_users}; "
                         f"fusion weight {weight}")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
