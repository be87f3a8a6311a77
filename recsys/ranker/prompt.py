"""The one prompt builder, shared by training, evaluation, the generation baseline, benchmarks and the app.

Layout (as the paper's instruction / input / response prompt):

    ### Instruction:
    Given the user's watch history in chronological order, recommend a movie from the candidate pool
    by its index letter.            (a product's or a game's: "purchase history", "a product": PromptConfig.domain)

    ### Input:
    User history:
    (1) oldest title
    ...
    Candidate pool:
    (A) title                                   or, with PromptConfig.evidence,
    ...                                         (A) title [rank 3, co-watch 1.4]

    ### Response:
    <letter><eos>          (training target; the verbalizer reads the logits right after the header)
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from recsys import MAX_HISTORY, NUM_CANDIDATES
from recsys.data.titles import split_year

LETTERS = string.ascii_uppercase[:NUM_CANDIDATES]  # "A".."T"
RESPONSE_HEADER = "### Response:\n"
# what the instruction calls a history and an item, per domain (`recsys.data.sources.DATASETS`' domains)
HISTORIES = {"movie": "watch history", "product": "purchase history", "game": "purchase history"}


def ranking_instruction(domain: str = "movie") -> str:
    """The verbalizer's instruction for items of `domain` ("movie", "product", "game"): the paper's, naming the
    item. ValueError for another domain."""
    if domain not in HISTORIES:
        raise ValueError(f"unknown prompt domain {domain!r}: one of {sorted(HISTORIES)}")
    return (f"Given the user's {HISTORIES[domain]} in chronological order, recommend a {domain} from the "
            "candidate pool by its index letter.")


INSTRUCTION = ranking_instruction("movie")  # MovieLens's, the committed adapter's


@dataclass(frozen=True)
class PromptConfig:
    """Token budgets of the ranking prompt (paper: 20 history titles, 32 tokens a title, 1,536 in all) and the
    domain its instruction names."""

    max_history: int = MAX_HISTORY
    max_title_tokens: int = 32
    max_prompt_tokens: int = 1536
    years: bool = True  # titles keep their "(1999)"; without, prompts are ~35% shorter (digits are single tokens)
    evidence: bool = False  # beyond the paper: each candidate followed by its retriever rank and co-watch count
    domain: str = "movie"  # what the items are: "movie", "product" or "game" (`ranking_instruction`)

    @property
    def instruction(self) -> str:
        """The verbalizer's instruction for this domain."""
        return ranking_instruction(self.domain)


def item_text(movie, years: bool = True) -> str:
    """How a catalog movie appears in the prompt: its title, with its year unless not `years`."""
    return movie.title if years else split_year(movie.title)[0]


def evidence_note(retriever_rank: int, cowatch_score: float) -> str:
    """What a prompt with PromptConfig.evidence says of a candidate, e.g. "rank 3, co-watch 1.4".

    `retriever_rank` is 1-based; `cowatch_score` is the co-watch prior's score (the mean over the user's recent
    films of log(1 + how often the candidate followed each one), `recsys.ranker.cowatch`), to one decimal: the LLM
    reads the evidence the prior would otherwise add to its scores (~13 tokens a candidate).
    """
    return f"rank {retriever_rank}, co-watch {max(float(cowatch_score), 0.0):.1f}"


def evidence_notes(cowatch_scores, order) -> list[str]:
    """`evidence_note` of each candidate in prompt order: `order[j]` is the 0-based retriever rank of the film at
    letter j and `cowatch_scores` (K,) are in the retriever's order."""
    return [evidence_note(int(o) + 1, cowatch_scores[int(o)]) for o in order]


def item_texts(catalog, item_ids, config: PromptConfig) -> list[str]:
    """`item_text` of several catalog item ids, in order, as `config` asks."""
    return [item_text(catalog[int(i)], config.years) for i in item_ids]


@dataclass(frozen=True)
class RankingPrompt:
    """A built prompt and what went into it."""

    text: str
    history_titles: list[str]  # the (possibly cut) titles shown, oldest first
    candidate_titles: list[str]  # the (possibly cut) titles shown, in letter order
    num_tokens: int

    @property
    def letters(self) -> str:
        """Index letters of the candidates, "A".. in order."""
        return LETTERS[: len(self.candidate_titles)]


