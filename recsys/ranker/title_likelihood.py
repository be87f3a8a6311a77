"""Title likelihood: a way for the LLM to rank with no letters.

The model reads the history as a plain list of titles, one a line, and each candidate's score is the
log-probability of its own title (and the line's end) as the next line:

    Movies a user watched, in order:        <- the header names the data set's items (`HEADERS`)
    Heat
    The Matrix
    <candidate title>\\n        <- log p(candidate tokens | history), summed (or per token)

The 20 candidates share the history: it runs once, and its keys and values are reused by one
batched pass over the 20 titles, so a user costs about one forward pass, like the verbalizer. The
score does not depend on where a candidate is listed (no list, no letters): position-free by
construction. The same text format is what catalog pretraining (`recsys.ranker.catalog_lm`) trains
on, built by the same `history_ids` / `title_ids`, so training and scoring see identical tokens.

Titles are joined as separately tokenized lines: byte-level BPE splits on the newline, so the ids of
the concatenation equal the concatenated ids and a title's tokens never depend on its neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from recsys.kv_cache import cache_kwargs, last_position, output_cache
from recsys.ranker.fusion import PROBABILITY_FLOOR
from recsys.ranker.prompt import PromptConfig, cut_title, item_texts
from recsys.ranker.verbalizer import PrefixCache

# the line above the history, per domain (`recsys.data.sources.DATASETS`' domains, as `prompt.HISTORIES`)
HEADERS = {"movie": "Movies a user watched, in order:\n", "product": "Products a user bought, in order:\n",
           "game": "Games a user bought, in order:\n"}


@dataclass(frozen=True)
class TitleConfig:
    """How titles are shown and scored (the history budget and the title form are the verbalizer's defaults)."""

    max_history: int = 10  # latest history titles read
    max_title_tokens: int = 32
    years: bool = False  # titles without "(1999)": shorter, and the year is not what tells two films apart here
    per_token: bool = False  # score = mean log-probability per token instead of the sum (chosen on validation)
    domain: str = "movie"  # what the items are: the header's words (`HEADERS`)

    def __post_init__(self):
        if self.domain not in HEADERS:
            raise ValueError(f"unknown title domain {self.domain!r}: one of {sorted(HEADERS)}")

    def prompt_config(self) -> PromptConfig:
        """The prompt budgets of `recsys.ranker.prompt` that show titles the same way."""
        return PromptConfig(max_history=self.max_history, max_title_tokens=self.max_title_tokens, years=self.years)


def title_texts(tokenizer, catalog, item_ids, config: TitleConfig) -> list[str]:
    """Catalog titles of `item_ids` as the title format shows them (year dropped unless `config.years`, cut)."""
    return [cut_title(tokenizer, t, config.max_title_tokens) for t in item_texts(catalog, item_ids,
                                                                                   config.prompt_config())]


def title_ids(tokenizer, title: str) -> list[int]:
    """The tokens of one title line: the title and its newline (the newline says the title is complete)."""
    return tokenizer(title + "\n", add_special_tokens=False).input_ids


def history_ids(tokenizer, titles: list[str], domain: str = "movie") -> list[int]:
    """The tokens of the `domain`'s header and the history lines (oldest first), with the tokenizer's special
    start."""
    ids = tokenizer(HEADERS[domain]).input_ids
    for title in titles:
        ids += title_ids(tokenizer, title)
    return ids


@torch.inference_mode()
def title_log_likelihoods(model, tokenizer, history_titles: list[str], candidate_titles: list[str],
                          domain: str = "movie") -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log-probabilities (K,), token counts (K,)) of each candidate's title line after the history (under
    the `domain`'s header), fp32.

    One pass over the history (keys and values kept), then one batched pass of the K title lines,
    right-padded, attending to the shared history: the first token of each title is read off the
    history's last logits, the rest off the batched pass.
    """
    device = model.device
    context = history_ids(tokenizer, history_titles, domain)
    lines = [title_ids(tokenizer, t) for t in candidate_titles]
    first = model(input_ids=torch.tensor([context], device=device), use_cache=True, **last_position(device))
    first_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
    totals = torch.tensor([float(first_logp[line[0]]) for line in lines])
    lengths = torch.tensor([len(line) for line in lines], dtype=torch.float32)
    longest = max(len(line) for line in lines)
    if longest > 1:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        inputs = torch.tensor([line[:-1] + [pad] * (longest - len(line)) for line in lines], device=device)
        mask = torch.tensor([[1] * len(context) + [1] * (len(line) - 1) + [0] * (longest - len(line))
                             for line in lines], device=device)
        positions = torch.arange(len(context), len(context) + longest - 1, device=device).expand(len(lines), -1)
        # the history's keys/values, shared by the K title lines (the verbalizer's prefix cache does the same)
        history = PrefixCache(context, [(layer.keys, layer.values) for layer in output_cache(first).layers])
        logits = model(input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=True,
                       **cache_kwargs(history.expanded_cache(len(lines)))).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        targets = torch.tensor([line[1:] + [0] * (longest - len(line)) for line in lines], device=device)
        picked = logp.gather(2, targets.unsqueeze(-1)).squeeze(-1)
        valid = torch.tensor([[1.0] * (len(line) - 1) + [0.0] * (longest - len(line)) for line in lines],
                             device=device)
        totals = totals + (picked * valid).sum(dim=1).cpu()
    return totals, lengths


def title_opinion(totals: torch.Tensor, lengths: torch.Tensor, per_token: bool = False) -> torch.Tensor:
    """The named opinion "titles" of `recsys.ranker.fusion`: log-softmax over the candidates of each title's
    log-likelihood (summed, or per token with `per_token`), same shape as `totals` ((K,) or (N, K)), floored at
    log(PROBABILITY_FLOOR): summed likelihoods of long titles lie more than 69 nats apart, and the app carries each
    opinion as a probability, so evaluation must see the same floor."""
    scores = totals / lengths if per_token else totals
    return torch.log_softmax(scores.float(), dim=-1).clamp_min(math.log(PROBABILITY_FLOOR))


def served_title_config(prompt: PromptConfig) -> TitleConfig:
    """How title likelihood reads titles beside a served prompt when no catalog adapter says otherwise: the prompt's
    history budget, title form and domain (the app's, `Pipeline.load`, and its evaluation's)."""
    return TitleConfig(max_history=prompt.max_history, max_title_tokens=prompt.max_title_tokens, years=prompt.years,
                       domain=prompt.domain)
