"""PairStream: random registration pairs (i, j) of a single-volume dataset, as a stream.

Registration trainers want pairs; most real collections are single volumes. An epoch of a
PairStream has one pair per committed sample: pair k fixes sample ``order[k]`` (ShardStream's
epoch order) and moves sample ``order[partner[k]]``, where ``partner`` is a permutation drawn
from (seed, epoch) alone (named stream ``PAIR_STREAM``) with ``partner[k] != k`` (a random
cyclic shift of a second shuffle, so no sample is its own partner and every sample is moved
exactly once). Pairs are items of the
epoch like samples in ShardStream, so ordering, rank partitioning, equal counts, workers and
exact mid-epoch resume are ShardStream's own. A dataset that stores pairs (``fixed``/``moving``
fields) streams as it is with ShardStream.

Batches hold, per requested field ``f``, ``fixed`` and ``moving`` for ``f == "image"`` and
``fixed_f``/``moving_f`` otherwise, plus ``"index"`` (the fixed samples) and ``"partner"`` (the
moving samples); a crop takes the same box from both sides, drawn for the fixed sample.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from synthgen.engines.base import FieldSpec
from synthgen.errors import SynthgenError
from synthgen.store.reader import Dataset
from synthgen.stream.dataset import ShardStream
from synthgen.seeding import PAIR_STREAM, named_seed
from synthgen.stream.reading import fill_batch


def pair_field(side: str, field: str) -> str:
    """The batch key of ``field`` on ``side`` ("fixed" or "moving")."""
    return side if field == "image" else f"{side}_{field}"


@functools.lru_cache(maxsize=4)
def partners(count: int, seed: int, epoch: int) -> np.ndarray:
    """(count,) int64 permutation of positions with no fixed point (for count >= 2)."""
    if count < 2:
        return np.zeros(count, dtype=np.int64)
    rng = np.random.default_rng(named_seed(seed, PAIR_STREAM, epoch))
    shuffle = rng.permutation(count)
    shift = int(rng.integers(1, count))
    mapping = np.empty(count, dtype=np.int64)
    mapping[shuffle] = shuffle[(np.arange(count) + shift) % count]
    return mapping


class PairStream(ShardStream):
    """ShardStream over pairs of a single-volume dataset (module docstring). Arguments as
    ShardStream's; ``len``, ``state_dict`` and ``load_state_dict`` count pairs."""

    def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        if self.defer_crop:
            raise SynthgenError(f"{self.path} renders its views on the training device; pair its stored label "
                                f"maps only, or stream without a crop")

    def epoch_order(self) -> np.ndarray:
        """Pair positions 0..N-1 of the epoch (pair k is ``_pair(k)``)."""
        return np.arange(self._epoch_size(), dtype=np.int64)

    def _samples(self) -> np.ndarray:
        """ShardStream's sample order of this epoch, computed once per epoch and shard list."""
        key = (self.epoch, tuple(self._shards))
        cached = getattr(self, "_samples_cached", None)
        if cached is None or cached[0] != key:
            cached = self._samples_cached = (key, super().epoch_order())
        return cached[1]

    def _pair(self, positions: list[int]) -> tuple[list[int], list[int]]:
        samples = self._samples()
        mapping = partners(len(samples), self.seed, self.epoch)
        return [int(samples[k]) for k in positions], [int(samples[mapping[k]]) for k in positions]

    @property
    def volume_schema(self) -> dict[str, FieldSpec]:
        """Each batch field's stored spec, by batch name (``fixed``, ``moving_labels``, ...)."""
        schema = self.dataset.info.schema
        return {pair_field(side, f): schema[f] for side in ("fixed", "moving") for f in self.fields}

    def _rows(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        single = super()._rows()
        return {pair_field(side, f): layout for side in ("fixed", "moving") for f, layout in single.items()}

    def _read_batch(self, dataset: Dataset, indices: list[int], out: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], dict[int, SynthgenError]]:
        fixed, moving = self._pair(indices)
        crops = [self._crop_start(i) for i in fixed] if self.crop is not None else None
        errors: dict[int, SynthgenError] = {}
        actual = {}
        for side, samples in (("fixed", fixed), ("moving", moving)):
            rows = {f: out[pair_field(side, f)].numpy() for f in self.fields}
            actual[side], side_errors = fill_batch(dataset, samples, rows, self.on_error, crops, self.crop)
            errors.update(side_errors)
        batch = dict(out)
        batch["index"] = torch.tensor(actual["fixed"], dtype=torch.int64)
        batch["partner"] = torch.tensor(actual["moving"], dtype=torch.int64)
        return batch, errors
