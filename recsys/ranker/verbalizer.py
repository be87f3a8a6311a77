"""The verbalizer: one forward pass, the next-token logits at the 20 letter tokens -> candidate probabilities.

The letter ids are derived by tokenizing prompt + letter exactly as training examples are
tokenized (`encode_example`), not by tokenizing "A".."T" alone: SentencePiece tokenizers give a
different piece for a word-initial "A" than for one after a newline (the reference code's defect).

Every prompt with the same instruction starts with the same tokens; `build_prefix_cache` runs them
once, and every scoring function here takes that `PrefixCache` as `prefix=` and runs only the tokens
after it. The app and evaluation both pass one, so users get exactly the numbers that were measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recsys.kv_cache import cache_kwargs, last_position, output_cache
from recsys.ranker.prompt import INSTRUCTION, LETTERS, RankingPrompt, render

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


def tokenize_prompts(tokenizer, prompts: list[str], device, prefix: PrefixCache | None = None) -> dict:
    """Left-padded batch encoding so that every prompt's last token sits at position -1.

    Returns input_ids and attention_mask (B, T) and position_ids (B, T) that start at 0 on each row's
    first real token. With a `prefix` (`build_prefix_cache`), input_ids hold only the tokens after it,
    the mask covers prefix + suffix (the padding sits between them, masked out), positions continue
    from the prefix, and "prefix_cache" holds a fresh copy of its keys/values for the B rows. Raises
    ValueError when a prompt does not start with the prefix's tokens.
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if prefix is None:
        batch = dict(tokenizer(prompts, return_tensors="pt", padding=True).to(device))
        batch["position_ids"] = position_ids(batch["attention_mask"])
        return batch
    start = len(prefix.token_ids)
    suffixes = [prefix.suffix(ids) for ids in tokenizer(prompts).input_ids]
    length = max(len(s) for s in suffixes)
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (length - len(s)) + s for s in suffixes], device=device)
    suffix_mask = torch.tensor([[0] * (length - len(s)) + [1] * len(s) for s in suffixes], device=device)
    attention_mask = torch.cat([torch.ones(len(prompts), start, dtype=suffix_mask.dtype, device=device),
                                suffix_mask], dim=1)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "position_ids": position_ids(attention_mask)[:, start:],
            "prefix_cache": prefix.expanded_cache(len(prompts))}


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def final_norm(model):
    """The decoder's final RMSNorm (Llama-style models, with or without a peft wrapper); None when there is none."""
    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = decoder.get_decoder() if hasattr(decoder, "get_decoder") else None
    norm = getattr(decoder, "norm", None)
    return norm if norm is not None and hasattr(norm, "weight") else None


def forward_letter_logits(model, batch: dict, letter_ids: list[int]) -> torch.Tensor:
    """Letter logits (B, 20) at the next token after each left-padded prompt of `batch`, computed in fp32.

    `batch` is `tokenize_prompts`' output (with or without a prefix cache) or a training collate's
    input_ids and attention_mask (positions are then derived from the mask).

    The decoder runs in the model's dtype; its last position's final RMSNorm and the 20 letter rows of
    the LM head are applied in fp32, so bf16 rounding of the output (a step of 0.06-0.125 at logits
    8-32) cannot tie two letters. Models without a Llama-style final norm fall back to the LM head's
    own output. Differentiable (used by the training loss too).
    """
    return _forward(model, batch, letter_ids)[0]


def _forward(model, batch: dict[str, torch.Tensor], letter_ids: list[int]):
    """(fp32 letter logits (B, 20), the model's outputs with the last position's full logits)."""
    norm = final_norm(model)
    captured = {}

    def keep_last_input(module, inputs, output):  # returns None: the norm's output is left as it is
        captured["h"] = inputs[0][:, -1]

    hook = norm.register_forward_hook(keep_last_input) if norm is not None else None
    try:
        cache = cache_kwargs(batch["prefix_cache"]) if "prefix_cache" in batch else {}
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        position_ids=batch.get("position_ids", position_ids(batch["attention_mask"])),
                        **last_position(batch["input_ids"].device), use_cache=bool(cache), **cache)
    finally:
        if hook is not None:
            hook.remove()
    if norm is None:
        return outputs.logits[:, -1, :].float()[:, letter_ids], outputs
    hidden = captured["h"].float()
    epsilon = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + epsilon) * norm.weight.float()
    head = model.get_output_embeddings().weight[letter_ids].float()  # (20, hidden)
    return hidden @ head.T, outputs


