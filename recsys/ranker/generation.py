"""The generation-based ranking baseline: the model writes the candidate titles as a ranked list.

Same model, history and candidates as the verbalizer, and the same prompt builder; only the
instruction differs. Decoding is greedy with the KV cache and stops at EOS or once the output is
as long as all candidate titles together, one per line (the paper's rule, Fig. 3). The text is
parsed back into a ranking (titles compared as the search compares them: case, accents, articles and
punctuation aside): exact title matches first, then fuzzy ones, then titles named inside a longer line;
duplicates and invented titles are ignored and candidates never named follow in retriever order.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from recsys.data.titles import search_key, split_year
from recsys.kv_cache import cache_kwargs, last_position, output_cache
from recsys.ranker.prompt import HISTORIES, PromptConfig, RankingPrompt, build_prompt
from recsys.machine import synchronize

def generation_instruction(domain: str = "movie") -> str:
    """The generation baseline's instruction for items of `domain` (`recsys.ranker.prompt.HISTORIES`)."""
    if domain not in HISTORIES:
        raise ValueError(f"unknown prompt domain {domain!r}: one of {sorted(HISTORIES)}")
    chosen = "watched" if domain == "movie" else "bought"
    return (f"Given the user's {HISTORIES[domain]} in chronological order, rank all {domain}s in the candidate pool "
            f"from the most to the least likely to be {chosen} next. Answer with their titles only, best first, "
            "one per line.")


GENERATION_INSTRUCTION = generation_instruction("movie")


def generation_prompt(tokenizer, history_titles: list[str], candidate_titles: list[str],
                      config: PromptConfig = PromptConfig(), notes: list[str] | None = None) -> RankingPrompt:
    """The prompt of titles with the generation baseline's instruction for `config.domain` (`build_prompt`; the app
    builds its prompt from ids: `recsys.opinions.LLMOpinions.generate`)."""
    return build_prompt(tokenizer, history_titles, candidate_titles, config,
                        instruction=generation_instruction(config.domain), notes=notes)

FUZZY_CUTOFF = 0.75  # difflib similarity a line needs to count as a (misspelt or cut) candidate title
MIN_CONTAINED = 4  # characters a title's key needs to be found inside a longer line (shorter ones only as the line)
_LIST_MARKER = re.compile(r"^\s*(?:\(\s*[A-Za-z0-9]{1,2}\s*\)|[A-Za-z0-9]{1,2}[.):]|[-*•])\s+")


@dataclass
class GenerationResult:
    """One generated ranking and what it cost."""

    ranking: list[int]  # candidate indices (0-based, into candidate_titles), best first; a permutation of range(n)
    text: str  # the raw generated text
    num_generated_tokens: int  # tokens produced before EOS or the length budget (EOS not counted)
    seconds: float  # total wall time (prompt tokenization + prefill + decode), time waiting for the lock excluded
    prefill_seconds: float  # the prompt's forward pass, which also yields the first token
    decode_seconds: float  # every later token, one forward pass each (lock waits excluded)
    num_named: int | None = None  # candidates the text itself named; the rest of `ranking` is the retriever's order
    waited_seconds: float = 0.0  # time spent waiting for the model between tokens (other users' passes)


def _line_variants(line: str) -> list[str]:
    """The line's search keys (`search_key`): as written and without a leading list marker ("1.", "(A)", "- ")."""
    variants = [search_key(line), search_key(_LIST_MARKER.sub("", line, count=1))]
    return [v for v in dict.fromkeys(variants) if v]


@dataclass(frozen=True)
class _CandidateKeys:
    """The search keys a candidate is recognised by: its title with and without the year."""

    titles: tuple[str, ...]  # keys of the title as shown and without its year
    bare: str  # the key without the year: what a line that names it among other words contains


def _candidate_keys(title: str) -> _CandidateKeys:
    bare = search_key(split_year(title)[0])
    return _CandidateKeys(tuple(k for k in dict.fromkeys((search_key(title), bare)) if k), bare)


def _contained(line_key: str, candidates: list[_CandidateKeys]) -> list[int]:
    """The candidates whose title (without the year) the line names among other words, in the line's order: whole
    words only, the longest title at a place ("Toy Story 2" over "Toy Story"), titles of at least MIN_CONTAINED
    characters (a one-word "Up" is matched only as a whole line)."""
    padded = f" {line_key} "
    spans = []  # (start, -length, candidate)
    for index, keys in enumerate(candidates):
        if len(keys.bare) < MIN_CONTAINED:
            continue
        start = padded.find(f" {keys.bare} ")
        while start >= 0:
            spans.append((start, -len(keys.bare), index))
            start = padded.find(f" {keys.bare} ", start + 1)
    named, reached = [], 0
    for start, length, index in sorted(spans):
        if start >= reached:
            named.append(index)
            reached = start - length + 1
    return named


def _match_line(line: str, candidates: list[_CandidateKeys]) -> list[int]:
    """The candidates a line names, in its order: one written as the whole line (its keys equal, else the most
    similar above FUZZY_CUTOFF, which also takes a misspelt or cut title), else those named among other words."""
    variants = _line_variants(line)
    for variant in variants:
        for index, keys in enumerate(candidates):
            if variant in keys.titles:
                return [index]
    best, best_score = None, FUZZY_CUTOFF
    for variant in variants:
        for index, keys in enumerate(candidates):
            for key in keys.titles:
                score = difflib.SequenceMatcher(None, variant, key).ratio()
                if score > best_score or (score == best_score and best is None):
                    best, best_score = index, score
    if best is not None:
        return [best]
    return _contained(variants[0], candidates) if variants else []


