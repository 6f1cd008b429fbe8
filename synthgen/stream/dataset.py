"""ShardStream: a torch IterableDataset over a synthgen dataset's committed shards.

Deterministic (the order depends only on seed, epoch and the committed shards), identical for
any number of ranks and DataLoader workers (see ``partition``), equal counts on every rank,
exact mid-epoch resume also after a change of ranks or workers, whole runs of samples per
storage call, and a clear error (or a warning and a stand-in sample) for a damaged shard.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from synthgen.engines.base import FieldSpec
from synthgen.errors import SynthgenError
from synthgen.store.reader import Dataset, open_dataset
from synthgen.stream.crop import crop_start
from synthgen.stream.order import epoch_order, sample_count
from synthgen.stream.partition import rank_count, rank_indices, worker_indices
from synthgen.stream.reading import ON_ERROR, fill_batch, read_ahead, warn_skipped

STATE_VERSION = 1


def _empty_batch(count: int, shape: tuple[int, ...], dtype: torch.dtype, shared: bool) -> torch.Tensor:
    """An uninitialised (count, *shape) tensor, allocated in shared memory inside a DataLoader
    worker (as torch's own collate does) so that handing it to the main process copies nothing."""
    if not shared:
        return torch.empty((count, *shape), dtype=dtype)
    template = torch.empty(0, dtype=dtype)
    return template.new(template._typed_storage()._new_shared(count * math.prod(shape))).view(count, *shape)


class ShardStream(IterableDataset):
    """Stream the samples of a synthgen dataset (path or fsspec URL) into training, as batches.
    For a ``generate:`` spec (nothing stored) batches hold only ``"index"`` (and
    ``"crop_start"``, ``"crop_size"``), and :class:`DeviceStage` generates the samples on the
    training device.

    The stream yields whole batches, each sample read straight into its row (no collate copy),
    in shared memory inside DataLoader workers: use ``DataLoader(stream, batch_size=None,
    num_workers=K, pin_memory=True)``, or iterate it directly. Two reader threads per process
    read the next batches while the current one is consumed (``reading.READ_AHEAD``), which is
    what keeps even batch size 1 at memory speed without workers. ``len(stream)`` is this
    rank's number of batches.

    Args:
        path: dataset path or URL.
        fields: stored fields to yield (default: all). Each batch is ``{field: (B, *shape)
            tensor, "index": (B,) int64}`` (plus ``"crop_start"`` and ``"crop_size"``, both
            (B, 3) int64, when a crop is deferred, see below).
        seed: the order's seed (independent of the dataset's generation seed).
        shuffle: shuffle shards and samples within blocks of ``block_shards`` shards.
        rank, world_size: this process's rank; default from ``torch.distributed`` when it is
            initialised, else 0 of 1.
        drop_last: every rank yields the same count: drop the remainder (True) or pad with
            repeats of the epoch's first samples (False).
        crop: optional (d, h, w) random crop, one box per sample from (seed, epoch, index). For
            datasets whose views are derived on read (``--store labels``) the crop is deferred to
            :class:`DeviceStage` (views must be rendered from the whole label map): batches then
            hold the whole volumes, ``"crop_start"`` and ``"crop_size"``, all the stage needs.
        on_error: "raise" (default: a damaged or missing shard, or a sample failing its
            chunk's crc32c, stops the run with a message naming the shard, the sample and
            ``synthgen verify``) or "skip" (a warning per damaged shard; each unreadable sample
            is replaced by a readable one of the same batch, keeping the counts equal).
        batch_size: samples per batch (per rank); DataLoader workers take whole batches in turn,
            which is what keeps the order independent of the number of workers.
        float32: yield float fields as float32 instead of the stored float16.
        block_shards: shards whose samples are shuffled together (read locality).
        shards: read only these shard ids (default: all committed at each ``set_epoch``).
    """

    def __init__(self, path: str, fields: Sequence[str] | None = None, seed: int = 0, shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None, drop_last: bool = True,
                 crop: Sequence[int] | None = None, on_error: str = "raise", batch_size: int = 1,
                 float32: bool = False, block_shards: int = 4, shards: Sequence[int] | None = None) -> None:
        super().__init__()
        self.path = str(path)
        dataset = open_dataset(self.path)
        info = dataset.info
        self.fields = list(info.schema) if fields is None else list(fields)
        derived = [f for f in self.fields if f in dataset.derived_schema]
        if derived:
            raise SynthgenError(f"field(s) {', '.join(derived)} of {self.path} are not stored but rendered on "
                                f"the training device by DeviceStage; leave them out of fields")
        unknown = [f for f in self.fields if f not in info.schema]
        if unknown:
            raise SynthgenError(f"unknown field(s) {', '.join(unknown)}; {self.path} stores "
                                f"{', '.join(info.schema) or 'nothing'}")
        if on_error not in ON_ERROR:
            raise SynthgenError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        if batch_size < 1 or block_shards < 1:
            raise SynthgenError(f"batch_size and block_shards must be >= 1, got {batch_size}, {block_shards}")
        if crop is not None:
            crop = tuple(int(c) for c in crop)
            if len(crop) != 3 or not all(0 < c <= n for c, n in zip(crop, info.shape)):
                raise SynthgenError(f"crop must be 3 sizes within the volume {tuple(info.shape)}, got {crop}")
        if (rank is None) != (world_size is None) or (world_size is not None and not 0 <= rank < world_size):
            raise SynthgenError(f"give both rank and world_size with 0 <= rank < world_size, got {rank}, {world_size}")
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.crop, self.on_error, self.batch_size = crop, on_error, int(batch_size)
        self.float32, self.block_shards = bool(float32), int(block_shards)
        self.defer_crop = crop is not None and bool(dataset.derived_schema)
        self._rank, self._world_size = rank, world_size
        self._fixed_shards = None if shards is None else sorted(int(k) for k in shards)
        self._dataset: Dataset | None = dataset
        self._dataset_pid = os.getpid()
        self.epoch = 0
        self._start = 0
        self._resolve_rank_world()
        self._shards = self._list_shards(dataset)

    # -- epochs, positions, state ---------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning; committed shards are listed again (and, under
        ``torch.distributed``, rank 0's list is given to every rank so all agree)."""
        self.epoch = int(epoch)
        self._start = 0
        self._resolve_rank_world()
        self._shards = self._list_shards(self.dataset)

    @property
    def rank_world(self) -> tuple[int, int]:
        """(rank, world size): given explicitly, else resolved from ``torch.distributed`` in the
        main process (at construction, ``set_epoch`` and in-process iteration) and carried into
        DataLoader workers, where ``torch.distributed`` is not initialised."""
        if self._world_size is not None:
            return int(self._rank), int(self._world_size)
        return self._resolved_rank_world

    def _resolve_rank_world(self) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self._resolved_rank_world = (torch.distributed.get_rank(), torch.distributed.get_world_size())
        else:
            self._resolved_rank_world = (0, 1)

    def epoch_order(self) -> np.ndarray:
        """The epoch's global order (all ranks), before this stream's start position."""
        return epoch_order(self.dataset.info, self._shards, self.seed, self.epoch, self.shuffle, self.block_shards)

    @property
    def num_samples(self) -> int:
        """Samples this rank yields in the rest of the epoch."""
        _, world = self.rank_world
        return rank_count(max(0, self._epoch_size() - self._start), world, self.drop_last)

    def __len__(self) -> int:
        """Batches this rank yields in the rest of the epoch (the last may be smaller)."""
        return -(-self.num_samples // self.batch_size)

    def state_dict(self, samples_consumed: int) -> dict[str, Any]:
        """Where to resume, given how many samples THIS RANK's training loop consumed since this
        epoch's iteration began (prefetched samples do not count). Every rank consumes the same
        number, so the global position is ``start + samples_consumed * world_size``.

        Raises:
            SynthgenError: ``samples_consumed`` is negative or more than this rank yields in the
                epoch (from its start position): the count is per epoch, not for the whole run.
        """
        _, world = self.rank_world
        most = self.num_samples
        if not 0 <= int(samples_consumed) <= most:
            raise SynthgenError(f"samples_consumed={samples_consumed} is outside 0..{most}: the count is per epoch, "
                                f"the samples this rank consumed since this epoch's iteration began (at most "
                                f"{most} in epoch {self.epoch}), not since the run began")
        return {"version": STATE_VERSION, "epoch": self.epoch, "position": self._start + int(samples_consumed) * world,
                "seed": self.seed, "shuffle": self.shuffle, "block_shards": self.block_shards,
                "shards": list(self._shards)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields exactly the rest of that epoch,
        partitioned over the current ranks and workers."""
        if state.get("version") != STATE_VERSION:
            raise SynthgenError(f"stream state version {state.get('version')} is not {STATE_VERSION}")
        mine = {"seed": self.seed, "shuffle": self.shuffle, "block_shards": self.block_shards}
        theirs = {key: state[key] for key in mine}
        if mine != theirs:
            raise SynthgenError(f"stream state was saved with {theirs}, this stream has {mine}; "
                                f"create the stream with the saved settings to resume")
        self.epoch, self._start, self._shards = int(state["epoch"]), int(state["position"]), list(state["shards"])

    # -- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        if worker is None:
            self._resolve_rank_world()
        rank, world = self.rank_world
        worker_id, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        mine = rank_indices(self.epoch_order(), self._start, rank, world, self.drop_last)
        mine = worker_indices(mine, worker_id, workers, self.batch_size)
        dataset, warned = self.dataset, set()
        rows = self._rows()

        def allocate(indices: list[int]) -> tuple[list[int], dict[str, torch.Tensor]]:
            # in the consumer's thread, which also frees the batches: memory allocated in a reader
            # thread (another malloc arena) came back with 5x as many page faults
            return indices, {f: _empty_batch(len(indices), shape, dtype, shared=worker is not None)
                             for f, (shape, dtype) in rows.items()}

        def read(job: tuple[list[int], dict[str, torch.Tensor]]
                 ) -> tuple[list[int], dict[str, torch.Tensor], dict[int, SynthgenError]]:
            indices, out = job
            batch, errors = self._read_batch(dataset, indices, out)
            return indices, {f: t.float() if self.float32 and t.is_floating_point() else t
                             for f, t in batch.items()}, errors

        jobs = (allocate(mine[first:first + self.batch_size].tolist())
                for first in range(0, len(mine), self.batch_size))
        for indices, batch, errors in read_ahead(read, jobs):
            warn_skipped(indices, errors, dataset.info.shard_size, warned)
            yield batch

    @property
    def volume_schema(self) -> dict[str, FieldSpec]:
        """Each batch field's spec, by batch name (here the stored fields themselves; the pair
        and mixed streams rename them)."""
        schema = self.dataset.info.schema
        return {name: schema[name] for name in self.fields}

    def _rows(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Each batch tensor's row shape and dtype, by name."""
        crop_here = self.crop is not None and not self.defer_crop
        return {f: self._row_layout(f, crop_here) for f in self.fields}

    def _read_batch(self, dataset: Dataset, indices: list[int], out: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], dict[int, SynthgenError]]:
        """Read the samples ``indices`` into the rows of ``out`` (``_rows``' layout); returns the
        batch (``out`` plus "index" and any deferred crop) and the unreadable samples' errors."""
        crop_here = self.crop is not None and not self.defer_crop
        crops = [self._crop_start(i) for i in indices] if crop_here else None
        actual, errors = fill_batch(dataset, indices, {f: t.numpy() for f, t in out.items()}, self.on_error,
                                    crops, self.crop)
        batch = dict(out)
        batch["index"] = torch.from_numpy(np.array(actual, dtype=np.int64))
        if self.defer_crop:
            batch["crop_start"] = torch.from_numpy(np.stack([self._crop_start(i) for i in actual]))
            batch["crop_size"] = torch.tensor([self.crop] * len(actual), dtype=torch.int64)
        return batch, errors

    def _crop_start(self, index: int) -> np.ndarray:
        return crop_start(self.dataset.info.shape, self.crop, self.seed, self.epoch, index)

    def _row_layout(self, field: str, cropped: bool) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype of one row of ``field``'s batches."""
        spec = self.dataset.info.schema[field]
        return ((*spec.shape[:-3], *self.crop) if cropped else tuple(spec.shape)), getattr(torch, spec.dtype)

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def dataset(self) -> Dataset:
        """The open dataset, reopened in each process: forked DataLoader workers inherit the
        parent's object without pickling, and remote filesystems (s3fs) are not fork-safe."""
        if self._dataset is None or self._dataset_pid != os.getpid():
            self._dataset = open_dataset(self.path)
            self._dataset_pid = os.getpid()
        return self._dataset

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_dataset"] = None  # each worker process opens its own stores
        return state

    def _epoch_size(self) -> int:
        return sample_count(self.dataset.info, self._shards)

    def _list_shards(self, dataset: Dataset) -> list[int]:
        if self._fixed_shards is not None:
            return list(self._fixed_shards)
        dataset.refresh()
        shards = dataset.committed
        if self._world_size is None and torch.distributed.is_available() and torch.distributed.is_initialized():
            shared = [shards]
            torch.distributed.broadcast_object_list(shared, src=0)
            shards = shared[0]
        return list(shards)
