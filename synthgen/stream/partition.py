"""Who reads what: ranks get interleaved slices of the epoch order, workers get whole batches.

With ``W`` ranks, rank ``r`` takes ``order[start + r :: W]``, cut or padded so that every rank
gets the same count (DDP hangs otherwise). Within a rank, worker ``w`` of ``K`` takes the
rank's batches ``j`` with ``j % K == w``: a DataLoader takes batches from its workers in turn,
so the training loop sees the rank's sequence in order whatever ``K`` is. Interleaving the ranks'
sequences gives back the epoch order whatever ``W`` is: the global order depends only on
(seed, epoch) and the position, which is also what makes resume with other ``W`` or ``K`` exact.
"""

from __future__ import annotations

import math

import numpy as np


def rank_count(remaining: int, world_size: int, drop_last: bool) -> int:
    """Samples each rank yields from ``remaining`` samples: floor (drop) or ceil (pad)."""
    return remaining // world_size if drop_last else math.ceil(remaining / world_size)


def rank_indices(order: np.ndarray, start: int, rank: int, world_size: int, drop_last: bool) -> np.ndarray:
    """This rank's samples from position ``start`` of the epoch order.

    Padding repeats samples from the beginning of the epoch order, as few as needed (fewer
    than ``world_size``).

    Returns:
        (rank_count,) int64 sample indices.
    """
    remaining = order[start:]
    count = rank_count(len(remaining), world_size, drop_last)
    needed = count * world_size
    if needed > len(remaining):
        if len(order) == 0:
            return np.zeros(0, dtype=np.int64)
        extra = np.resize(order, needed - len(remaining))
        remaining = np.concatenate([remaining, extra])
    return remaining[:needed][rank::world_size]


def worker_indices(indices: np.ndarray, worker: int, num_workers: int, batch_size: int) -> np.ndarray:
    """The rank's samples that DataLoader worker ``worker`` produces: batches ``j`` with
    ``j % num_workers == worker``, in order."""
    batch_of = np.arange(len(indices)) // batch_size
    return indices[batch_of % num_workers == worker]
