"""LRURec (Yue et al., 2024): item embeddings -> blocks of (linear recurrent unit, feed-forward) -> item scores.

The LRU's complex maps B and C are stored as real matrices ([Re B; Im B] and [Re C, -Im C]), which
is the same function as a complex linear map on a real input / taking the real part of the output,
and keeps every weight a plain float32 tensor for safetensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LRURecConfig:
    """Hyperparameters of LRURec (defaults: the paper's ML setting)."""

    num_items: int = 3650  # catalog size; item ids are 1..num_items, 0 is padding
    hidden_size: int = 64  # item embedding and block width
    state_size: int = 128  # complex state dimension of each LRU
    num_blocks: int = 2
    dropout: float = 0.2  # embedding, LRU output and feed-forward dropout
    max_len: int = 200  # longest history the model reads (older items are cut)
    r_min: float = 0.8  # |lambda| is initialised uniformly in [r_min, r_max]
    r_max: float = 0.99


def lru_parallel_scan(inputs: torch.Tensor, lamb: torch.Tensor) -> torch.Tensor:
    """Compute h_t = lamb * h_{t-1} + inputs_t (h_{-1} = 0) for all t with log2(L) doubling steps.

    inputs: (B, L, N) complex with L a power of two; lamb: (N,) complex. Returns (B, L, N).
    At the step with block size s, each block of 2s positions adds lamb^(1..s) times the last state
    of its first half to its second half.
    """
    batch, length, state = inputs.shape
    if length & (length - 1):
        raise ValueError(f"scan length must be a power of two, got {length}")
    h = inputs
    powers = lamb.unsqueeze(0)  # lamb^1 .. lamb^size, shape (size, N)
    size = 1
    while size < length:
        blocks = h.reshape(batch, length // (2 * size), 2 * size, state)
        first, second = blocks[:, :, :size], blocks[:, :, size:]
        second = second + powers * first[:, :, -1:]
        h = torch.cat([first, second], dim=2).reshape(batch, length, state)
        powers = torch.cat([powers, powers * powers[-1:]], dim=0)
        size *= 2
    return h


def lru_sequential_scan(inputs: torch.Tensor, lamb: torch.Tensor) -> torch.Tensor:
    """The same recurrence as `lru_parallel_scan`, step by step (reference for tests); any length."""
    h = torch.zeros_like(inputs[:, 0])
    states = []
    for t in range(inputs.shape[1]):
        h = lamb * h + inputs[:, t]
        states.append(h)
    return torch.stack(states, dim=1)


class LRULayer(nn.Module):
    """Linear recurrent unit: h_t = lambda h_{t-1} + gamma B x_t; y_t = LayerNorm(x_t + Dropout(Re(C h_t)))."""

    def __init__(self, config: LRURecConfig):
        super().__init__()
        n = config.state_size
        radius = torch.sqrt(torch.rand(n) * (config.r_max**2 - config.r_min**2) + config.r_min**2)
        phase = torch.rand(n) * 2 * math.pi
        nu_log = torch.log(-torch.log(radius))  # |lambda| = exp(-exp(nu_log))
        theta_log = torch.log(phase)  # arg(lambda) = exp(theta_log)
        gamma_log = torch.log(torch.sqrt(1 - radius**2))
        self.params_log = nn.Parameter(torch.stack([nu_log, theta_log, gamma_log]))
        self.in_proj = nn.Linear(config.hidden_size, 2 * n)  # [Re(Bx + b); Im(Bx + b)]
        self.out_proj = nn.Linear(2 * n, config.hidden_size)  # Re(C h + c) from [Re h; Im h]
        self.dropout = nn.Dropout(config.dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size)

    def recurrence_inputs(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (gamma * B x, lambda); inputs at padded positions (mask False) are zeroed so they never leak."""
        nu, theta, gamma = torch.exp(self.params_log)
        lamb = torch.exp(torch.complex(-nu, theta))
        re, im = (self.in_proj(x) * mask.unsqueeze(-1)).chunk(2, dim=-1)
        return torch.complex(re * gamma, im * gamma), lamb

    def readout(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """y = LayerNorm(x + Dropout(Re(C h)))."""
        return self.layer_norm(x + self.dropout(self.out_proj(torch.cat([h.real, h.imag], dim=-1))))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, L, H) with L a power of two, mask: (B, L) bool -> (B, L, H), via the parallel scan."""
        inputs, lamb = self.recurrence_inputs(x, mask)
        return self.readout(x, lru_parallel_scan(inputs, lamb))

    def forward_sequential(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Same as `forward` with the step-by-step recurrence (any L)."""
        inputs, lamb = self.recurrence_inputs(x, mask)
        return self.readout(x, lru_sequential_scan(inputs, lamb))


class FeedForward(nn.Module):
    """Position-wise feed-forward H -> 4H -> H with GELU, dropout, residual and LayerNorm."""

    def __init__(self, config: LRURecConfig):
        super().__init__()
        self.w_1 = nn.Linear(config.hidden_size, 4 * config.hidden_size)
        self.w_2 = nn.Linear(4 * config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layer_norm = nn.LayerNorm(config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, H)."""
        return self.layer_norm(x + self.dropout(self.w_2(self.dropout(F.gelu(self.w_1(x))))))


class LRUBlock(nn.Module):
    """One LRU layer followed by a feed-forward layer."""

    def __init__(self, config: LRURecConfig):
        super().__init__()
        self.lru_layer = LRULayer(config)
        self.feed_forward = FeedForward(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, sequential: bool = False) -> torch.Tensor:
        """(B, L, H) -> (B, L, H)."""
        x = self.lru_layer.forward_sequential(x, mask) if sequential else self.lru_layer(x, mask)
        return self.feed_forward(x)


class LRURec(nn.Module):
    """LRURec: scores every catalog item as the next item at every position of a left-padded history."""

    def __init__(self, config: LRURecConfig):
        super().__init__()
        self.config = config
        self.item_embedding = nn.Embedding(config.num_items + 1, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.embedding_layer_norm = nn.LayerNorm(config.hidden_size)
        self.blocks = nn.ModuleList([LRUBlock(config) for _ in range(config.num_blocks)])
        self.item_bias = nn.Parameter(torch.zeros(config.num_items + 1))
        self._init_weights()

    def _init_weights(self) -> None:
        """Truncated normal (std 0.02, clipped at +-0.04) for all but LayerNorm and the LRU's lambda/gamma."""
        for name, param in self.named_parameters():
            if "layer_norm" not in name and "params_log" not in name:
                nn.init.trunc_normal_(param, std=0.02, a=-0.04, b=0.04)

    def hidden_states(self, item_ids: torch.Tensor, sequential: bool = False) -> torch.Tensor:
        """item_ids: (B, L) left-padded with 0 -> (B, L, H) outputs of the last block.

        The parallel scan needs a power-of-two length, so inputs are left-padded further and the
        padding is cut off again.
        """
        length = item_ids.shape[1]
        padded_length = 1 << max(length - 1, 0).bit_length()
        if not sequential and padded_length != length:
            item_ids = F.pad(item_ids, (padded_length - length, 0))
        mask = item_ids > 0
        x = self.embedding_layer_norm(self.embedding_dropout(self.item_embedding(item_ids)))
        for block in self.blocks:
            x = block(x, mask, sequential=sequential)
        return x[:, -length:]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., num_items + 1) scores against the tied item embeddings plus a per-item bias."""
        return hidden @ self.item_embedding.weight.T + self.item_bias

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, num_items + 1) next-item scores at every position."""
        return self.logits(self.hidden_states(item_ids))

    def loss(self, item_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over all items at every non-padded position; labels (B, L), 0 = ignore."""
        hidden = self.hidden_states(item_ids)
        keep = labels > 0  # score only positions with a target: the full-catalog softmax dominates the cost
        return F.cross_entropy(self.logits(hidden[keep]), labels[keep])

    @torch.no_grad()
    def score_next(self, histories: list[list[int]]) -> torch.Tensor:
        """Next-item scores for each history (B, num_items + 1); padding and history items are -inf."""
        batch = pad_histories(histories, self.config.max_len).to(self.item_bias.device)
        scores = self.logits(self.hidden_states(batch)[:, -1])
        scores[:, 0] = float("-inf")
        for row, history in enumerate(histories):
            if history:
                scores[row, torch.as_tensor(sorted(set(history)), device=scores.device)] = float("-inf")
        return scores

    @torch.no_grad()
    def retrieve(self, histories: list[list[int]], k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k unseen items for each history: (item ids (B, k), scores (B, k)), best first."""
        scores = self.score_next(histories)
        top = torch.topk(scores, min(k, self.config.num_items), dim=-1)
        return top.indices, top.values


def pad_histories(histories: list[list[int]], max_len: int) -> torch.Tensor:
    """Keep the last `max_len` items of each history and left-pad with 0 to a (B, L) long tensor."""
    cut = [list(h)[-max_len:] for h in histories]
    length = max(1, max(len(h) for h in cut))
    return torch.tensor([[0] * (length - len(h)) + h for h in cut], dtype=torch.long)
