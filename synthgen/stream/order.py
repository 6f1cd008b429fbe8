"""The sample order of an epoch: a pure function of (committed shards, seed, epoch).

One global sequence per epoch, independent of how many ranks and workers consume it: the
shards are shuffled, cut into blocks of ``block_shards`` consecutive shards, and the samples of
each block are shuffled together. A block is the unit of read locality: a consumer's next
samples always come from the few shards of one block.
"""

from __future__ import annotations

import numpy as np

from synthgen.store.info import DatasetInfo


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The random stream of one epoch's order (independent of sample generation's streams)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), 0x5EED]))


def epoch_order(info: DatasetInfo, shards: list[int], seed: int, epoch: int, shuffle: bool = True,
                block_shards: int = 4) -> np.ndarray:
    """Global sample indices of the epoch, in consumption order.

    Args:
        info: the dataset's identity (shard size and sample count).
        shards: the committed shard ids this epoch reads (sorted or not; the result does not
            depend on their order).
        seed, epoch: the order's randomness.
        shuffle: False gives the samples of ``shards`` in index order.
        block_shards: shards whose samples are shuffled together.

    Returns:
        (N,) int64 array of sample indices, each committed sample exactly once.
    """
    shards = sorted(int(k) for k in shards)
    if not shuffle:
        return _samples_of(info, shards)
    rng = epoch_rng(seed, epoch)
    shuffled = [shards[i] for i in rng.permutation(len(shards))]
    blocks = []
    for start in range(0, len(shuffled), block_shards):
        samples = _samples_of(info, shuffled[start:start + block_shards])
        blocks.append(samples[rng.permutation(len(samples))])
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)


def sample_count(info: DatasetInfo, shards: list[int]) -> int:
    """Samples in ``shards`` (what one epoch of them holds)."""
    return sum(stop - start for start, stop in (info.shard_range(int(k)) for k in shards))


def _samples_of(info: DatasetInfo, shards: list[int]) -> np.ndarray:
    ranges = [np.arange(*info.shard_range(k), dtype=np.int64) for k in shards]
    return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)
