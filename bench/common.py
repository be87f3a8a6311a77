"""Helpers shared by the bench scripts (and by the tests that serve the app): a free port, the served ranker with its
machine record, the order-invariance agreement and the one-line machine summary.

Bench scripts run as `python bench/x.py`, so bench/ is on their path: `from common import ...`. The tests import
`bench.common` from the repository root. Heavy imports stay inside the functions that need them.
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_served_ranker(adapter: str, base_model: str | None, precision: str):
    """(RankerArtefacts, model, tokenizer, machine record) of the ranker folder `adapter` ('none': the base model with
    no adapter) on `base_model` with CPU weights in `precision`; the machine record names the model's dtype."""
    from recsys.machine import machine_record
    from recsys.ranker.artefacts import RankerArtefacts
    from recsys.ranker.model import RankerLoadConfig, load_ranker

    ranker = RankerArtefacts.load(None if adapter == "none" else adapter)
    model, tokenizer = load_ranker(RankerLoadConfig(base_model=base_model, adapter=ranker.adapter,
                                                    cpu_precision=precision))
    return ranker, model, tokenizer, machine_record(next(model.parameters()).dtype)


def order_agreement(in_order, reversed_order) -> dict[str, float]:
    """Mean film-by-film and letter-by-letter Spearman, and top-film agreement, of (N, K) scores of the candidates
    listed in the retriever's order and listed reversed (both tensors index the films in the retriever's order)."""
    from recsys.metrics import spearman

    film = [spearman(a, b) for a, b in zip(in_order, reversed_order)]
    letter = [spearman(a, b.flip(0)) for a, b in zip(in_order, reversed_order)]  # letter j showed film K-1-j
    top = (in_order.argmax(dim=1) == reversed_order.argmax(dim=1)).float().mean().item()
    return {"film_by_film_spearman": round(sum(film) / len(film), 3),
            "letter_by_letter_spearman": round(sum(letter) / len(letter), 3), "same_top_film": round(top, 3)}


def machine_summary(machine: dict) -> str:
    """The short machine line printed under a quality table: CPU, dtype, torch threads and load at the start."""
    return (f"machine: {machine['cpu_model']}, {machine['dtype']}, {machine['torch_threads']} threads, "
            f"load {machine['load_average_1min_at_start']}")
