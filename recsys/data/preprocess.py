"""Preprocessing as in LlamaRec: drop untitled items, iterative 5-core, dense ids, time order, leave-one-out.

Interactions with the same timestamp are ordered by item id, as in the paper's code (`TIE_ORDERS`
names the alternative): 91 of ml-latest-small's 610 test targets share their timestamp with the item
before them, so under the paper's order a model can learn that the larger id comes later.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass

from recsys.data.catalog import Catalog

MIN_INTERACTIONS = 5  # 5-core: users and items with at least this many interactions
# How interactions with equal timestamps are ordered: "item" = by dense item id (the paper's);
# "hash" = by a stable hash of the raw (user, item) ids, an order no model can read off the ids.
TIE_ORDERS = ("item", "hash")


@dataclass(frozen=True)
class Rating:
    """One raw interaction: raw user and item ids (MovieLens numbers, Amazon reviewer ids and ASINs), Unix time."""

    user: int | str
    item: int | str
    timestamp: int


@dataclass
class SequenceDataset:
    """Time-ordered item sequences per user, with leave-one-out splits.

    `sequences[u]` is user u's full sequence of dense item ids (1..num_items); the last item is
    the test target, the second-last the validation target, the rest is training data.
    """

    name: str
    sequences: dict[int, list[int]]
    catalog: Catalog

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences.values())

    def train(self, user: int) -> list[int]:
        """Training items of `user` (all but the last two)."""
        return self.sequences[user][:-2]

    def val_input(self, user: int) -> tuple[list[int], int]:
        """(history, target) for validation: train items -> second-last item."""
        seq = self.sequences[user]
        return seq[:-2], seq[-2]

    def test_input(self, user: int) -> tuple[list[int], int]:
        """(history, target) for test: train + validation items -> last item."""
        seq = self.sequences[user]
        return seq[:-1], seq[-1]

    def statistics(self) -> dict:
        """Users, items, interactions, average sequence length and density."""
        n = self.num_interactions
        return {"users": self.num_users, "items": self.num_items, "interactions": n,
                "avg_length": round(n / max(self.num_users, 1), 2),
                "density": round(n / max(self.num_users * self.num_items, 1), 4)}


def k_core(ratings: list[Rating], k: int = MIN_INTERACTIONS) -> list[Rating]:
    """Drop users and items with fewer than `k` interactions, repeatedly, until both are stable."""
    while True:
        item_counts = Counter(r.item for r in ratings)
        user_counts = Counter(r.user for r in ratings)
        kept = [r for r in ratings if item_counts[r.item] >= k and user_counts[r.user] >= k]
        if len(kept) == len(ratings):
            return kept
        ratings = kept


def tie_key(user: int | str, item: int | str) -> int:
    """A stable 64-bit hash of raw (user, item) ids (BLAKE2b, unlike Python's salted `hash`), for `tie_order="hash"`."""
    return int.from_bytes(hashlib.blake2b(f"{user}:{item}".encode(), digest_size=8).digest(), "big")


def sequences_from_ratings(ratings: list[Rating], titled_items: set, tie_order: str = "item",
                           ) -> tuple[dict[int, list[int]], dict, dict]:
    """The paper's preprocessing of raw interactions, whatever the data set.

    Interactions with items outside `titled_items` are dropped, then the iterative 5-core; users and items get
    dense ids from 1 in the order of their raw ids; each user's items are sorted by timestamp, equal timestamps by
    `tie_order` (one of `TIE_ORDERS`). Returns (dense user id -> dense item ids, oldest first; raw item id -> dense
    id; raw user id -> dense id).
    """
    if tie_order not in TIE_ORDERS:
        raise ValueError(f"tie_order must be one of {', '.join(TIE_ORDERS)}, got {tie_order!r}")
    ratings = k_core([r for r in ratings if r.item in titled_items])
    item_map = {item: i for i, item in enumerate(sorted({r.item for r in ratings}), start=1)}
    user_map = {user: u for u, user in enumerate(sorted({r.user for r in ratings}), start=1)}
    per_user: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for r in ratings:
        tie = tie_key(r.user, r.item) if tie_order == "hash" else 0
        per_user[user_map[r.user]].append((r.timestamp, tie, item_map[r.item]))
    sequences = {u: [item for _, _, item in sorted(per_user[u])] for u in sorted(per_user)}
    return sequences, item_map, user_map
