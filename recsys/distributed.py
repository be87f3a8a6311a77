"""Data-parallel scoring: each process scores its share of the rows, every process gets them all back in order.

Under `accelerate launch --num_processes N` (several GPUs, or CPU processes with gloo) `accelerate`'s
`PartialState` names this process and the others; run plainly, it is the only process and nothing is
sharded or gathered. Rows are dealt round-robin (row i to process i mod N), so every process gets
rows of every length and finishes at about the same time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def process_share(count: int) -> tuple[list[int], int, int]:
    """(this process's row indices of range(count), process index, number of processes)."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # without a GPU, processes meet on gloo
    return list(range(state.process_index, count, state.num_processes)), state.process_index, state.num_processes


def sharded(count: int, score: Callable[[list[int]], list[torch.Tensor]]) -> list[torch.Tensor]:
    """`score(indices)` -> one tensor per index, run on this process's share of range(count); returns the tensors of
    all `count` rows in order, on the CPU, on every process."""
    mine, _, processes = process_share(count)
    results = [r.cpu() for r in score(mine)]
    if processes == 1:
        return results
    from accelerate.utils import gather_object

    by_index = dict(gather_object(list(zip(mine, results))))
    return [by_index[i] for i in range(count)]


def is_main_process() -> bool:
    """Whether this process prints and writes results (the only one when run plainly)."""
    return process_share(0)[1] == 0
