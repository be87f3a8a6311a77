"""The verbalizer: one forward pass, the next-token logits at the 20 letter tokens -> candidate probabilities.

The letter ids are derived by tokenizing prompt + letter exactly as training examples are
tokenized (`encode_example`), not by tokenizing "A".."T" alone: SentencePiece tokenizers give a
different piece for a word-initial "A" than for one after a newline (the reference code's defect).
"""

from __future__ import annotations

import torch

from recsys.ranker.prompt import LETTERS, RankingPrompt, render

_PROBE_PROMPT = render(["A movie (2000)"], ["Another movie (2001)"])


def encode_example(tokenizer, prompt_text: str, answer_letter: str) -> tuple[list[int], list[int]]:
    """Tokenize one training example: (input_ids, labels) with labels -100 except letter + EOS.

    The prompt is tokenized on its own and the answer continues it, so the answer's first token is
    exactly the token the model must predict right after the prompt.
    """
    prompt_ids = tokenizer(prompt_text).input_ids
    full_ids = tokenizer(prompt_text + answer_letter).input_ids
    if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) == len(prompt_ids):
        raise ValueError(f"tokenizer merges the answer {answer_letter!r} into the prompt's last token")
    answer_ids = full_ids[len(prompt_ids):] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def letter_token_ids(tokenizer, prompt_text: str = _PROBE_PROMPT) -> list[int]:
    """Token id the model emits first for each letter A..T after a prompt (via `encode_example`)."""
    ids = []
    for letter in LETTERS:
        input_ids, labels = encode_example(tokenizer, prompt_text, letter)
        ids.append(next(label for label in labels if label != -100))
    if len(set(ids)) != len(ids):
        raise ValueError("two letters share a first token; the verbalizer needs distinct letter tokens")
    return ids


def tokenize_prompts(tokenizer, prompts: list[str], device) -> dict[str, torch.Tensor]:
    """Left-padded batch encoding so that every prompt's last token sits at position -1."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(prompts, return_tensors="pt", padding=True).to(device)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def letter_logits(model, tokenizer, prompts: list[str], letter_ids: list[int]) -> torch.Tensor:
    """Logits (B, 20) at the letter tokens for the next token after each prompt.

    Only the last position goes through the LM head (`logits_to_keep=1`): the full-vocabulary
    projection at every position would cost more than the rest of the pass for short prompts.
    """
    batch = tokenize_prompts(tokenizer, prompts, model.device)
    outputs = model(**batch, position_ids=position_ids(batch["attention_mask"]), logits_to_keep=1, use_cache=False)
    return outputs.logits[:, -1, :].float()[:, letter_ids]


def candidate_probabilities(model, tokenizer, prompts: list[RankingPrompt], letter_ids: list[int]) -> list[torch.Tensor]:
    """Softmax over each prompt's own candidate letters: a list of (num_candidates,) probability vectors."""
    logits = letter_logits(model, tokenizer, [p.text for p in prompts], letter_ids)
    return [torch.softmax(row[: len(p.candidate_titles)], dim=-1).cpu() for row, p in zip(logits, prompts)]
