"""The ranker's attention kernel: grouped-query attention as two matrix products on CPU, torch's SDPA elsewhere.

On CPU torch's SDPA runs its flash kernel whenever a mask is given, and the verbalizer's pass always gives one (the
prompt's queries sit after the cached instruction prefix, so the causal mask is offset). For SmolLM2-135M's
shapes (9 query heads over 3 key/value heads, ~280 queries over ~320 keys, bf16) that kernel is slow on a 2-core
AMD EPYC (AVX512-BF16): 53 ms of a 261 ms pass (`bench/forward_profile.py`). Here the query heads that share a
key/value head are stacked into one (G*Q, D) matrix, so each layer is two batched products over the 3 shared heads
(no repeated keys or values) with a bf16 softmax between them: attention 37 ms a pass, the pass 254 -> 226 ms
(`bench/serving_costs.py`). Its output matches transformers' eager attention (softmax computed in fp32,
probabilities rounded to bf16); `tests/test_attention.py` compares it with SDPA in fp32.

Registered under `ATTENTION` with transformers' `AttentionInterface`, with SDPA's boolean mask
(`transformers.masking_utils.sdpa_mask`), so every other device runs exactly transformers' SDPA path.
"""

from __future__ import annotations

import torch

ATTENTION = "grouped_cpu_sdpa"  # the model config's attn_implementation


def grouped_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """Attention output (B, Q, H, D) and None (no weights kept), transformers' attention-function signature.

    `query` (B, H, Q, D), `key` and `value` (B, KVH, KV, D) with H a multiple of KVH; `attention_mask` SDPA's
    boolean (B, 1, Q, KV), True where a query may read a key, or None for a causal pass (offset so that the last
    query reads the last key) or a single query. Masked scores are set to the dtype's lowest value, not -inf, so a
    fully masked row (a left-padding position) stays finite. Off CPU: transformers' `sdpa_attention_forward`.
    """
    if query.device.type != "cpu":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    batch, heads, queries, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    group = heads // kv_heads
    stacked = (query * scaling).reshape(batch, kv_heads, group * queries, dim)
    scores = torch.matmul(stacked, key.transpose(2, 3)).view(batch, kv_heads, group, queries, keys)
    causal = kwargs.get("is_causal")
    if attention_mask is None and queries > 1 and (getattr(module, "is_causal", True) if causal is None else causal):
        attention_mask = torch.ones(queries, keys, dtype=torch.bool, device=query.device).tril(keys - queries)
    if attention_mask is not None:
        readable = attention_mask[..., :keys] if attention_mask.dim() == 2 else attention_mask[:, :, None, :, :keys]
        scores.masked_fill_(~readable, torch.finfo(scores.dtype).min)
    probabilities = torch.softmax(scores, dim=-1).view(batch, kv_heads, group * queries, keys)
    if dropout and module.training:
        probabilities = torch.nn.functional.dropout(probabilities, p=dropout)
    output = torch.matmul(probabilities, value).view(batch, heads, queries, dim)
    return output.transpose(1, 2).contiguous(), None


def register() -> str:
    """Register `grouped_attention` with transformers (idempotent) and return its name for `attn_implementation`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, grouped_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    return ATTENTION
