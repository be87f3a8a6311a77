"""The two-stage pipeline behind the demo and the app benchmark: history -> LRURec candidates -> verbalizer ranking.

`Pipeline.load(PipelineConfig())` loads the committed retriever checkpoint (model, catalog, test
users) and the ranker (base model + the committed adapter when present) once. `recommend` retrieves
the 20 candidates and ranks them with one forward pass of the verbalizer; `race` runs the
generation baseline on the same history and candidates for the timing comparison.
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from recsys import NUM_CANDIDATES
from recsys.batcher import MicroBatcher
from recsys.model_runner import ModelRunner
from recsys.data import load_dataset
from recsys.data.catalog import CATALOG_FILE, Catalog
from recsys.data.sources import DATASETS
from recsys.data.test_users import TestUsers, load_test_users, test_users_of
from recsys.errors import CheckpointError
from recsys.ranker.artefacts import CatalogArtefacts, RankerArtefacts, default_adapter
from recsys.ranker.cowatch import CoWatchCounts
from recsys.ranker.fusion import FusionWeights, fused_scores, order, retriever_opinion
from recsys.ranker.generation import generate_ranking, generation_instruction
from recsys.ranker.folded import fold_served_adapter
from recsys.ranker.model import RankerLoadConfig, describe, load_adapter, load_ranker, pick_device
from recsys.ranker.pool import keep_best
from recsys.ranker.prompt import LETTERS, PromptConfig, RankingPrompt, evidence_note, item_texts, prompt_from_ids
from recsys.ranker.title_likelihood import TitleConfig, title_log_likelihoods, title_opinion, title_texts
from recsys.shared_results import SharedResults
from recsys.ranker.verbalizer import (PrefixCache, VerbalizerReading, build_prefix_cache, letter_token_ids,
                                      read_next_tokens)
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, TRAIN_COMMAND, load_catalog, load_model
from recsys.retriever.model import LRURec

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
DEFAULT_CATALOG_ADAPTER = CHECKPOINTS / "catalog-lm-smollm2-135m-ml-latest-small"
CATALOG_ADAPTER_NAME = "catalog"  # the catalog-pretrained LoRA, loaded beside the verbalizer's ("default")
MAX_INPUT_ITEMS = 5000  # longest history accepted at all (the longest ml-latest-small user has 2,131 test items)
MAX_BATCH = 8  # Recommends that arrived while the model was busy share one padded pass, up to this many
SHARED_RESULTS = 256  # recent Recommend results kept for anyone who asks the same (a preset, a shared link)


class HistoryError(ValueError):
    """A watch history the pipeline cannot use; the message says what to change."""


@dataclass
class PipelineConfig:
    """What the pipeline loads."""

    retriever: str | Path = DEFAULT_CHECKPOINT  # LRURec checkpoint folder (model, catalog, test users)
    ranker: RankerLoadConfig = field(default_factory=lambda: RankerLoadConfig(adapter=default_adapter()))
    prompt: PromptConfig | None = None  # None: the budgets the adapter was trained with (paper's without one)
    fusion: FusionWeights | None = None  # None: the weights saved with the adapter (the LLM alone without one)
    generation_max_new_tokens: int | None = None  # None: the generation baseline's own default
    cpu_precision: str = "auto"  # unquantized ranker on CPU: "fp32", "bf16" or "auto" (bf16 where the CPU has it)
    # the catalog-pretrained adapter that scores title likelihood; "auto": the committed one for the default base
    # model it was trained on; None: the ranker's model scores it
    catalog_adapter: str | Path | None = "auto"
    max_batch: int = MAX_BATCH  # Recommends scored in one pass at most (1: each alone)
    # False: the ranker folder's prior, pool and fusion without its adapter weights (another base model than the one
    # they were trained on ranks zero-shot beside them)
    adapter_weights: bool = True
    shared_results: int = SHARED_RESULTS  # results kept for repeated requests (0: compute every click)
    # the data set the retriever was trained on; its catalog and test users come from its files when the retriever's
    # folder holds none (data that may not be redistributed: Amazon)
    dataset: str = "ml-latest-small"
    data_dir: str | Path | None = None  # where its files are (None: recsys.data.sources' usual places)


@dataclass(frozen=True)
class Candidate:
    """One retrieved candidate, with the ranker's verdict when the ranker ran."""

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


