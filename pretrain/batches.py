"""The loop's data path: the held-out split, the crop, and an endless iterator of training
batches that advances epochs and knows where to resume.

Validation reads the last ``data.val_shards`` committed shards, which training never reads.
With no held-out shards the training stream re-lists committed shards at every epoch (a dataset
still being generated is picked up as it grows); with held-out shards the training shards are
those committed at the start of the run.
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from synthgen.errors import SynthgenError
from synthgen.store import Dataset
from synthgen.stream import ShardStream
from synthgen.stream.worker_errors import worker_message


@dataclasses.dataclass
class Split:
    """Shard ids for training (None: every committed shard, re-listed each epoch) and validation."""

    train: list[int] | None
    val: list[int]


def split_shards(dataset: Dataset, val_shards: int) -> Split:
    """Hold out the last ``val_shards`` committed shards of ``dataset``."""
    committed = dataset.committed
    if not committed:
        raise SynthgenError(f"{dataset.path} has no committed shards yet; run `synthgen generate` first")
    if val_shards == 0:
        return Split(None, [])
    if val_shards >= len(committed):
        raise SynthgenError(f"data.val_shards={val_shards} leaves no training data: {dataset.path} has "
                            f"{len(committed)} committed shard(s); lower data.val_shards (0: no validation)")
    return Split(committed[:-val_shards], committed[-val_shards:])


def resolve_crop(crop: tuple[int, int, int] | None, dataset: Dataset) -> tuple[int, int, int] | None:
    """The crop to stream with (None for whole volumes; a crop equal to the volume is none).

    Raises:
        SynthgenError: the crop is larger than the dataset's volumes (naming both sizes).
    """
    shape = tuple(int(n) for n in dataset.info.shape[-3:])
    if crop is None or tuple(crop) == shape:
        return None
    if any(c > n for c, n in zip(crop, shape)):
        raise SynthgenError(f"data.crop {tuple(crop)} is larger than the volumes of {dataset.path} {shape}; "
                            f"lower data.crop or set it to null (whole volumes)")
    return tuple(crop)  # type: ignore[return-value]


def stream_fields(fields: Sequence[str], dataset: Dataset) -> list[str]:
    """The stored fields to read for a recipe's ``fields``: those stored, or every stored field
    when some are derived on the device (they are rendered from the stored ones).

    Raises:
        SynthgenError: a field the dataset neither stores nor derives.
    """
    stored, derived = dataset.info.schema, dataset.derived_schema
    missing = [f for f in fields if f not in stored and f not in derived]
    if missing:
        raise SynthgenError(f"{dataset.path} has no field {', '.join(missing)} (it has "
                            f"{', '.join([*stored, *derived])}); use a dataset made by an engine this recipe reads")
    if any(f in derived for f in fields):
        return list(stored)
    return [f for f in fields if f in stored]


class TrainBatches(Iterator[dict[str, torch.Tensor]]):
    """Endless training batches (CPU) from ``stream``: a DataLoader per epoch (so its workers see
    the epoch and resume position), ``set_epoch`` when an epoch is exhausted, and the count of
    samples this rank consumed in the current epoch for :meth:`state_dict`.

    Args:
        stream: the training stream.
        workers, prefetch, pin_memory: DataLoader settings.
    """

    def __init__(self, stream: ShardStream, workers: int, prefetch: int, pin_memory: bool) -> None:
        self.stream = stream
        self.workers, self.prefetch, self.pin_memory = workers, prefetch, pin_memory
        self.consumed = 0
        self._iterator: Iterator[dict[str, torch.Tensor]] | None = None

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def __next__(self) -> dict[str, torch.Tensor]:
        empty = 0
        while True:
            if self._iterator is None:
                self._iterator = iter(self._loader())
            try:
                batch = next(self._iterator)
            except SynthgenError as err:
                raise SynthgenError(worker_message(str(err))) from None
            except StopIteration:
                self._iterator = None
                empty = empty + 1 if self.consumed == 0 else 0
                if empty > 1:
                    raise SynthgenError(f"an epoch of {self.stream.path} gives this rank no samples (too few "
                                        f"training samples for {self.stream.rank_world[1]} rank(s)); use a "
                                        f"larger dataset or fewer held-out shards") from None
                self.stream.set_epoch(self.stream.epoch + 1)
                self.consumed = 0
                continue
            self.consumed += int(batch["index"].shape[0])
            return batch

    def state_dict(self) -> dict[str, Any]:
        """Where the next batch comes from (the stream's state at the consumed count)."""
        return self.stream.state_dict(self.consumed)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.close()
        self.stream.load_state_dict(state)
        self.consumed = 0

    def close(self) -> None:
        """Drop the current DataLoader iterator (its workers exit)."""
        self._iterator = None

    def _loader(self) -> DataLoader:
        # an explicit generator: creating the iterator then draws from it, not from the global RNG
        return DataLoader(self.stream, batch_size=None, num_workers=self.workers, pin_memory=self.pin_memory,
                          prefetch_factor=self.prefetch if self.workers else None, generator=torch.Generator(),
                          worker_init_fn=_ignore_sigint if self.workers else None)


def _ignore_sigint(_worker_id: int) -> None:
    """Ctrl-C reaches the whole process group: workers keep reading while the main process
    finishes its step and saves a checkpoint (they exit with it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def validation_batches(stream: ShardStream, count: int) -> Iterator[dict[str, torch.Tensor]]:
    """The first ``count`` batches of the held-out stream (the same ones every time)."""
    loader = DataLoader(stream, batch_size=None, num_workers=0, generator=torch.Generator())
    return itertools.islice(loader, count)
