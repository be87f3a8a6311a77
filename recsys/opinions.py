"""Stage two: the LLM's opinions of a history's 20 candidates, each read the way evaluation reads it.

- The verbalizer (`read`): one prompt from ids (`recsys.ranker.prompt.prompt_from_ids`, the path evaluation and
  training take too), one forward pass, the next-token probabilities at the letters A..T
  (`recsys.ranker.verbalizer.read_next_tokens`), continuing from the instruction's cached prefix.
- The base model's reading of the same prompt (`base_reading`: the adapter switched off) and the reading with the
  candidates listed in reverse (`reversed_reading`), to show what the adapter and the letters contribute.
- Title likelihood (`title_probabilities`): each candidate title's log-probability after the history, with the
  catalog-pretrained adapter when one is loaded, or the base model's (the served adapter off) where the folder's
  title weight was chosen so (`RankerArtefacts.base_titles`).
- The generation baseline (`generate`): the model writes the ranked titles, for the race.

One model in memory: the adapters are peft's switches on it. Not thread-safe: the pipeline runs every method here on
its model runner (`recsys.model_runner`), one at a time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from recsys import NUM_CANDIDATES
from recsys.data.catalog import Catalog
from recsys.ranker.folded import fold_served_adapter
from recsys.ranker.generation import GenerationResult, generate_ranking, generation_instruction
from recsys.ranker.prompt import PromptConfig, RankingPrompt, evidence_notes, prompt_from_ids
from recsys.ranker.title_likelihood import TitleConfig, title_log_likelihoods, title_opinion, title_texts
from recsys.ranker.verbalizer import PrefixCache, VerbalizerReading, build_prefix_cache, letter_token_ids, \
    read_next_tokens
from recsys.retrieval import Candidate

CATALOG_ADAPTER_NAME = "catalog"  # the catalog-pretrained LoRA, loaded beside the verbalizer's ("default")


class LLMOpinions:
    """The ranker LM (with its adapters), its tokenizer and its prompt: every opinion the LLM gives of candidates."""

    def __init__(self, model, tokenizer, catalog: Catalog, prompt_config: PromptConfig = PromptConfig(),
                 title_config: TitleConfig = TitleConfig(), adapter: str | Path | None = None,
                 catalog_adapter: Path | None = None, base_titles: bool = False, max_new_tokens: int | None = None,
                 model_facts: dict[str, str] | None = None, fold_adapter: bool = True):
        """`adapter`: the ranker's adapter folder, None when the base model ranks alone; `catalog_adapter`: the
        folder of the adapter loaded as CATALOG_ADAPTER_NAME to score title likelihood (None: the served model
        scores it, or with `base_titles` the base model, the served adapter off, as its weight was chosen: set
        only with a served adapter);
        `max_new_tokens`: the generation baseline's budget (None: its own rule, `answer_length`);
        `model_facts`: device, base model, quantization (`recsys.ranker.model.describe`), for the pages. With
        `fold_adapter` (CPU) the served adapter computes folded into the base weights (`recsys.ranker.folded`), as
        evaluation scores it; without, peft's unfolded LoRA (CUDA, quantized weights, ZeroGPU, no adapter)."""
        self.model = model.eval()
        self.folded = fold_served_adapter(self.model) if fold_adapter else None
        self.tokenizer = tokenizer
        self.catalog = catalog
        self.prompt_config = prompt_config
        self.title_config = title_config
        self.adapter = adapter
        self.catalog_adapter_folder = catalog_adapter
        self.base_titles = base_titles
        self.model_facts = dict(model_facts or {})
        self.max_new_tokens = max_new_tokens
        self.letter_ids = letter_token_ids(tokenizer)
        self._prefixes: dict[tuple[str, bool], PrefixCache] = {}
        # fast tokenizers refuse use from two threads while one changes its settings: the race's text is decoded
        # for display with a copy of its own, off the runner
        self.display_tokenizer = copy.deepcopy(tokenizer)

    @property
    def can_compare_base(self) -> bool:
        """Whether an adapter is loaded, so that the base model's opinion differs from the ranker's."""
        return self.adapter is not None

    @property
    def has_catalog_adapter(self) -> bool:
        """Whether a catalog-pretrained adapter scores title likelihood (else the served model does)."""
        return CATALOG_ADAPTER_NAME in getattr(self.model, "peft_config", {})

    def unfolded(self):
        """A context in which peft's own adapter switches apply (the served adapter unfolded when it was folded)."""
        return self.folded.unfolded() if self.folded else nullcontext()

    @contextmanager
    def without_adapter(self):
        """A context in which the model computes as the base model (peft's adapter switch: no second model)."""
        with self.unfolded(), self.model.disable_adapter():
            yield

    @contextmanager
    def catalog_adapter(self):
        """A context in which the model computes with the catalog-pretrained adapter (when loaded), then the
        served one again."""
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

    def evidence(self, candidates: list[Candidate]) -> list[str] | None:
        """Each candidate's evidence note in letter order when the prompt shows them (else None): its place among
        the 20 in LRURec's order and its co-watch score, as evaluation and training write them."""
        if not self.prompt_config.evidence:
            return None
        ranked = sorted(candidates, key=lambda c: c.retriever_rank)  # the 20 in LRURec's order
        place = {c.item_id: n for n, c in enumerate(ranked)}
        return evidence_notes([c.cowatch_score for c in ranked], [place[c.item_id] for c in candidates])

    def prompt_for(self, history: list[int], candidates: list[Candidate], instruction: str | None = None
                   ) -> RankingPrompt:
        """The prompt of a checked history and candidates (in letter order), with the adapter's budgets and evidence
        notes: `prompt_from_ids`, the one path evaluation and training take too. `instruction` None: the
        verbalizer's."""
        return prompt_from_ids(self.tokenizer, self.catalog, history, [c.item_id for c in candidates],
                               self.prompt_config, notes=self.evidence(candidates), instruction=instruction)

    def read(self, items: Sequence[tuple[list[int], list[Candidate]]]) -> list[tuple[RankingPrompt,
                                                                                         VerbalizerReading]]:
        """The verbalizer over several users' (history, candidates) in one padded pass: each one's prompt and
        reading. One user runs unpadded, exactly as evaluation scores."""
        prompts = [self.prompt_for(history, candidates) for history, candidates in items]
        readings = read_next_tokens(self.model, self.tokenizer, prompts, self.letter_ids, prefix=self.prefix_cache())
        return list(zip(prompts, readings))

    def base_reading(self, prompt: RankingPrompt) -> VerbalizerReading:
        """The base model's reading of a prompt: the adapter switched off for this one pass."""
        base_prefix = self.prefix_cache(base=True)
        with self.without_adapter():
            return read_next_tokens(self.model, self.tokenizer, [prompt], self.letter_ids, prefix=base_prefix)[0]

    def reversed_reading(self, history: list[int], candidates: list[Candidate]) -> VerbalizerReading:
        """The served model's reading of the prompt with the candidates listed in reverse (letter A = the last)."""
        reverse = self.prompt_for(history, candidates[::-1])
        return read_next_tokens(self.model, self.tokenizer, [reverse], self.letter_ids, prefix=self.prefix_cache())[0]

    def title_probabilities(self, history: list[int], candidates: list[Candidate]) -> torch.Tensor:
        """(K,) the LLM asked by title likelihood: softmax over the candidates of each title's log-probability after
        the history (`recsys.ranker.title_likelihood`, the same computation as evaluation's `score_titles`)."""
        config = self.title_config
        history_titles = title_texts(self.tokenizer, self.catalog, history[-config.max_history:], config)
        titles = title_texts(self.tokenizer, self.catalog, [c.item_id for c in candidates], config)
        with self.without_adapter() if self.base_titles else self.catalog_adapter():
            sums, lengths = title_log_likelihoods(self.model, self.tokenizer, history_titles, titles, config.domain)
        return title_opinion(sums, lengths, config.per_token).exp()

    def race_token_budget(self) -> int:
        """The most tokens a race generates: the configured budget, else every candidate's title at its token
        budget, one a line (the baseline's own budget, `answer_length`, is the shown titles' tokens: never more)."""
        return self.max_new_tokens or NUM_CANDIDATES * (self.prompt_config.max_title_tokens + 1)

    def generate(self, history: list[int], candidates: list[Candidate], on_token: Callable[[int], None] | None,
                 run: Callable[[Callable[[], Any]], Any]) -> GenerationResult:
        """The generation baseline on the same history and candidates: the same prompt but for the instruction
        (built here, on `run`, untimed), continuing from that instruction's cached prefix, decoded one token at a
        time on `run` (`recsys.ranker.generation.generate_ranking`)."""
        instruction = generation_instruction(self.prompt_config.domain)
        prompt, prefix = run(lambda: (self.prompt_for(history, candidates, instruction),
                                      self.prefix_cache(instruction)))
        return generate_ranking(self.model, self.tokenizer, prompt, self.max_new_tokens, on_token=on_token,
                                prefix=prefix, run=run)