def named_candidates(text: str, candidate_titles: list[str]) -> list[int]:
    """The candidates generated text names, in its order: 0-based indices, each once.

    Lines and titles are compared by the search's key (`recsys.data.titles.search_key`: case, accents, punctuation,
    a leading or moved article ignored), with or without the year and a leading list marker. A line is one
    candidate when it is its title (exactly, or fuzzily: difflib ratio >= FUZZY_CUTOFF, so a misspelt or cut title
    counts), else every candidate whose title it contains as whole words ("1. Heat, then Fargo"). Candidates
    already named and lines that name none are ignored.
    """
    candidates = [_candidate_keys(t) for t in candidate_titles]
    named: list[int] = []
    for line in text.splitlines():
        for index in _match_line(line, candidates):
            if index not in named:
                named.append(index)
    return named


def parse_ranking(text: str, candidate_titles: list[str]) -> list[int]:
    """Turn generated text into a ranking of the candidates: 0-based indices, best first, a permutation:
    the candidates the text names (`named_candidates`), then the others in their given (retriever) order."""
    named = named_candidates(text, candidate_titles)
    return named + [i for i in range(len(candidate_titles)) if i not in named]


def _eos_token_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {i for i in ids if i is not None}


def answer_length(tokenizer, candidate_titles: list[str]) -> int:
    """Tokens of all candidate titles together, one per line: the generation budget (paper's rule)."""
    return len(tokenizer("\n".join(candidate_titles), add_special_tokens=False).input_ids)


@torch.inference_mode()
def generate_ranking(model, tokenizer, prompt: RankingPrompt, max_new_tokens: int | None = None,
                     on_token: Callable[[int], None] | None = None, prefix=None,
                     run: Callable[[Callable[[], Any]], Any] | None = None) -> GenerationResult:
    """Rank a prompt's candidates by letting the model write their titles, best first, one per line.

    `prompt`: built with `generation_instruction` (`recsys.ranker.prompt.prompt_from_ids` with
    `instruction=`, or `build_prompt`). Greedy decoding, one token per forward pass on the KV cache.
    `max_new_tokens` defaults to `answer_length` of the (cut) candidate titles shown in the prompt.
    The returned ranking indexes the prompt's candidates. `on_token`, when given, receives each
    generated token id (EOS excluded) as soon as it is chosen, on this thread and inside the timed
    loop: keep it as cheap as `queue.put` and decode elsewhere. `prefix`, a
    `recsys.ranker.verbalizer.PrefixCache` built with `generation_instruction`, skips the prompt's
    shared first tokens, as the verbalizer does in the app (ValueError for another instruction's).
    With `run` (the app's `recsys.model_runner.ModelRunner`) the model and the tokenizer are used only through it, one
    token at a time, so other users' passes can run between two tokens; the time spent waiting for it is not counted.
    """
    waits = [0.0]

    def step(work: Callable[[], Any]) -> Any:
        """`work()` through `run`, its wait for the model added to `waits`."""
        if run is None:
            return work()
        asked, began = time.perf_counter(), []

        def timed():
            began.append(time.perf_counter())
            return work()

        result = run(timed)
        waits[0] += began[0] - asked
        return result

    start = time.perf_counter()
    budget, outputs, next_token, eos_ids, prefill_seconds = step(lambda: _prefill(
        model, tokenizer, prompt, max_new_tokens, prefix))
    decode_start, decode_waits = time.perf_counter(), waits[0]
    generated: list[int] = []
    while len(generated) < budget:
        token = int(next_token)  # waits for the device, so the decode clock needs no extra sync
        if token in eos_ids:
            break
        generated.append(token)
        if on_token is not None:
            on_token(token)
        if len(generated) == budget:
            break
        outputs, next_token = step(partial(_next, model, outputs, next_token))
    end = time.perf_counter()
    text = step(lambda: tokenizer.decode(generated, skip_special_tokens=True))
    return GenerationResult(ranking=parse_ranking(text, prompt.candidate_titles), text=text,
                            num_generated_tokens=len(generated), seconds=end - start - waits[0],
                            prefill_seconds=prefill_seconds,
                            decode_seconds=end - decode_start - (waits[0] - decode_waits),
                            num_named=len(named_candidates(text, prompt.candidate_titles)), waited_seconds=waits[0])


def _next(model, outputs, next_token):
    """One decoding step on the KV cache: (the outputs, the greedy next token)."""
    outputs = model(input_ids=next_token, **cache_kwargs(output_cache(outputs)), use_cache=True)
    return outputs, outputs.logits[:, -1].argmax(dim=-1, keepdim=True)


def _prefill(model, tokenizer, prompt: RankingPrompt, max_new_tokens, prefix):
    """The token budget, the prefill's outputs and first token, the EOS ids and the prefill's time."""
    budget = answer_length(tokenizer, prompt.candidate_titles) if max_new_tokens is None else max_new_tokens
    token_ids = tokenizer(prompt.text).input_ids
    cache = {}
    if prefix is not None:
        token_ids, cache = prefix.suffix(token_ids), cache_kwargs(prefix.expanded_cache(1))
    input_ids = torch.tensor([token_ids], device=model.device)
    eos_ids = _eos_token_ids(model, tokenizer)
    prefill_start = time.perf_counter()
    outputs = model(input_ids=input_ids, use_cache=True, **last_position(model.device), **cache)
    next_token = outputs.logits[:, -1].argmax(dim=-1, keepdim=True)
    synchronize(model.device)
    return budget, outputs, next_token, eos_ids, time.perf_counter() - prefill_start