@dataclass(frozen=True)
class FusedRanking:
    """The candidates ranked by the fused score at one set of weights."""

    order: list[int]  # candidate indices, best first (ties: the retriever's order)
    probabilities: list[float]  # (K,) softmax of the fused score, in letter order
    terms: dict[str, list[float]]  # each opinion's own term as a probability: softmax(weight x opinion), per name


@dataclass(frozen=True)
class Recommendation:
    """The result of one `recommend` call: made once, never changed (the fusion sliders re-rank it with `fused_at`)."""

    history: list[int]  # the history the models saw: known ids, duplicates collapsed, oldest first
    candidates: list[Candidate]  # in retriever (= letter) order
    ranking: list[int] | None  # candidate indices best first; None when the ranker failed
    prompt: RankingPrompt | None  # the exact prompt the ranker read; None when it could not be built
    retrieval_ms: float
    ranking_ms: float | None
    notices: list[str] = field(default_factory=list)  # changes made to the input history, for the user
    ranker_error: str | None = None  # why the ranker failed (retrieval results are still valid)
    letter_mass: float | None = None  # share of the next-token probability on the candidates' letters
    top_other_tokens: list[tuple[str, float]] = field(default_factory=list)  # likeliest non-letter next tokens
    base_letter_mass: float | None = None  # the same share for the base model (when compared)
    titles_ms: float | None = None  # time of the title-likelihood scoring (when it ran)
    batch_size: int = 1  # users whose prompts shared the verbalizer's pass (Recommends that arrived together)
    waited_ms: float = 0.0  # time waiting for the model (other users' passes, a race's tokens) before the pass
    shared: bool = False  # computed for an earlier request with the same history and options, not for this one

    @cached_property
    def opinions(self) -> dict[str, torch.Tensor]:
        """The named opinions (K,) of `recsys.ranker.fusion`: retriever, co-watch and (once scored) the LLM's."""
        return candidate_opinions(self.candidates)

    def fused_at(self, weights: FusionWeights) -> FusedRanking:
        """The candidates ranked at `weights` (one fusion of the opinions there are: without the LLM's when the ranker
        failed)."""
        missing = {name: 0.0 for name in ("llm", "titles") if name not in self.opinions}
        return fuse(self.opinions, replace(weights, **missing) if missing else weights)

    def ranked(self) -> list[Candidate]:
        """Candidates in final order (the retriever's order when the ranker failed)."""
        if self.ranking is None:
            return list(self.candidates)
        return [self.candidates[i] for i in self.ranking]

    def index_of(self, item_id: int | None) -> int | None:
        """Index of `item_id` among the candidates, or None."""
        return next((i for i, c in enumerate(self.candidates) if c.item_id == item_id), None)


def candidate_opinions(candidates: list[Candidate]) -> dict[str, torch.Tensor]:
    """The named opinions (K,) of candidates in letter order: retriever and co-watch always; the LLM's and title
    likelihood's (log-probabilities) when every candidate has them."""
    named = {"retriever": retriever_opinion(torch.tensor([c.retriever_score for c in candidates])),
             "cowatch": torch.tensor([c.cowatch_score for c in candidates])}
    for name, field_name in (("llm", "llm_probability"), ("titles", "title_probability")):
        values = [getattr(c, field_name) for c in candidates]
        if all(v is not None for v in values):
            named[name] = torch.log(torch.tensor(values).clamp_min(1e-30))
    return named


def fuse(opinions: dict[str, torch.Tensor], weights: FusionWeights) -> FusedRanking:
    """One fusion of (K,) opinions at `weights` (`recsys.ranker.fusion.fused_scores`): order, probabilities, terms."""
    scores = fused_scores(opinions, weights)
    terms = {name: torch.softmax(getattr(weights, name) * opinion, dim=-1).tolist()
             for name, opinion in opinions.items()}
    return FusedRanking(order(scores), scores.softmax(dim=-1).tolist(), terms)


