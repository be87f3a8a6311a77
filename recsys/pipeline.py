"""The two-stage pipeline behind the demo and the app benchmark: one Recommend, start to end, in three stages.

    history --(1) retrieval--> 20 candidates --(2) the LLM's opinions--> --(3) the fusion rule--> ranking

1. `recsys.retrieval.RetrievalStage`: LRURec's candidates, each with the retriever's and the co-watch prior's opinion.
2. `recsys.opinions.LLMOpinions`: the verbalizer's probabilities over the candidates' letters (and, when asked, the
   base model's, the reversed list's and title likelihood's).
3. `fuse`: the weighted sum of the named opinions (`recsys.ranker.fusion`), at the served weights.

`Pipeline.recommend` runs them once per history; around them, the serving: a model runner (one thread uses the
model), a batcher (Recommends that arrive together share one pass) and shared results (the same request is computed
once). `Pipeline.load(PipelineConfig())` loads the committed checkpoints; `race` runs the generation baseline on the
same history and candidates for the timing comparison. Evaluation (`recsys.ranker.evaluate`) and training build the
same prompt (`recsys.ranker.prompt.prompt_from_ids`) and call the same `keep_best` and fusion rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from recsys.batcher import MicroBatcher
from recsys.data import load_dataset
from recsys.data.catalog import CATALOG_FILE, Catalog
from recsys.data.test_users import TestUsers, load_test_users, test_users_of
from recsys.errors import CheckpointError
from recsys.model_runner import ModelRunner
from recsys.opinions import CATALOG_ADAPTER_NAME, LLMOpinions
from recsys.ranker.artefacts import CatalogArtefacts, RankerArtefacts, default_adapter
from recsys.ranker.fusion import LLM_ALONE, PROBABILITY_FLOOR, FusionWeights, fused_scores, order, retriever_opinion
from recsys.ranker.model import RankerLoadConfig, describe, load_adapter, load_ranker, pick_device
from recsys.ranker.prompt import PromptConfig, RankingPrompt
from recsys.ranker.title_likelihood import served_title_config
from recsys.folders import CHECKPOINTS
from recsys.retrieval import Candidate, RetrievalStage
from recsys.retriever.checkpoint import DEFAULT_CHECKPOINT, load_catalog, load_model
from recsys.shared_results import SharedResults

DEFAULT_CATALOG_ADAPTER = CHECKPOINTS / "catalog-lm-smollm2-135m-ml-latest-small"
MAX_BATCH = 8  # Recommends that arrived while the model was busy share one padded pass, up to this many
SHARED_RESULTS = 256  # recent Recommend results kept for anyone who asks the same (a preset, a shared link)


@dataclass(frozen=True)
class ServingConfig:
    """How the pipeline serves many users at once."""

    max_batch: int = MAX_BATCH  # Recommends scored in one pass at most (1: each alone; `recsys.batcher`)
    shared_results: int = SHARED_RESULTS  # results kept for repeated requests (0: compute every click)


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
    # model it was trained on, unless the ranker folder's title weight is the base model's (its title_config.json);
    # None: the ranker's model scores it
    catalog_adapter: str | Path | None = "auto"
    # False: the ranker folder's prior, pool and fusion without its adapter weights (another base model than the one
    # they were trained on ranks zero-shot beside them)
    adapter_weights: bool = True
    serving: ServingConfig = field(default_factory=lambda: ServingConfig())
    # the data set the retriever was trained on; its catalog and test users come from its files when the retriever's
    # folder holds none (data that may not be redistributed: Amazon)
    dataset: str = "ml-latest-small"
    data_dir: str | Path | None = None  # where its files are (None: recsys.data.sources' usual places)


@dataclass(frozen=True)
class FusedRanking:
    """The candidates ranked by the fused score at one set of weights."""

    order: list[int]  # candidate indices, best first (ties: the retriever's order)
    probabilities: list[float]  # (K,) softmax of the fused score, in letter order


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

    @cached_property
    def alone(self) -> dict[str, list[float]]:
        """Each opinion alone as a probability over the candidates, letter order: softmax of the opinion (the LLM's
        own probability, LRURec's renormalised over the 20, softmax of the co-watch scores). The fusion weights
        change the final score, never these."""
        return {name: torch.softmax(opinion, dim=-1).tolist() for name, opinion in self.opinions.items()}

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
            named[name] = torch.log(torch.tensor(values).clamp_min(PROBABILITY_FLOOR))
    return named


def fuse(opinions: dict[str, torch.Tensor], weights: FusionWeights) -> FusedRanking:
    """One fusion of (K,) opinions at `weights` (`recsys.ranker.fusion.fused_scores`): the order and probabilities."""
    scores = fused_scores(opinions, weights)
    return FusedRanking(order(scores), scores.softmax(dim=-1).tolist())


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
    """The two stages and the fusion rule, loaded once and shared read-only by every caller."""

    def __init__(self, retrieval: RetrievalStage, llm: LLMOpinions, fusion: FusionWeights = LLM_ALONE,
                 serving: ServingConfig = ServingConfig(), ranker: RankerArtefacts | None = None,
                 test_users: TestUsers | None = None):
        """`fusion`: the served weights (the retrieval stage's 20 are chosen by its `pool_weights`, the same weights
        when loaded); `ranker`: what the ranker folder said (its training record, for the pages); `test_users`: the
        data set's held-out users the demo offers. CheckpointError when the prompt shows co-watch evidence the
        retrieval stage has no counts for."""
        if llm.prompt_config.evidence and retrieval.cowatch is None:
            raise CheckpointError("the ranker's prompt shows co-watch evidence but no co-watch counts were given. "
                                  "Create them with: python -m recsys.ranker.prior --write")
        self.retrieval = retrieval
        self.llm = llm
        self.fusion = fusion
        self.ranker = ranker or RankerArtefacts()
        self.test_users = test_users
        # The model, its adapter switches and the tokenizer's settings are shared by every user's thread: whatever
        # runs the model or the tokenizer goes through the runner, one piece at a time (a race one token at a time,
        # so Recommends pass between), on one thread once the app serves it (`recsys.model_runner`).
        self.runner = ModelRunner()
        self.verbalizer = MicroBatcher(llm.read, self.runner, serving.max_batch)
        self.shared = SharedResults(serving.shared_results)  # results are frozen: one object serves every asker

    @property
    def catalog(self) -> Catalog:
        """The data set's catalog, which both stages read."""
        return self.retrieval.catalog

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
        base_titles = ranker.base_titles  # its title weight (if any) was chosen with the base model's title likelihood
        if not config.adapter_weights:
            ranker = replace(ranker, has_weights=False)
        fusion = ranker.fusion if config.fusion is None else config.fusion
        prompt_config = config.prompt or ranker.prompt
        # The model exactly as evaluation scores it: on CPU the adapter folded into base weights in the CPU
        # precision (`recsys.ranker.folded`), fp32 letter logits, one prompt at a time.
        ranker_config = replace(config.ranker, adapter=ranker.adapter, cpu_precision=config.cpu_precision)
        model, tokenizer = load_ranker(ranker_config)
        title_config = ranker.title if base_titles and ranker.title else served_title_config(prompt_config)
        catalog_folder = config.catalog_adapter
        if catalog_folder == "auto":
            catalog_folder = default_adapter(DEFAULT_CATALOG_ADAPTER) if config.ranker.base_model is None else None
        catalog_adapter = None
        if config.catalog_adapter not in (None, "auto") and ranker.adapter and base_titles:
            raise ValueError(f"{ranker.folder}'s title weight was chosen with the base model's title likelihood "
                             "(its title_config.json), not a catalog-pretrained adapter's: leave the catalog adapter "
                             "out, or choose the weight with it (bench/llm_rankers.py --write-choice)")
        if catalog_folder and ranker.adapter and not base_titles:
            titles = CatalogArtefacts.load(catalog_folder)
            title_config, catalog_adapter = titles.title, titles.folder
            model = load_adapter(model, titles.folder, name=CATALOG_ADAPTER_NAME)
        elif config.fusion is None and not base_titles:  # a trained folder's title weight was chosen with the
            # catalog adapter, not without it; a zero-shot folder's, or one with title_config.json, with the base
            # model (`recsys.ranker.title_weight`)
            fusion = replace(fusion, titles=0.0)
        retrieval = RetrievalStage(catalog, retriever, cowatch=ranker.counts, pool=ranker.pool, pool_weights=fusion,
                                   folder=folder)
        llm = LLMOpinions(model, tokenizer, catalog, prompt_config, title_config, adapter=ranker.adapter,
                          catalog_adapter=catalog_adapter, base_titles=base_titles and ranker.adapter is not None,
                          max_new_tokens=config.generation_max_new_tokens,
                          model_facts=describe(ranker_config, model, query_device=start_on_device),
                          # not on ZeroGPU (not started on the device): its weights move to a lent GPU later, the
                          # folded copies would not
                          fold_adapter=start_on_device and device.type == "cpu")
        pipeline = cls(retrieval, llm, fusion, config.serving, ranker, test_users)
        if start_on_device:
            pipeline.warm_up()
        return pipeline

    def warm_up(self) -> None:
        """One throw-away recommendation, so the first user's click does not pay for lazy initialisation."""
        self.recommend([1])

    def recommend(self, history_item_ids, compare_base: bool = False, reverse_check: bool = False,
                  titles: bool = False) -> Recommendation:
        """Retrieve candidates for a history (item ids, oldest first), ask the LLM's opinions of them, and rank them
        by the fusion of the opinions (`recsys.ranker.fusion`), once.

        With `compare_base` (and an adapter loaded) one more forward pass gives the base model's
        probabilities for the same prompt; with `reverse_check` one more pass lists the candidates in
        reverse, to show whether the LLM's opinion follows the films or the letters; with `titles` (always when the
        fusion weighs it) the LLM is also asked by title likelihood, with no letters. Raises
        HistoryError for unusable input. A ranker failure does not raise: the retrieval results come
        back with `ranker_error` set and no ranking. The same checked history with the same options asked again (or
        while it is computed for someone else) gets that result, `shared` set; failures are never shared.
        """
        history, notices = self.retrieval.check_history(history_item_ids)
        options = (bool(compare_base) and self.llm.can_compare_base, bool(reverse_check),
                   bool(titles or self.fusion.titles))
        result, shared = self.shared.get((tuple(history), *options), lambda: self._recommend(history, *options),
                                         keep=lambda r: r.ranker_error is None)
        return replace(result, notices=notices, shared=shared) if shared or result.notices != notices else result

    def _recommend(self, history: list[int], compare_base: bool, reverse_check: bool, titles: bool) -> Recommendation:
        """`recommend` of a checked history, computed: stage one, then stage two and the fusion."""
        candidates, retrieval_ms = self.runner(lambda: self.retrieval.retrieve(history))
        retrieved = Recommendation(history, candidates, None, None, retrieval_ms, None)
        try:
            return self.rank(retrieved, compare_base, reverse_check, titles)
        except Exception as error:  # noqa: BLE001 (any ranker failure is reported beside the retrieval results)
            return replace(retrieved, ranker_error=f"{type(error).__name__}: {error}")

    def rank(self, retrieved: Recommendation, compare_base: bool, reverse_check: bool,
             titles: bool) -> Recommendation:
        """The LLM's opinions of retrieved candidates and the fused ranking at the served weights (see `recommend`).
        The verbalizer's pass is shared with the Recommends waiting at the same time (`recsys.batcher`)."""
        history, candidates, llm = retrieved.history, retrieved.candidates, self.llm
        scored: dict[str, list[Any]] = {}  # Candidate field -> its value per candidate, letter order
        titles_ms = None
        if titles or self.fusion.titles:
            start = time.perf_counter()
            scored["title_probability"] = self.runner(lambda: llm.title_probabilities(history, candidates).tolist())
            titles_ms = (time.perf_counter() - start) * 1000
        batched = self.verbalizer.submit((history, candidates))
        prompt, reading = batched.result
        scored["llm_probability"] = reading.probabilities.tolist()
        opinions = candidate_opinions([replace(c, **{k: v[i] for k, v in scored.items()})
                                       for i, c in enumerate(candidates)])
        fused = fuse(opinions, self.fusion)
        base_letter_mass = None
        if compare_base and llm.can_compare_base:
            base = self.runner(lambda: llm.base_reading(prompt))
            scored["base_probability"], base_letter_mass = base.probabilities.tolist(), base.letter_mass
        if reverse_check:
            flipped = self.runner(lambda: llm.reversed_reading(history, candidates)).probabilities
            scored["reversed_probability"] = flipped.flip(0).tolist()
        final_rank = {index: rank for rank, index in enumerate(fused.order, start=1)}
        ranked = [replace(c, final_rank=final_rank[i], final_probability=fused.probabilities[i],
                          **{k: v[i] for k, v in scored.items()}) for i, c in enumerate(candidates)]
        return replace(retrieved, candidates=ranked, ranking=fused.order, prompt=prompt, ranking_ms=batched.run_ms,
                       letter_mass=reading.letter_mass, top_other_tokens=reading.top_other_tokens,
                       base_letter_mass=base_letter_mass, titles_ms=titles_ms, batch_size=batched.batch_size,
                       waited_ms=batched.waited_ms)

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
            generated = self.llm.generate(recommendation.history, recommendation.candidates, on_token, self.runner)
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
