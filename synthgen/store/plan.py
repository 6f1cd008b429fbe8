"""The identity a new dataset gets from an engine, a sample count, a seed and a shard size."""

from __future__ import annotations

import dataclasses
from importlib.metadata import version

from synthgen.engines import Engine
from synthgen.errors import SynthgenError
from synthgen.store.info import DatasetInfo, default_shard_size
from synthgen.store.layout import DEFAULT_LABEL_CODEC, check_label_codec


def plan_dataset(engine: Engine, num_samples: int, seed: int, shard_size: int | None,
                 label_codec: str | None = None) -> DatasetInfo:
    """The identity of the dataset of ``num_samples`` samples of ``engine`` with ``seed``; the
    shard size defaults to :func:`default_shard_size` of one sample's bytes, the label codec
    (a ``synthgen.store.layout.LABEL_CODECS`` name) to DEFAULT_LABEL_CODEC.

    Raises:
        SynthgenError: a non-positive count or shard size, a negative seed or an unknown codec.
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
                       synthgen_version=version("synthgen"),
                       label_codec=check_label_codec(label_codec or DEFAULT_LABEL_CODEC))
    size = shard_size or default_shard_size(info.sample_nbytes())
    return dataclasses.replace(info, shard_size=min(size, num_samples))
