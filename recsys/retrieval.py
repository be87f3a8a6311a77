"""Stage one: a watch history -> the 20 candidates the LLM ranks, each with the retriever's and co-watch's opinion.

LRURec retrieves its top `pool` unseen items; the co-watch prior (`recsys.ranker.cowatch`) scores them, and with a
pool above 20 the prior keeps the best 20 (`recsys.ranker.pool.keep_best`), in LRURec's order, lettered A..T. The
same `keep_best` chooses evaluation's and training's candidates, so the LLM is measured on what is served.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from recsys import NUM_CANDIDATES
from recsys.data.catalog import Catalog
from recsys.data.sources import DATASETS
from recsys.errors import CheckpointError
from recsys.ranker.cowatch import CoWatchCounts
from recsys.ranker.fusion import FusionWeights
from recsys.ranker.pool import keep_best
from recsys.ranker.prompt import LETTERS
from recsys.retriever.checkpoint import train_command
from recsys.retriever.model import LRURec

MAX_INPUT_ITEMS = 5000  # longest history accepted at all (the longest ml-latest-small user has 2,131 test items)


class HistoryError(ValueError):
    """A watch history the pipeline cannot use; the message says what to change."""


@dataclass(frozen=True)
class Candidate:
    """One retrieved candidate, with each opinion's verdict once it was asked."""

    item_id: int
    title: str
    letter: str  # its index letter in the prompt ("A" = the retriever's top-1)
    retriever_rank: int  # 1-based
    retriever_score: float
    cowatch_score: float = 0.0  # the co-watch prior's score (mean log(1 + count) over the recent history)
    cowatch_evidence: tuple[int, int] | None = None  # (history item it followed most often, how often), or None
    llm_probability: float | None = None  # the LLM's, read by the verbalizer (softmax over the candidates' letters)
    final_rank: int | None = None  # 1-based rank after the ranker
    final_probability: float | None = None  # softmax of the fused score at the pipeline's fusion weights
    base_probability: float | None = None  # the base model's probability, without the adapter (when asked for)
    reversed_probability: float | None = None  # the LLM's probability with the candidates listed in reverse
    title_probability: float | None = None  # the LLM asked by title likelihood (softmax over the candidates)


class RetrievalStage:
    """Catalog + LRURec + co-watch counts + pool: checks a history and retrieves its candidates. Read-only."""

    def __init__(self, catalog: Catalog, retriever: LRURec, cowatch: CoWatchCounts | None = None,
                 pool: int = NUM_CANDIDATES, pool_weights: FusionWeights = FusionWeights(),
                 folder: Path | None = None):
        """`cowatch` None: no co-watch opinion (scores 0); `pool`: LRURec's top items the prior re-ranks to keep 20;
        `pool_weights`: the retriever's and co-watch's fusion weights, which choose those 20; `folder`: where the
        retriever was read from (for the pages). CheckpointError when the retriever and catalog come from different
        runs."""
        if retriever.config.num_items != len(catalog):
            raise CheckpointError(f"the retriever scores {retriever.config.num_items} items but the catalog of "
                                  f"{catalog.dataset} has {len(catalog)}: the retriever was trained on other data "
                                  f"(is the data folder {catalog.dataset}'s?). Train one on this data with: "
                                  f"{train_command(catalog.dataset)}")
        self.catalog = catalog
        self.retriever = retriever.eval()
        self.cowatch = cowatch
        self.pool = pool
        self.pool_weights = pool_weights
        self.folder = folder

    @property
    def window(self) -> int:
        """How many of the latest history items LRURec reads."""
        return self.retriever.config.max_len

    def check_history(self, item_ids) -> tuple[list[int], list[str]]:
        """Validate a history (oldest first): returns (usable item ids, notices about what changed).

        Raises HistoryError for an empty or oversized history or unknown ids. Repeated items are
        kept once, at their latest position.
        """
        item = DATASETS[self.catalog.dataset].domain if self.catalog.dataset in DATASETS else "item"
        if not item_ids:
            raise HistoryError(f"The history is empty: add at least one {item} or load a test user"
                               + (" or a preset." if item == "movie" else "."))  # presets are MovieLens films
        if len(item_ids) > MAX_INPUT_ITEMS:
            raise HistoryError(f"The history has {len(item_ids)} items, over the limit of {MAX_INPUT_ITEMS}: "
                               "remove some or clear it.")
        try:
            ids = [int(i) for i in item_ids]
        except (TypeError, ValueError) as error:
            raise HistoryError(f"History items must be catalog item ids ({error}).") from error
        unknown = [i for i in ids if i not in self.catalog]
        if unknown:
            raise HistoryError(f"Unknown item ids {unknown[:5]}: the catalog has ids 1..{len(self.catalog)}.")
        notices = []
        latest = list(dict.fromkeys(reversed(ids)))[::-1]  # each item once, at its latest position
        if len(latest) < len(ids):
            repeated = [item for item, count in Counter(ids).items() if count > 1]
            names = ", ".join(self.catalog.titles(repeated[:3])) + (" ..." if len(repeated) > 3 else "")
            notices.append(f"{len(ids) - len(latest)} repeated viewing(s) collapsed to the latest one ({names}).")
        if len(latest) > self.window:
            notices.append(f"The history has {len(latest)} {item}s; LRURec reads only the latest {self.window} "
                           f"(the {len(latest) - self.window} oldest are dropped, but never recommended).")
        return latest, notices

    @torch.inference_mode()
    def retrieve(self, history: list[int]) -> tuple[list[Candidate], float]:
        """The 20 candidates of a checked history, co-watch scored, and the time it took (ms): LRURec's top `pool`
        unseen items, of which the co-watch prior keeps the best 20 in LRURec's order (`recsys.ranker.pool.keep_best`;
        with a pool of 20, or no co-watch counts, LRURec's top-20). Each keeps LRURec's rank. HistoryError when
        nothing is left to recommend."""
        start = time.perf_counter()
        ids, scores = self.retriever.retrieve([history], self.pool)
        pairs = [(i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist()) if math.isfinite(s)]
        if not pairs:
            raise HistoryError("Every catalog item is already in the history: nothing is left to recommend.")
        cowatch = [0.0] * len(pairs)
        if self.cowatch is not None:  # scored once over the pool: it chooses the 20 and is their opinion
            cowatch = self.cowatch.scores([history], torch.tensor([[i for i, _ in pairs]]))[0].tolist()
        scores = torch.tensor([[s for _, s in pairs]])
        kept = keep_best(scores, torch.tensor([cowatch]), self.pool_weights)[0].tolist()
        elapsed_ms = (time.perf_counter() - start) * 1000
        candidates = [Candidate(pairs[rank][0], self.catalog.title(pairs[rank][0]), LETTERS[letter], rank + 1,
                                pairs[rank][1], cowatch[rank],
                                self.cowatch.evidence(history, pairs[rank][0]) if self.cowatch is not None else None)
                      for letter, rank in enumerate(kept)]
        return candidates, elapsed_ms
