"""The served LoRA adapter folded into the base weights on CPU, with the base weights kept beside them.

Unfolded, LoRA adds s·(x·Aᵀ)·Bᵀ to each adapted projection (the committed adapter: all seven of the top 10 of
SmolLM2-135M's 30 layers, 70 projections): on a 2-core CPU those small products and the casts to and from the
adapter's fp32 cost 7-22 ms of a 220-250 ms verbalizer pass (`bench/serving_costs.py`). Folded, each projection is
one matrix product with W + s·B·A (summed in fp32, rounded once to the base dtype). peft's `merge_adapter` folds in
place and `unmerge_adapter` subtracts the same delta again, which in bf16 does not give W back: every switch to the
base model or to the catalog adapter would move the weights a little. Here each adapted Linear keeps both tensors and
a switch swaps which one it computes with: no copy, no drift, the adapted projections' memory twice (71 MB in bf16 for
the committed adapter).

Only a plain LoRA folds this way: an adapter with DoRA, a LoRA bias, saved whole modules or trainable token rows is
left unfolded. peft's own switches (`disable_adapter`, `set_adapter`) must not be used on a folded model outside
`FoldedAdapter.unfolded()`: leaving `disable_adapter` turns LoRA's layers back on over the folded weights.

On CUDA, and over quantized weights, nothing is folded (`fold_served_adapter` returns None): there the launches of
the small products, not their arithmetic, are the cost, and 4-bit weights cannot hold W + s·B·A exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


class FoldedAdapter:
    """An adapter folded into its projections; `unfolded()` gives back the base weights with LoRA on top."""

    def __init__(self, model, adapter: str = "default"):
        """Fold `adapter` (a loaded peft LoRA adapter of `model`) into copies of the projections it adapts and
        compute with them: LoRA's layers are switched off, so nothing is added twice. Use `fold_served_adapter`,
        which folds a model once."""
        self.model = model
        self.adapter = adapter
        self._depth = 0  # nested `unfolded()` contexts
        self._weights: list[tuple[torch.nn.Linear, torch.nn.Parameter, torch.nn.Parameter]] = []
        with torch.no_grad():
            for module in _adapted(model, adapter):
                linear = module.get_base_layer()
                base = linear.weight
                delta = module.get_delta_weight(adapter).to(device=base.device, dtype=torch.float32)
                folded = (base.float() + delta).to(base.dtype)
                self._weights.append((linear, base, torch.nn.Parameter(folded, requires_grad=False)))
        self._fold()
        model.folded_adapter = self  # a second fold of this model finds it (`fold_served_adapter`)

    @property
    def projections(self) -> int:
        """How many projections compute with folded weights."""
        return len(self._weights)

    def _fold(self) -> None:
        for linear, _, folded in self._weights:
            linear.weight = folded
        self.model.base_model.disable_adapter_layers()

    def _unfold(self) -> None:
        for linear, base, _ in self._weights:
            linear.weight = base
        self.model.base_model.enable_adapter_layers()

    @contextmanager
    def unfolded(self) -> Iterator[None]:
        """A context in which the model computes as peft's unfolded model: the base weights, every loaded adapter's
        LoRA layers on (switch or disable them inside with peft); folded again after, with `adapter` active."""
        if self._depth == 0:
            self._unfold()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.model.set_adapter(self.adapter)
                self._fold()


def fold_served_adapter(model, adapter: str = "default") -> FoldedAdapter | None:
    """Fold `adapter` into the weights of `model` (a peft model) when they are plain floating-point Linear weights on
    CPU and the adapter is a plain LoRA; None (the model left as it is) for a model without that adapter, on CUDA, over
    quantized weights, or for LoRA variants that folding would drop. A model folded before returns its fold."""
    from peft.tuners.lora import LoraLayer

    existing = getattr(model, "folded_adapter", None)
    if existing is not None:
        if existing.adapter != adapter:
            raise ValueError(f"the model is folded with adapter {existing.adapter!r}, not {adapter!r}")
        return existing
    config = getattr(model, "peft_config", {}).get(adapter)
    if config is None or next(model.parameters()).device.type != "cpu":
        return None
    variants = {"use_dora": False, "lora_bias": False, "bias": "none", "modules_to_save": None,
                "trainable_token_indices": None}  # parts of a LoRA that folding the products would drop
    if any(value and value != plain for value, plain in ((getattr(config, n, None), p) for n, p in variants.items())):
        return None
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and adapter in m.lora_A]
    folds = len(_adapted(model, adapter)) == len(layers) > 0  # every adapted layer a LoRA Linear over a float Linear
    return FoldedAdapter(model, adapter) if folds else None


def _adapted(model, adapter: str) -> list[Any]:
    """The LoRA Linear layers of `model` that carry `adapter` over a plain floating-point torch Linear."""
    from peft.tuners.lora import Linear

    def plain(module) -> bool:
        base = module.get_base_layer()
        return type(base) is torch.nn.Linear and base.weight.is_floating_point()

    return [m for m in model.modules() if isinstance(m, Linear) and adapter in m.lora_A and plain(m)]