def cut_title(tokenizer, title: str, max_tokens: int) -> str:
    """`title` cut to its first `max_tokens` tokens (unchanged when it fits)."""
    ids = tokenizer(title, add_special_tokens=False).input_ids
    if len(ids) <= max_tokens:
        return title
    return tokenizer.decode(ids[:max_tokens]).strip()


def render(history_titles: list[str], candidate_titles: list[str], instruction: str = INSTRUCTION,
           notes: list[str] | None = None) -> str:
    """The prompt text for already-cut titles (no budget applied); `notes` follow their candidates in brackets."""
    history = "\n".join(f"({i}) {t}" for i, t in enumerate(history_titles, start=1))
    shown = candidate_titles if notes is None else [f"{t} [{n}]" for t, n in zip(candidate_titles, notes)]
    pool = "\n".join(f"({LETTERS[i]}) {t}" for i, t in enumerate(shown))
    return (f"### Instruction:\n{instruction}\n\n### Input:\nUser history:\n{history}\n"
            f"Candidate pool:\n{pool}\n\n{RESPONSE_HEADER}")


def prompt_from_ids(tokenizer, catalog, history_ids, candidate_ids, config: PromptConfig = PromptConfig(),
                    notes: list[str] | None = None, instruction: str | None = None) -> RankingPrompt:
    """The ranking prompt of catalog item ids: the last `config.max_history` of `history_ids` (oldest first) and
    `candidate_ids` in letter order, as `item_texts` shows them (`build_prompt` for the rest). The one path from ids
    to a prompt: serving (`recsys.opinions.LLMOpinions.prompt_for`, the race's too), evaluation
    (`recsys.ranker.evaluate.score_llm`) and training (`recsys.ranker.train.ExampleDataset`) all build theirs here."""
    history = list(history_ids)[-config.max_history:] if config.max_history else []
    return build_prompt(tokenizer, item_texts(catalog, history, config), item_texts(catalog, candidate_ids, config),
                        config, instruction, notes)


def build_prompt(tokenizer, history_titles: list[str], candidate_titles: list[str],
                 config: PromptConfig = PromptConfig(), instruction: str | None = None,
                 notes: list[str] | None = None) -> RankingPrompt:
    """Build the ranking prompt within the token budgets; `instruction` None is the config's domain's
    (`ranking_instruction`).

    Keeps the last `max_history` history titles, cuts every title to `max_title_tokens`, then drops
    the oldest history titles until the prompt fits `max_prompt_tokens`. The instruction and the
    candidates are never cut further; a prompt that cannot fit even with no history raises ValueError.
    `notes` (one per candidate, uncut: `evidence_notes`) are required exactly when `config.evidence`.
    """
    if not 1 <= len(candidate_titles) <= NUM_CANDIDATES:
        raise ValueError(f"need 1..{NUM_CANDIDATES} candidates, got {len(candidate_titles)}")
    if config.evidence != (notes is not None) or (notes is not None and len(notes) != len(candidate_titles)):
        raise ValueError(f"a prompt with evidence={config.evidence} needs "
                         + (f"one note per candidate ({len(candidate_titles)})" if config.evidence else "no notes"))
    instruction = config.instruction if instruction is None else instruction
    history = [cut_title(tokenizer, t, config.max_title_tokens)
               for t in (history_titles[-config.max_history:] if config.max_history else [])]
    candidates = [cut_title(tokenizer, t, config.max_title_tokens) for t in candidate_titles]
    while True:
        text = render(history, candidates, instruction, notes)
        num_tokens = len(tokenizer(text).input_ids)
        if num_tokens <= config.max_prompt_tokens:
            return RankingPrompt(text, history, candidates, num_tokens)
        if not history:
            raise ValueError(f"the instruction and {len(candidates)} candidates need {num_tokens} tokens, "
                             f"over the budget of {config.max_prompt_tokens}")
        history = history[1:]
