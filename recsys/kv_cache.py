"""transformers' name for a causal LM's key/value cache, which changed inside the releases we admit.

Up to 5.23 the model takes `past_key_values=` and its output holds `.past_key_values`; from 5.24 both
are `cache` (the old name is deprecated there and removed in 5.40). A wrong keyword is not an error:
the model's `**kwargs` swallows it and it silently recomputes without the cache. Callers build the
keyword with `cache_kwargs` and read the output with `output_cache`, so one code path runs on every
release from the floor in requirements.txt up.
"""

from __future__ import annotations

from functools import cache


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