@torch.inference_mode()
def letter_logits(model, tokenizer, prompts: list[str], letter_ids: list[int],
                  prefix: PrefixCache | None = None) -> torch.Tensor:
    """Logits (B, 20) at the letter tokens for the next token after each prompt (fp32; see `forward_letter_logits`).

    Only the last position goes through the LM head (`recsys.kv_cache.last_position`): the full-vocabulary
    projection at every position would cost more than the rest of the pass for short prompts. With a
    `prefix` only the tokens after it are run.
    """
    return forward_letter_logits(model, tokenize_prompts(tokenizer, prompts, model.device, prefix), letter_ids)


@dataclass
class VerbalizerReading:
    """What the verbalizer reads from one prompt's next-token distribution."""

    probabilities: torch.Tensor  # (num_candidates,) softmax over the candidates' letters
    letter_mass: float  # share of the full next-token probability that falls on those letters
    top_other_tokens: list[tuple[str, float]]  # the likeliest non-letter tokens and their full-vocabulary probability


@torch.inference_mode()
def read_next_tokens(model, tokenizer, prompts: list[RankingPrompt], letter_ids: list[int], top: int = 5,
                     prefix: PrefixCache | None = None) -> list[VerbalizerReading]:
    """One forward pass over the prompts (left-padded; a single prompt runs unpadded, exactly as evaluation's batch
    of 1): each one's candidate probabilities (softmax over its own letters of the same fp32 letter logits as
    `letter_logits`), the letters' share of the next-token mass and the top other tokens."""
    letter_scores, outputs = _forward(model, tokenize_prompts(tokenizer, [p.text for p in prompts], model.device,
                                                              prefix), letter_ids)
    distributions = torch.softmax(outputs.logits[:, -1, :].float(), dim=-1).cpu()
    readings = []
    for scores, prompt, distribution in zip(letter_scores, prompts, distributions):
        letters = letter_ids[: len(prompt.candidate_titles)]
        others = distribution.clone()
        others[letters] = -1.0
        values, ids = torch.topk(others, top)
        readings.append(VerbalizerReading(
            torch.softmax(scores[: len(letters)], dim=-1).cpu(), float(distribution[letters].sum()),
            [(tokenizer.decode([i]), float(v)) for i, v in zip(ids.tolist(), values.tolist())]))
    return readings


@dataclass
class PrefixCache:
    """Keys/values of the token prefix that every prompt with one instruction starts with (batch 1)."""

    token_ids: list[int]  # the shared prefix's tokens
    key_values: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (1, kv_heads, prefix, head_dim)

    def suffix(self, token_ids: list[int]) -> list[int]:
        """The prompt's tokens after the prefix; ValueError when the prompt does not start with it (or has no more)."""
        start = len(self.token_ids)
        if token_ids[:start] != self.token_ids or len(token_ids) == start:
            raise ValueError("a prompt does not start with the cached prefix; build the cache with the "
                             "instruction the prompts were built with")
        return token_ids[start:]

    def expanded_cache(self, batch_size: int):
        """A fresh transformers DynamicCache of the prefix for `batch_size` rows (the stored tensors stay unchanged)."""
        from transformers import DynamicCache

        return DynamicCache([(k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1))
                             for k, v in self.key_values])


def shared_prefix_ids(tokenizer, instruction: str = INSTRUCTION) -> list[int]:
    """The longest token prefix common to prompts with and without history (instruction and headers)."""
    with_history = tokenizer(render(["A movie (2000)"], ["Another movie (2001)"], instruction)).input_ids
    without_history = tokenizer(render([], ["Another movie (2001)"], instruction)).input_ids
    length = 0
    while length < min(len(with_history), len(without_history)) and with_history[length] == without_history[length]:
        length += 1
    return with_history[:length]


@torch.inference_mode()
def build_prefix_cache(model, tokenizer, instruction: str = INSTRUCTION) -> PrefixCache:
    """Run the shared prefix of `instruction`'s prompts once and keep its keys/values."""
    token_ids = shared_prefix_ids(tokenizer, instruction)
    outputs = model(input_ids=torch.tensor([token_ids], device=model.device), use_cache=True,
                    **last_position(model.device))
    return PrefixCache(token_ids, [(layer.keys, layer.values) for layer in output_cache(outputs).layers])
