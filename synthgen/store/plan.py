"""The identity a new dataset gets from an engine, a sample count, a seed and a shard size."""

from __future__ import annotations

import dataclasses
from importlib.metadata import version

from synthgen.engines import Engine
from synthgen.errors import SynthgenError
from synthgen.store.info import DatasetInfo, default_shard_size


def plan_dataset(engine: Engine, num_samples: int, seed: int, shard_size: int | None) -> DatasetInfo:
    """The identity of the dataset of ``num_samples`` samples of ``engine`` with ``seed``; the
    shard size defaults to :func:`default_shard_size` of one sample's bytes.

    Raises:
        SynthgenError: a non-positive count or shard size, or a negative seed.
    """
    if num_samples <= 0:
        raise SynthgenError(f"--n must be a positive number of samples, got {num_samples}")
    if seed < 0:
        raise SynthgenError(f"--seed must be a non-negative integer, got {seed}")
    if shard_size is not None and shard_size <= 0:
        raise SynthgenError(f"--shard-size must be a positive number of samples, got {shard_size}")
    info = DatasetInfo(engine=engine.name, config=engine.config_dict(), seed=seed,
                       num_samples=num_samples, shard_size=1, shape=engine.shape,
                       spacing=engine.spacing, schema=engine.schema,
                       synthgen_version=version("synthgen"))
    size = shard_size or default_shard_size(info.sample_nbytes())
    return dataclasses.replace(info, shard_size=min(size, num_samples))
