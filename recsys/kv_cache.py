"""transformers' name for a causal LM's key/value cache, which changed inside the releases we admit.

Up to 5.23 the model takes `past_key_values=` and its output holds `.past_key_values`; from 5.24 both
are `cache` (the old name is deprecated there and removed in 5.40). A wrong keyword is not an error:
the model's `**kwargs` swallows it and it silently recomputes without the cache. Callers build the
keyword with `cache_kwargs` and read the output with `output_cache`, so one code path runs on every
release from the floor in requirements.txt up.

`last_position` is the other keyword every such call shares: the LM head on the last position only.
"""

from __future__ import annotations

from functools import cache

import torch


@cache
def cache_field() -> str:
    """"cache" or "past_key_values": the installed transformers' name for the KV cache (keyword and output field)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def cache_kwargs(key_values) -> dict:
    """The model keyword that passes `key_values` (a transformers Cache) in: {name: key_values}."""
    return {cache_field(): key_values}


def output_cache(outputs):
    """The transformers Cache a forward pass with `use_cache=True` returned in `outputs`."""
    return getattr(outputs, cache_field())


def last_position(device) -> dict:
    """The model keyword that runs the LM head on each row's last position only: {"logits_to_keep": index}.

    An index tensor, not `logits_to_keep=1`: the int slices the hidden states to a (B, 1, hidden) view with
    the prompt's stride, which torch's matmul does not fold into one matrix product when the weights are
    frozen; the bf16 batched product on CPU then copies the (hidden, vocabulary) head once per row (SmolLM2-135M's
    49,152 tokens on a 2-core AMD EPYC: 49 ms for one row, 359 ms for 8). Indexing gathers a contiguous
    (B, 1, hidden) copy: one matrix product (3-4 ms), bit-identical logits (`bench/serving_costs.py`).
    """
    return {"logits_to_keep": torch.tensor([-1], device=device)}
