"""The ranker's attention kernel: grouped-query attention as two matrix products on CPU, torch's SDPA elsewhere.

On CPU torch's SDPA runs its flash kernel whenever a mask is given, and the verbalizer's pass always gives one (the
prompt's queries sit after the cached instruction prefix, so the causal mask is offset). For SmolLM2-135M's
shapes (9 query heads over 3 key/value heads, ~250 queries after the prefix over ~290 keys, bf16) that kernel is
slow on a 2-core AMD EPYC (AVX512-BF16): attention took 53 ms of a 261 ms pass (`bench/forward_profile.py`). Here the
query heads that share a key/value head are stacked into one (G*Q, D) matrix, so each layer is two batched products
over the 3 shared heads (no repeated keys or values) with a softmax between them (torch's, over bf16 scores: fp32
inside, probabilities rounded to bf16), and the queries run in blocks that read the keys up to their causal reach
only: attention 29 ms a pass (`bench/forward_profile.py`), the pass 232 -> 216 ms against SDPA in one run
(`bench/serving_costs.py`). This is transformers' eager attention computed in another order (equal in fp32, within
bf16 rounding in bf16); `tests/test_attention.py` compares it with SDPA in fp32 and with eager attention in bf16.

Registered under `ATTENTION` with transformers' `AttentionInterface`, with SDPA's boolean mask
(`transformers.masking_utils.sdpa_mask`); what the kernel does not cover (another device, among others: see
`grouped_attention`) runs transformers' SDPA function unchanged.
"""

from __future__ import annotations

import torch

# "sdpa" in the name on purpose: transformers lets a model dispatch to an implementation whose name contains it
# wherever it allows SDPA (`_sdpa_can_dispatch`), so every model that runs SDPA can run this
ATTENTION = "grouped_cpu_sdpa"  # the model config's attn_implementation
QUERY_BLOCK = 128  # queries a block: each block reads the keys up to its causal reach only


def grouped_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """Attention output (B, Q, H, D) and None (no weights kept), transformers' attention-function signature.

    `query` (B, H, Q, D), `key` and `value` (B, KVH, KV, D) with H a multiple of KVH; `attention_mask` SDPA's
    boolean (B, 1, Q, KV), True where a query may read a key (the keys end with the queries' own: a prefix cache or
    past keys come first). Queries run in blocks of `QUERY_BLOCK`, each against the keys up to its last query's
    causal reach. Masked scores are set to the dtype's lowest value, not -inf, so a fully masked row (a left-padding
    position) stays finite. Everything the kernel does not cover goes to transformers' `sdpa_attention_forward`
    unchanged: another device, no mask with several queries (transformers leaves it out when SDPA's own causal
    alignment is right, e.g. the first pass into a pre-allocated cache), a float or per-head mask, a module that is
    not causal, logit soft-capping or attention sinks.
    """
    if not _covered(module, query, attention_mask, kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    batch, heads, queries, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    group = heads // kv_heads
    grouped = (query * scaling).view(batch, kv_heads, group, queries, dim)
    blocks = []
    for start in range(0, queries, QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, queries)
        reach = keys - queries + stop  # no query of this block reads a later key (causal)
        rows = grouped[:, :, :, start:stop].reshape(batch, kv_heads, group * (stop - start), dim)
        scores = torch.matmul(rows, key[:, :, :reach].transpose(2, 3)).view(batch, kv_heads, group, stop - start,
                                                                           reach)
        if attention_mask is not None:
            scores.masked_fill_(~attention_mask[:, :, None, start:stop, :reach], torch.finfo(scores.dtype).min)
        probabilities = torch.softmax(scores, dim=-1).view(batch, kv_heads, group * (stop - start), reach)
        if dropout and module.training:
            probabilities = torch.nn.functional.dropout(probabilities, p=dropout)
        blocks.append(torch.matmul(probabilities, value[:, :, :reach]).view(batch, kv_heads, group, stop - start, dim))
    output = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=3)
    return output.view(batch, heads, queries, dim).transpose(1, 2).contiguous(), None


def _covered(module, query: torch.Tensor, attention_mask: torch.Tensor | None, kwargs: dict) -> bool:
    """Whether `grouped_attention` computes this call itself (see its docstring for what it leaves to SDPA)."""
    if query.device.type != "cpu" or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        return False
    if not getattr(module, "is_causal", True) or kwargs.get("is_causal") is False:
        return False
    if attention_mask is None:
        return query.shape[2] == 1  # one new token reads every key
    return attention_mask.dtype == torch.bool and attention_mask.dim() == 4 and attention_mask.shape[1] == 1


def register() -> str:
    """Register `grouped_attention` with transformers (idempotent) and return its name for `attn_implementation`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, grouped_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    return ATTENTION
