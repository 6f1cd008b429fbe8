"""Filling one batch: each sample read straight into its row of the batch tensors.

Why batches: a DataLoader that collates single samples copies every byte once more
(``torch.stack``), about a third of a warm read pass; here each sample is read (raw chunks) or
decompressed (label maps) directly into its row, one ranged read per sample and field, with each
shard's index table read once per process (``Dataset.read_sample_into``). Unreadable shards
raise, or with ``on_error="skip"`` are warned about once and their samples replaced by readable
ones of the same batch, so every consumer still yields the same number of samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from synthgen.errors import SynthgenError
from synthgen.store.reader import Dataset
from synthgen.stream.crop import apply_crop

ON_ERROR = ("raise", "skip")


def fill_batch(dataset: Dataset, indices: Sequence[int], out: dict[str, np.ndarray], on_error: str,
               skipped: set[int], crops: Sequence[np.ndarray] | None = None,
               crop: tuple[int, int, int] | None = None) -> list[int]:
    """Read samples ``indices`` into the rows of ``out`` ({field: (B, *shape) array}).

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
    scratch = {}
    failed = []
    for row, index in enumerate(indices):
        if index // shard_size in skipped:
            failed.append(row)
            continue
        try:
            for field, batch in out.items():
                if crops is None:
                    dataset.read_sample_into(field, index, batch[row])
                    continue
                if field not in scratch:
                    spec = dataset.info.schema[field]
                    scratch[field] = np.empty(spec.shape, dtype=spec.dtype)
                dataset.read_sample_into(field, index, scratch[field])
                batch[row] = apply_crop(scratch[field], crops[row], crop)
        except SynthgenError as err:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping unreadable {err}", RuntimeWarning, stacklevel=2)
            skipped.add(index // shard_size)
            failed.append(row)
    actual = list(indices)
    readable = [row for row in range(len(indices)) if row not in set(failed)]
    if failed and not readable:
        raise SynthgenError(f"every sample of a batch is in an unreadable shard (shards {sorted(skipped)}); "
                            f"run `synthgen verify {dataset.path}`")
    for n, row in enumerate(failed):
        source = readable[n % len(readable)]
        for batch in out.values():
            batch[row] = batch[source]
        actual[row] = actual[source]
    return actual
