"""Filling batches: each sample read straight into its row of the batch tensors, batches read
ahead in threads.

Why batches: a DataLoader that collates single samples copies every byte once more
(``torch.stack``), about a third of a warm read pass; here each sample is read (raw chunks) or
decompressed (label maps) directly into its row, one ranged read per sample and field, with each
shard's index table read once per process (``Dataset.read_sample_into``). Unreadable shards
raise, or with ``on_error="skip"`` are warned about once and their unreadable samples replaced
by readable ones of the same batch, so every consumer still yields the same number of samples.

Why read-ahead: file reads, crc32c checks and blosc decompression release the GIL, so two batches
read in two threads proceed in parallel (and the next batch is read while the consumer works on
this one). Whole batches per thread keep both threads busy even at batch size 1, where splitting
one sample's fields over threads left one waiting for the other. On a machine whose cores are
busy with other work the second thread gains nothing (measured in benchmarks/README.md, "Stream
throughput").
"""

from __future__ import annotations

import collections
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TypeVar

import numpy as np

from synthgen.errors import SynthgenError
from synthgen.store.reader import Dataset
from synthgen.store.shard_reader import aligned_empty
from synthgen.stream.crop import apply_crop

ON_ERROR = ("raise", "skip")
READ_AHEAD = 2  # batches in flight while the consumer waits for the oldest
Item = TypeVar("Item")
Result = TypeVar("Result")


def fill_batch(dataset: Dataset, indices: Sequence[int], out: dict[str, np.ndarray], on_error: str,
               crops: Sequence[np.ndarray] | None = None, crop: tuple[int, int, int] | None = None
               ) -> tuple[list[int], dict[int, SynthgenError]]:
    """Read samples ``indices`` into the rows of ``out`` ({field: (B, *shape) array}) in the
    calling thread; with ``on_error="skip"`` a row that cannot be read gets a readable row's
    sample instead (decided per sample, so the result does not depend on which batch met a
    damaged shard first when batches are read concurrently).

    Args:
        dataset: the open dataset.
        indices: the batch's global sample indices, in order.
        out: destination arrays; with ``crops``, rows have the cropped shape.
        on_error: "raise" or "skip" (see the module docstring).
        crops: per-sample crop corners, or None for whole volumes.
        crop: the crop size (with ``crops``).

    Returns:
        The indices actually in each row (a stand-in where a sample was unreadable), and the
        errors of the unreadable rows ({row: error}, for :func:`warn_skipped`).
    """
    errors: dict[int, SynthgenError] = {}
    for field, batch in out.items():
        scratch = _scratch(dataset.info.schema[field].shape, batch.dtype) if crops is not None else None
        for row, index in enumerate(indices):
            if row in errors:
                continue
            try:
                if scratch is None:
                    dataset.read_sample_into(field, index, batch[row])
                else:
                    dataset.read_sample_into(field, index, scratch)
                    batch[row] = apply_crop(scratch, crops[row], crop)
            except SynthgenError as err:
                if on_error == "raise":
                    raise
                errors[row] = err
    failed = sorted(errors)
    readable = [row for row in range(len(indices)) if row not in errors]
    if failed and not readable:
        shards = sorted({indices[row] // dataset.info.shard_size for row in failed})
        raise SynthgenError(f"every sample of a batch is unreadable (shards {shards}); "
                            f"run `synthgen verify {dataset.path}`")
    actual = list(indices)
    for n, row in enumerate(failed):
        source = readable[n % len(readable)]
        for batch in out.values():
            batch[row] = batch[source]
        actual[row] = actual[source]
    return actual, errors


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """This thread's page-aligned whole-volume buffer of ``shape`` and ``dtype`` for reads that
    are cropped into their rows: allocated once per reader thread, not once per batch."""
    arrays = _SCRATCH.__dict__.setdefault("arrays", {})
    key = (tuple(shape), np.dtype(dtype).str)
    if key not in arrays:
        arrays[key] = aligned_empty(key[0], dtype)
    return arrays[key]


def warn_skipped(indices: Sequence[int], errors: dict[int, SynthgenError], shard_size: int,
                 warned: set[int]) -> None:
    """Warn once per damaged shard (``warned``: the shards warned about so far, updated) about
    a batch's ``errors`` from :func:`fill_batch`; called in the consumer's thread, in order."""
    for row, err in sorted(errors.items()):
        if indices[row] // shard_size not in warned:
            warnings.warn(f"skipping unreadable {err}", RuntimeWarning, stacklevel=3)
            warned.add(indices[row] // shard_size)


def read_ahead(read: Callable[[Item], Result], items: Iterable[Item]) -> Iterator[Result]:
    """``read(item)`` for every item, in order, with up to READ_AHEAD reads in flight in this
    process's reader threads. An exception surfaces when its item's turn comes; reads still in
    flight when the consumer stops early are finished (or cancelled) before this returns."""
    pool = _reader_pool()
    pending: collections.deque[Future[Result]] = collections.deque()
    try:
        for item in items:
            pending.append(pool.submit(read, item))
            if len(pending) == READ_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        wait(pending)


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _reader_pool() -> ThreadPoolExecutor:
    """This process's reader threads (threads do not survive a fork: one pool per pid)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="synthgen-read"))
    return _POOL[1]
