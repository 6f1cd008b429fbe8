"""Filling one batch: each sample read straight into its row of the batch tensors.

Why batches: a DataLoader that collates single samples copies every byte once more
(``torch.stack``), about a third of a warm read pass; here each sample is read (raw chunks) or
decompressed (label maps) directly into its row, one ranged read per sample and field, with each
shard's index table read once per process (``Dataset.read_sample_into``). Unreadable shards
raise, or with ``on_error="skip"`` are warned about once and their samples replaced by readable
ones of the same batch, so every consumer still yields the same number of samples.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from synthgen.errors import SynthgenError
from synthgen.store.reader import Dataset
from synthgen.stream.crop import apply_crop

ON_ERROR = ("raise", "skip")


def fill_batch(dataset: Dataset, indices: Sequence[int], out: dict[str, np.ndarray], on_error: str,
               skipped: set[int], crops: Sequence[np.ndarray] | None = None,
               crop: tuple[int, int, int] | None = None) -> list[int]:
    """Read samples ``indices`` into the rows of ``out`` ({field: (B, *shape) array}); the
    fields are read concurrently (file reads and blosc decompression release the GIL, so label
    maps decode while a view is read; a labels field's rows are split over two threads).

    Args:
        dataset: the open dataset.
        indices: the batch's global sample indices, in order.
        out: destination arrays; with ``crops``, rows have the cropped shape.
        on_error: "raise" or "skip" (see the module docstring).
        skipped: shards already found unreadable (updated in place).
        crops: per-sample crop corners, or None for whole volumes.
        crop: the crop size (with ``crops``).

    Returns:
        The indices actually in each row (a stand-in where a shard was skipped).
    """
    shard_size = dataset.info.shard_size
    rows = [row for row, index in enumerate(indices) if index // shard_size not in skipped]

    def read_field(task: tuple[str, list[int]]) -> dict[int, SynthgenError]:
        field, task_rows = task
        batch, errors = out[field], {}
        spec = dataset.info.schema[field]
        scratch = np.empty(spec.shape, dtype=spec.dtype) if crops is not None else None
        for row in task_rows:
            try:
                if scratch is None:
                    dataset.read_sample_into(field, indices[row], batch[row])
                else:
                    dataset.read_sample_into(field, indices[row], scratch)
                    batch[row] = apply_crop(scratch, crops[row], crop)
            except SynthgenError as err:
                if on_error == "raise":
                    raise
                errors[row] = err
        return errors

    # compressed fields (label maps) cost a decompression per sample: two tasks share their rows
    tasks = [(field, rows[part::parts]) for field in out
             for parts in [2 if dataset.info.schema[field].kind == "labels" else 1] for part in range(parts)]
    errors: dict[int, SynthgenError] = {}
    for field_errors in _field_pool().map(read_field, tasks):
        errors.update(field_errors)
    for row, err in sorted(errors.items()):
        if indices[row] // shard_size not in skipped:
            warnings.warn(f"skipping unreadable {err}", RuntimeWarning, stacklevel=2)
            skipped.add(indices[row] // shard_size)
    failed = [row for row in range(len(indices)) if row not in rows or row in errors]
    readable = [row for row in range(len(indices)) if row not in failed]
    if failed and not readable:
        raise SynthgenError(f"every sample of a batch is in an unreadable shard (shards {sorted(skipped)}); "
                            f"run `synthgen verify {dataset.path}`")
    actual = list(indices)
    for n, row in enumerate(failed):
        source = readable[n % len(readable)]
        for batch in out.values():
            batch[row] = batch[source]
        actual[row] = actual[source]
    return actual


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _field_pool() -> ThreadPoolExecutor:
    """This process's thread pool for field reads (threads do not survive a fork: one per pid)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="synthgen-read"))
    return _POOL[1]
