"""Reading a consumer's samples in its order, a few storage calls per shard, not one per sample.

A consumer's sample list is cut into segments (its samples from one block of shards). Per
segment and shard, the needed samples are read as runs of consecutive indices, one storage call
per run and field, merging runs separated by small gaps (reading a few unneeded samples costs
less than another call: each Zarr call costs ~1 ms, and zarr's orthogonal selection is far
slower still). Unreadable shards raise, or with ``on_error="skip"`` are warned about once and
their samples replaced by readable ones from the same segment, so every consumer still yields
the same number of samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from synthgen.errors import SynthgenError
from synthgen.store.reader import Dataset

ON_ERROR = ("raise", "skip")


def read_in_order(dataset: Dataset, indices: np.ndarray, fields: list[str], on_error: str = "raise",
                  segment_shards: int = 4, max_gap: int = 2, skipped: set[int] | None = None
                  ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield ``(index, {field: array})`` for every index of ``indices``, in that order (with
    ``on_error="skip"``, a sample of an unreadable shard comes as another readable index).

    Args:
        dataset: the open dataset.
        indices: (N,) global sample indices (repeats allowed).
        fields: stored fields to read.
        on_error: "raise" or "skip" (see the module docstring).
        segment_shards: a segment ends when it would touch more shards than this.
        max_gap: unneeded samples read to join two runs of one shard.
        skipped: shards already found unreadable (updated in place).
    """
    skipped = set() if skipped is None else skipped
    for segment in _segments(indices, dataset.info.shard_size, segment_shards):
        loaded, replacement = _load_segment(dataset, segment, fields, on_error, max_gap, skipped)
        for index in segment.tolist():
            index = replacement.get(index, index)
            yield index, loaded[index]


def _segments(indices: np.ndarray, shard_size: int, segment_shards: int) -> Iterator[np.ndarray]:
    start, shards = 0, set()
    for position, index in enumerate(indices):
        shard = int(index) // shard_size
        if shard not in shards and len(shards) == segment_shards:
            yield indices[start:position]
            start, shards = position, set()
        shards.add(shard)
    if start < len(indices):
        yield indices[start:]


def _load_segment(dataset: Dataset, segment: np.ndarray, fields: list[str], on_error: str,
                  max_gap: int, skipped: set[int]
                  ) -> tuple[dict[int, dict[str, np.ndarray]], dict[int, int]]:
    """The segment's readable samples, and a readable stand-in for each unreadable one."""
    shard_size = dataset.info.shard_size
    loaded: dict[int, dict[str, np.ndarray]] = {}
    unreadable = []
    for shard in sorted({int(i) // shard_size for i in segment}):
        needed = np.unique(segment[segment // shard_size == shard])
        if shard in skipped:
            unreadable.extend(needed.tolist())
            continue
        try:
            for start, stop in _runs(needed, max_gap):
                run = dataset.read_range(start, stop, fields)
                for index in needed[(needed >= start) & (needed < stop)]:
                    loaded[int(index)] = {f: run[f][int(index) - start] for f in fields}
        except SynthgenError as err:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping unreadable {err}", RuntimeWarning, stacklevel=2)
            skipped.add(shard)
            unreadable.extend(needed.tolist())
    if unreadable and not loaded:
        raise SynthgenError(f"every shard of a read segment is unreadable (shards {sorted(skipped)}); "
                            f"run `synthgen verify {dataset.path}`")
    readable = sorted(loaded)
    return loaded, {index: readable[n % len(readable)] for n, index in enumerate(unreadable)}


def _runs(needed: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Sorted unique indices -> [start, stop) runs, joining gaps of at most ``max_gap``."""
    runs = []
    start = previous = int(needed[0])
    for index in needed[1:].tolist():
        if index - previous > max_gap + 1:
            runs.append((start, previous + 1))
            start = index
        previous = index
    runs.append((start, previous + 1))
    return runs
