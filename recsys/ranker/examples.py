"""Ranker training examples: every training prefix, the next item among 19 negatives, shuffled."""

from __future__ import annotations

import random
from dataclasses import dataclass

from recsys import NUM_CANDIDATES
from recsys.data import SequenceDataset


@dataclass(frozen=True)
class RankingExample:
    """One ranking task: history (oldest first), candidate item ids in letter order, and the answer's index."""

    history: tuple[int, ...]
    candidates: tuple[int, ...]
    answer_index: int

    @property
    def target(self) -> int:
        """The held-out item id."""
        return self.candidates[self.answer_index]


def training_prefixes(dataset: SequenceDataset) -> list[tuple[int, int]]:
    """(user, end) for every prefix of >= 2 training items: history = train[:end], target = train[end]."""
    return [(user, end) for user in sorted(dataset.sequences) for end in range(1, len(dataset.train(user)))]


def make_examples(dataset: SequenceDataset, max_examples: int | None = None,
                  seed: int = 0) -> list[RankingExample]:
    """Sample ranking examples from the training prefixes (all of them when `max_examples` is None).

    Negatives are random items outside the history and the target.
    """
    rng = random.Random(seed)
    prefixes = training_prefixes(dataset)
    if max_examples is not None and max_examples < len(prefixes):
        prefixes = rng.sample(prefixes, max_examples)
    histories = [dataset.train(user)[:end] for user, end in prefixes]
    targets = [dataset.train(user)[end] for user, end in prefixes]
    examples = []
    for history, target in zip(histories, targets):
        seen = set(history) | {target}
        negatives: list[int] = []
        while len(negatives) < NUM_CANDIDATES - 1:
            item = rng.randint(1, dataset.num_items)
            if item not in seen:
                negatives.append(item)
                seen.add(item)
        candidates = negatives + [target]
        rng.shuffle(candidates)
        examples.append(RankingExample(tuple(history), tuple(candidates), candidates.index(target)))
    return examples