@dataclass
class RaceResult:
    """Verbalizer ranking against generating the ranked list, on the same history and candidates."""

    recommendation: Recommendation
    generated_text: str = ""
    generated_ranking: list[int] = field(default_factory=list)  # candidate indices parsed from the text
    num_named: int | None = None  # how many of them the text named (the rest follow in the retriever's order)
    num_generated_tokens: int = 0
    generation_ms: float | None = None
    error: str | None = None  # why the baseline did not run or failed
    waited_ms: float = 0.0  # time the generation waited between its tokens for other users' passes (not counted)

    @property
    def ratio(self) -> float | None:
        """Generation time over verbalizer ranking time (None when either is missing)."""
        verbalizer_ms = self.recommendation.ranking_ms
        if self.generation_ms is None or not verbalizer_ms:
            return None
        return self.generation_ms / verbalizer_ms


class Pipeline:
    """Catalog + LRURec + ranker LM, loaded once and shared read-only by every caller."""

    def __init__(self, catalog: Catalog, retriever: LRURec, model, tokenizer,
                 prompt_config: PromptConfig = PromptConfig(),
                 fusion: FusionWeights = FusionWeights(retriever=0.0, cowatch=0.0, llm=1.0),
                 cowatch: CoWatchCounts | None = None,
                 test_users: TestUsers | None = None, adapter: str | Path | None = None,
                 generation_max_new_tokens: int | None = None,
                 pool: int = NUM_CANDIDATES, title_config: TitleConfig = TitleConfig(),
                 ranker: RankerArtefacts | None = None, retriever_folder: Path | None = None,
                 catalog_adapter: Path | None = None, model_facts: dict[str, str] | None = None,
                 max_batch: int = MAX_BATCH, shared_results: int = SHARED_RESULTS, fold_adapter: bool = True):
        if retriever.config.num_items != len(catalog):
            raise CheckpointError(f"the retriever scores {retriever.config.num_items} items but the catalog has "
                                  f"{len(catalog)}: they come from different runs. "
                                  f"Re-create both with: {TRAIN_COMMAND}")
        if prompt_config.evidence and cowatch is None:
            raise CheckpointError("the ranker's prompt shows co-watch evidence but no co-watch counts were given. "
                                  "Create them with: python -m recsys.ranker.prior --write")
        self.catalog = catalog
        self.retriever = retriever.eval()
        self.model = model.eval()
        # on CPU the served adapter computes folded into the base weights (`recsys.ranker.folded`), as evaluation
        # scores it; None: peft's unfolded LoRA (CUDA, quantized weights, no adapter)
        self.folded = fold_served_adapter(self.model) if fold_adapter else None
        self.tokenizer = tokenizer
        self.prompt_config = prompt_config
        self.fusion = fusion
        self.cowatch = cowatch  # the co-watch counts; None: no co-watch opinion (scores 0)
        self.test_users = test_users
        self.adapter = adapter  # the ranker's adapter folder; None when the base model ranks alone
        self.ranker = ranker or RankerArtefacts()  # what the ranker folder said (its training record, for the pages)
        self.retriever_folder = retriever_folder
        self.catalog_adapter_folder = catalog_adapter  # the adapter that scores title likelihood, when loaded
        self.model_facts = dict(model_facts or {})  # device, base model, quantization (`recsys.ranker.model.describe`)
        self.generation_max_new_tokens = generation_max_new_tokens
        self.pool = pool  # LRURec's top films the prior re-ranks to keep NUM_CANDIDATES (`recsys.ranker.pool`)
        self.title_config = title_config
        self.letter_ids = letter_token_ids(tokenizer)
        self._prefixes: dict[tuple[str, bool], PrefixCache] = {}
        # The model, its adapter switches and the tokenizer's settings are shared by every user's thread: whatever
        # runs the model or the tokenizer goes through the runner, one piece at a time (a race one token at a time,
        # so Recommends pass between), on one thread once the app serves it (`recsys.model_runner`).
        self.runner = ModelRunner()
        self.verbalizer = MicroBatcher(self._read_batch, self.runner, max_batch)
        self.shared = SharedResults(shared_results)  # results are frozen: one object serves every asker
        # fast tokenizers refuse use from two threads while one changes its settings: the race's text is decoded
        # for display with a copy of its own, outside the lock
        self.display_tokenizer = copy.deepcopy(tokenizer)

    @classmethod
    def load(cls, config: PipelineConfig | None = None, start_on_device: bool = True) -> Pipeline:
        """Load what `config` names (default: the committed checkpoints), once, and warm it up.

        With `start_on_device` False (a ZeroGPU Space: CUDA exists only inside `spaces.GPU` calls) nothing runs on
        the device at load: no warm-up and no device query; the first model event builds what warm-up would.

        Raises CheckpointError / RuntimeError whose message names the command that fixes the problem.
        """
        config = config or PipelineConfig()
        folder = Path(config.retriever)
        device = pick_device(config.ranker.device)
        retriever = load_model(folder, device=str(device))
        test_users: TestUsers | None
        if (folder / CATALOG_FILE).is_file():
            catalog = load_catalog(folder)
            try:
                test_users = load_test_users(folder)
            except FileNotFoundError:
                test_users = None
            except ValueError as error:
                raise CheckpointError(str(error)) from error
        else:  # FileNotFoundError says where it looked and how to get the files
            dataset = load_dataset(config.dataset, config.data_dir)
            catalog, test_users = dataset.catalog, test_users_of(dataset)
        # Every file of the ranker folder, read before the slow model load. A folder without adapter weights is a
        # zero-shot one (`recsys.ranker.train --zero-shot`): the base model ranks, at the weights validation chose.
        ranker = RankerArtefacts.load(config.ranker.adapter)
        if not config.adapter_weights:
            ranker = replace(ranker, has_weights=False)
        fusion = ranker.fusion if config.fusion is None else config.fusion
        prompt_config = config.prompt or ranker.prompt
        # The model exactly as evaluation scores it: on CPU the adapter folded into base weights in the CPU
        # precision (`recsys.ranker.folded`, in __init__), fp32 letter logits, one prompt at a time.
        ranker_config = replace(config.ranker, adapter=ranker.adapter, cpu_precision=config.cpu_precision)
        model, tokenizer = load_ranker(ranker_config)
        title_config = TitleConfig(max_history=prompt_config.max_history, years=prompt_config.years)
        catalog_folder = config.catalog_adapter
        if catalog_folder == "auto":
            catalog_folder = default_adapter(DEFAULT_CATALOG_ADAPTER) if config.ranker.base_model is None else None
        catalog_adapter = None
        if catalog_folder and ranker.adapter:
            titles = CatalogArtefacts.load(catalog_folder)
            title_config, catalog_adapter = titles.title, titles.folder
            fusion = replace(fusion, titles=titles.weight) if config.fusion is None else fusion
            model = load_adapter(model, titles.folder, name=CATALOG_ADAPTER_NAME)
        pipeline = cls(catalog, retriever, model, tokenizer, prompt_config=prompt_config, fusion=fusion,
                       cowatch=ranker.counts, test_users=test_users, adapter=ranker.adapter,
                       generation_max_new_tokens=config.generation_max_new_tokens, pool=ranker.pool,
                       title_config=title_config, ranker=ranker, retriever_folder=folder,
                       catalog_adapter=catalog_adapter, max_batch=config.max_batch,
                       shared_results=config.shared_results,
                       model_facts=describe(ranker_config, model, query_device=start_on_device),
                       # not on ZeroGPU (not started on the device): its weights move to a lent GPU later, the
                       # folded copies would not
                       fold_adapter=start_on_device and device.type == "cpu")
        if start_on_device:
            pipeline.warm_up()
        return pipeline

    @property
    def window(self) -> int:
        """How many of the latest history items LRURec reads."""
        return self.retriever.config.max_len

    def race_token_budget(self) -> int:
        """The most tokens a race generates: the configured budget, else every candidate's title at its token
        budget, one a line (the baseline's own budget, `answer_length`, is the shown titles' tokens: never more)."""
        return self.generation_max_new_tokens or NUM_CANDIDATES * (self.prompt_config.max_title_tokens + 1)

    def warm_up(self) -> None:
        """One throw-away recommendation, so the first user's click does not pay for lazy initialisation."""
        self.recommend([1])

    def check_history(self, item_ids) -> tuple[list[int], list[str]]:
        """Validate a history (oldest first): returns (usable item ids, notices about what changed).

        Raises HistoryError for an empty or oversized history or unknown ids. Repeated items are
        kept once, at their latest position.
        """
        if not item_ids:
            item = DATASETS[self.catalog.dataset].domain if self.catalog.dataset in DATASETS else "item"
            raise HistoryError(f"The history is empty: add at least one {item}, load a preset or a test user.")
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
            notices.append(f"The history has {len(latest)} movies; LRURec reads only the latest {self.window} "
                           f"(the {len(latest) - self.window} oldest are dropped, but never recommended).")
        return latest, notices

    @torch.inference_mode()
    def retrieve(self, history: list[int]) -> tuple[list[Candidate], float]:
        """The 20 candidates of a checked history, co-watch scored, and the time it took (ms): LRURec's top `pool`
        unseen items, of which the co-watch prior keeps the best 20 in LRURec's order (`recsys.ranker.pool.keep_best`;
        with a pool of 20, or no co-watch counts, LRURec's top-20). Each keeps LRURec's rank."""
        start = time.perf_counter()
        ids, scores = self.retriever.retrieve([history], self.pool)
        pairs = [(i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist()) if math.isfinite(s)]
        if not pairs:
            raise HistoryError("Every catalog item is already in the history: nothing is left to recommend.")
        cowatch = [0.0] * len(pairs)
        if self.cowatch is not None:  # scored once over the pool: it chooses the 20 and is their opinion
            cowatch = self.cowatch.scores([history], torch.tensor([[i for i, _ in pairs]]))[0].tolist()
        kept = keep_best(torch.tensor([[s for _, s in pairs]]), torch.tensor([cowatch]), self.fusion)[0].tolist()
        elapsed_ms = (time.perf_counter() - start) * 1000
        candidates = [Candidate(pairs[rank][0], self.catalog.title(pairs[rank][0]), LETTERS[letter], rank + 1,
                                pairs[rank][1], cowatch[rank],
                                self.cowatch.evidence(history, pairs[rank][0]) if self.cowatch is not None else None)
                      for letter, rank in enumerate(kept)]
        return candidates, elapsed_ms

    @property
    def can_compare_base(self) -> bool:
        """Whether an adapter is loaded, so that the base model's opinion differs from the ranker's."""
        return self.adapter is not None

    @property
    def has_catalog_adapter(self) -> bool:
        """Whether a catalog-pretrained adapter scores title likelihood (else the served model does)."""
        return CATALOG_ADAPTER_NAME in getattr(self.model, "peft_config", {})

    @contextmanager
    def catalog_adapter(self):
        """A context in which the model computes with the catalog-pretrained adapter (when loaded), then the
        served one again (peft's adapter switch: one model in memory)."""
        if not self.has_catalog_adapter:
            yield
            return
        served = self.model.active_adapter
        with self.unfolded():
            self.model.set_adapter(CATALOG_ADAPTER_NAME)
            try:
                yield
            finally:
                self.model.set_adapter(served)

    def title_probabilities(self, history: list[int], candidates: list[Candidate]) -> torch.Tensor:
        """(K,) the LLM asked by title likelihood: softmax over the candidates of each title's log-probability after
        the history (`recsys.ranker.title_likelihood`, the same computation as evaluation's `score_titles`)."""
        config = self.title_config
        history_titles = title_texts(self.tokenizer, self.catalog, history[-config.max_history:], config)
        titles = title_texts(self.tokenizer, self.catalog, [c.item_id for c in candidates], config)
        with self.catalog_adapter():
            sums, lengths = title_log_likelihoods(self.model, self.tokenizer, history_titles, titles)
        return title_opinion(sums, lengths, config.per_token).exp()

    def unfolded(self):
        """A context in which peft's own adapter switches apply (the served adapter unfolded when it was folded)."""
        return self.folded.unfolded() if self.folded else nullcontext()

    @contextmanager
    def without_adapter(self):
        """A context in which the ranker computes as the base model (peft's adapter switch: no second model)."""
        with self.unfolded(), self.model.disable_adapter():
            yield

    def prefix_cache(self, instruction: str | None = None, base: bool = False) -> PrefixCache:
        """Keys/values of the first tokens every `instruction` prompt shares (None: the verbalizer's, of the prompt's
        domain), for the served weights (or, with `base`, the base model's), computed on first use and reused: each
        pass runs only what follows them, exactly as `recsys.ranker.evaluate.score_llm` does."""
        instruction = self.prompt_config.instruction if instruction is None else instruction
        key = (instruction, base)
        if key not in self._prefixes:
            with self.without_adapter() if base else nullcontext():
                self._prefixes[key] = build_prefix_cache(self.model, self.tokenizer, instruction)
        return self._prefixes[key]

    def recommend(self, history_item_ids, compare_base: bool = False, reverse_check: bool = False,
                  titles: bool = False) -> Recommendation:
        """Retrieve candidates for a history (item ids, oldest first), score them with the co-watch prior and the
        verbalizer, and rank them by the fusion of the opinions (`recsys.ranker.fusion`), once.

        With `compare_base` (and an adapter loaded) one more forward pass gives the base model's
        probabilities for the same prompt; with `reverse_check` one more pass lists the candidates in
        reverse, to show whether the LLM's opinion follows the films or the letters; with `titles` (always when the
        fusion weighs it) the LLM is also asked by title likelihood, with no letters. Raises
        HistoryError for unusable input. A ranker failure does not raise: the retrieval results come
        back with `ranker_error` set and no ranking. The same checked history with the same options asked again (or
        while it is computed for someone else) gets that result, `shared` set; failures are never shared.
        """
        history, notices = self.check_history(history_item_ids)
        options = (bool(compare_base) and self.can_compare_base, bool(reverse_check),
                   bool(titles or self.fusion.titles))
        result, shared = self.shared.get((tuple(history), *options), lambda: self._recommend(history, *options),
                                         keep=lambda r: r.ranker_error is None)
        return replace(result, notices=notices, shared=shared) if shared or result.notices != notices else result

    def _recommend(self, history: list[int], compare_base: bool, reverse_check: bool, titles: bool) -> Recommendation:
        """`recommend` of a checked history, computed."""
        candidates, retrieval_ms = self.runner(lambda: self.retrieve(history))
        retrieved = Recommendation(history, candidates, None, None, retrieval_ms, None)
        try:
            return self.rank(retrieved, compare_base, reverse_check, titles)
        except Exception as error:  # noqa: BLE001 (any ranker failure is reported beside the retrieval results)
            return replace(retrieved, ranker_error=f"{type(error).__name__}: {error}")

    def rank(self, retrieved: Recommendation, compare_base: bool, reverse_check: bool,
             titles: bool) -> Recommendation:
        """The LLM's opinions of retrieved candidates and the fused ranking at the served weights (see `recommend`).
        The verbalizer's pass is shared with the Recommends waiting at the same time (`recsys.batcher`)."""
        history, candidates = retrieved.history, retrieved.candidates
        scored: dict[str, list[Any]] = {}  # Candidate field -> its value per candidate, letter order
        titles_ms = None
        if titles or self.fusion.titles:
            start = time.perf_counter()
            scored["title_probability"] = self.runner(lambda: self.title_probabilities(history, candidates).tolist())
            titles_ms = (time.perf_counter() - start) * 1000
        batched = self.verbalizer.submit((history, candidates))
        prompt, reading = batched.result
        scored["llm_probability"] = reading.probabilities.tolist()
        opinions = candidate_opinions([replace(c, **{k: v[i] for k, v in scored.items()})
                                       for i, c in enumerate(candidates)])
        fused = fuse(opinions, self.fusion)
        base_letter_mass = None
        if compare_base and self.can_compare_base:
            base = self.runner(lambda: self.base_reading(prompt))
            scored["base_probability"], base_letter_mass = base.probabilities.tolist(), base.letter_mass
        if reverse_check:
            flipped = self.runner(lambda: self.reversed_reading(history, candidates)).probabilities
            scored["reversed_probability"] = flipped.flip(0).tolist()
        final_rank = {index: rank for rank, index in enumerate(fused.order, start=1)}
        ranked = [replace(c, final_rank=final_rank[i], final_probability=fused.probabilities[i],
                          **{k: v[i] for k, v in scored.items()}) for i, c in enumerate(candidates)]
        return replace(retrieved, candidates=ranked, ranking=fused.order, prompt=prompt, ranking_ms=batched.run_ms,
                       letter_mass=reading.letter_mass, top_other_tokens=reading.top_other_tokens,
                       base_letter_mass=base_letter_mass, titles_ms=titles_ms, batch_size=batched.batch_size,
                       waited_ms=batched.waited_ms)

    def base_reading(self, prompt: RankingPrompt) -> VerbalizerReading:
        """The base model's reading of a prompt: the adapter switched off for this one pass."""
        base_prefix = self.prefix_cache(base=True)
        with self.without_adapter():
            return read_next_tokens(self.model, self.tokenizer, [prompt], self.letter_ids, prefix=base_prefix)[0]

    def reversed_reading(self, history: list[int], candidates: list[Candidate]) -> VerbalizerReading:
        """The served model's reading of the prompt with the candidates listed in reverse (letter A = the last)."""
        reverse = self.prompt_for(history, candidates[::-1])
        return read_next_tokens(self.model, self.tokenizer, [reverse], self.letter_ids, prefix=self.prefix_cache())[0]

    def _read_batch(self, items: Sequence[tuple[list[int], list[Candidate]]]) -> list[tuple[RankingPrompt,
                                                                                              VerbalizerReading]]:
        """The verbalizer over several users' (history, candidates) in one padded pass (on the runner): each one's
        prompt and reading. One user runs unpadded, exactly as evaluation scores."""
        prompts = [self.prompt_for(history, candidates) for history, candidates in items]
        readings = read_next_tokens(self.model, self.tokenizer, prompts, self.letter_ids, prefix=self.prefix_cache())
        return list(zip(prompts, readings))

    def prompt_for(self, history: list[int], candidates: list[Candidate]) -> RankingPrompt:
        """The ranking prompt of a checked history and candidates (in letter order), with the adapter's budgets
        (and, when the adapter was trained with them, each candidate's retriever rank and co-watch count): the one
        prompt from ids (`recsys.ranker.prompt.prompt_from_ids`) that evaluation and training build too."""
        return prompt_from_ids(self.tokenizer, self.catalog, history, [c.item_id for c in candidates],
                               self.prompt_config, notes=self.evidence(candidates))

    def evidence(self, candidates: list[Candidate]) -> list[str] | None:
        """Each candidate's evidence note in letter order when the prompt shows them (else None): its place among
        the 20 in LRURec's order and its co-watch score, as evaluation and training write them."""
        if not self.prompt_config.evidence:
            return None
        place = {rank: n for n, rank in enumerate(sorted(c.retriever_rank for c in candidates), start=1)}
        return [evidence_note(place[c.retriever_rank], c.cowatch_score) for c in candidates]

    def race(self, recommendation: Recommendation, on_token: Callable[[int], None] | None = None) -> RaceResult:
        """Run the generation baseline on the recommendation's history and candidates and time it.

        `on_token` receives each generated token id as it is chosen (see `generate_ranking`: keep it cheap,
        it runs inside the timed loop). Never raises for a failing baseline: the error is returned in
        `RaceResult.error`.
        """
        race = RaceResult(recommendation)
        if recommendation.ranking is None:
            race.error = f"The verbalizer did not run ({recommendation.ranker_error}), so there is nothing to race."
            return race
        try:
            candidates = recommendation.candidates
            history_titles = item_texts(self.catalog, recommendation.history, self.prompt_config)  # the prompt
            candidate_titles = item_texts(self.catalog, [c.item_id for c in candidates], self.prompt_config)  # cuts
            prefix = self.runner(lambda: self.prefix_cache(generation_instruction(self.prompt_config.domain)))
            generated = generate_ranking(self.model, self.tokenizer, history_titles, candidate_titles,
                                         self.prompt_config, self.generation_max_new_tokens, on_token=on_token,
                                         notes=self.evidence(candidates), prefix=prefix, run=self.runner)
        except Exception as error:  # noqa: BLE001 (a failed baseline is shown, never crashes the app)
            race.error = f"{type(error).__name__}: {error}"
            return race
        race.generated_text = generated.text
        race.generated_ranking = list(generated.ranking)
        race.num_named = generated.num_named
        race.num_generated_tokens = generated.num_generated_tokens
        race.generation_ms = generated.seconds * 1000
        race.waited_ms = generated.waited_seconds * 1000
        return race
