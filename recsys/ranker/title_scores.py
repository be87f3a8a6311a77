"""Saved title-likelihood scores: a split's (sums, token counts) of the served candidates' titles, kept under
runs/title-scores/ while they are computed, so that an interrupted run goes on where it stopped and a later reader
(`bench/prior_quality.py`) does not score an hour of product titles again.

A file holds, per scored row, its user, its candidate ids (N, K), and their titles' summed log-probabilities and
token counts (N, K); its metadata says what scored them (`title_scores_key`: the title settings, the base model,
the weights' dtype). Rows are reused one by one, matched by user and candidate ids, and only under the same key; the
score form (`TitleConfig.per_token`) is applied later by `title_opinion`, so it is not part of the key.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, replace
from pathlib import Path
from collections.abc import Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from recsys.data.catalog import Catalog
from recsys.distributed import is_main_process
from recsys.ranker.artefacts import RankerArtefacts
from recsys.ranker.base_model import resolve_base_model
from recsys.ranker.evaluate import score_titles
from recsys.ranker.model import RankerLoadConfig, cpu_dtype, load_base_model, load_tokenizer
from recsys.ranker.rows import RankingRows
from recsys.ranker.title_likelihood import TitleConfig, served_title_config, title_opinion

RUNS = Path(__file__).resolve().parents[2] / "runs"
SAVE_EVERY = 100  # rows scored between saves (~2 min of product titles on 2 cores)

Scorer = Callable[[RankingRows], tuple[torch.Tensor, torch.Tensor]]


def title_scores_path(folder: Path, split: str) -> Path:
    """Where the title scores of ranker folder `folder`'s served rows of `split` ("val", "test") are saved."""
    return RUNS / "title-scores" / f"{Path(folder).name}-{split}.safetensors"


def title_scores_key(config: TitleConfig, model_name: str, dtype: torch.dtype,
                     quantization: str = "none") -> dict[str, str]:
    """A file's metadata: the title settings, base model (name or path), weight dtype and quantization
    (`recsys.ranker.model.loaded_quantization`: a GPU's 4-bit scores are not the CPU's) that scored it."""
    return {"title": json.dumps(asdict(config), sort_keys=True), "model": model_name, "dtype": str(dtype),
            "quantization": quantization}


def _compared(key: dict[str, str]) -> dict:
    """A key as two are compared: without the score form, which the saved sums and counts serve both ways."""
    title = {k: v for k, v in json.loads(key.get("title", "{}")).items() if k != "per_token"}
    return {**key, "title": title}


def _saved(path: Path, key: dict[str, str]) -> dict[str, torch.Tensor] | None:
    """The file's tensors when it was scored under `key`; None (saying why) when it is missing, unreadable or
    scored otherwise."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            saved_key = f.metadata() or {}
        tensors = load_file(str(path))
        if _compared(saved_key) != _compared(key):
            print(f"{path}: scored with other settings ({saved_key}); scoring again", flush=True)
            return None
    except (SafetensorError, OSError, ValueError) as error:  # a damaged file is scored again, not trusted
        print(f"{path}: unreadable ({error}); scoring again", flush=True)
        return None
    return tensors


def resumable_title_scores(score: Scorer, rows: RankingRows, path: Path, key: dict[str, str],
                           save_every: int = SAVE_EVERY) -> tuple[torch.Tensor, torch.Tensor]:
    """`score(rows)` (title sums (N, K), token counts (N, K), float32), computed `save_every` rows at a time and
    saved to `path` after each: the rows a file scored under the same `key` holds (same user, same candidate ids)
    are taken from it, not scored again.

    ValueError when `rows` carry no users (held-out examples: nothing to match them by)."""
    if rows.users is None:
        raise ValueError("title scores are saved for split rows, which carry their users")
    users, candidates = rows.users.long(), rows.candidate_ids.long()
    sums, counts = torch.full(candidates.shape, math.nan), torch.full(candidates.shape, math.nan)
    done = torch.zeros(len(rows), dtype=torch.bool)
    saved = _saved(path, key)
    if saved is not None:
        where = {user: j for j, user in enumerate(saved["users"].tolist())}
        for i, user in enumerate(users.tolist()):
            j = where.get(user)
            if j is not None and torch.equal(saved["candidate_ids"][j], candidates[i]):
                sums[i], counts[i], done[i] = saved["sums"][j], saved["counts"][j], True
        print(f"{path}: {int(done.sum())} of {len(rows)} rows already scored", flush=True)
    todo = (~done).nonzero().flatten().tolist()
    for start in range(0, len(todo), save_every):
        part = todo[start:start + save_every]
        part_sums, part_counts = score(rows.select(part))
        sums[part], counts[part], done[part] = part_sums.float(), part_counts.float(), True
        if is_main_process():  # under `accelerate launch` every process holds every row; one writes
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            save_file({"users": users[done].contiguous(), "candidate_ids": candidates[done].contiguous(),
                       "sums": sums[done].contiguous(), "counts": counts[done].contiguous()}, str(partial),
                      metadata=key)
            partial.replace(path)  # a run killed mid-write leaves the previous file whole
    return sums, counts


def with_title_scores(rows: RankingRows, ranker: RankerArtefacts, catalog: Catalog, split: str,
                      base_model: str | None = None, precision: str = "auto") -> RankingRows:
    """`rows` (the served rows of `split` of a folder whose title opinion is the base model's: zero-shot, or trained
    with title_config.json) with the title opinion in the form the folder serves, the base model on CPU in
    `precision`: from the saved scores, the model loaded only for rows they lack.

    ValueError for a trained folder whose title opinion needs its catalog adapter, or no folder."""
    if ranker.folder is None or not ranker.base_titles:
        raise ValueError(f"{ranker.folder}'s title opinion is not the base model's: a trained folder without "
                         "title_config.json scores titles with its catalog-pretrained adapter (bench/llm_rankers.py)")
    titles = ranker.title or served_title_config(ranker.prompt)

    @functools.cache
    def loaded():
        model = load_base_model(RankerLoadConfig(base_model=base_model, cpu_precision=precision, device="cpu"))
        return model.eval(), load_tokenizer(base_model)

    def score(part: RankingRows) -> tuple[torch.Tensor, torch.Tensor]:
        model, tokenizer = loaded()
        return score_titles(model, tokenizer, catalog, part, titles)

    key = title_scores_key(titles, str(resolve_base_model(base_model)), cpu_dtype(precision))
    sums, counts = resumable_title_scores(score, rows, title_scores_path(ranker.folder, split), key)
    return replace(rows, titles=title_opinion(sums, counts, per_token=titles.per_token))
