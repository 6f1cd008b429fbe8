"""One shard task: make the samples of shard k and write them as one whole shard.

The task reads the dataset's identity from storage, so a task needs only (path, shard): the
same bytes come out wherever and however often it runs.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import torch

from synthgen.engines import get_engine
from synthgen.errors import SynthgenError
from synthgen.store.commits import CommitRecord
from synthgen.store.objects import ObjectStore
from synthgen.store.writer import read_info, write_shard


@dataclasses.dataclass(frozen=True)
class ShardResult:
    shard: int
    samples: int
    nbytes: int
    seconds: float


def make_shard(path: str, shard: int, device: str | None = None) -> ShardResult:
    """Generate, write and commit shard ``shard`` of the dataset at ``path``, running the
    engine's kernels on ``device`` (CPU when None)."""
    started = time.perf_counter()
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SynthgenError(
            f"the task for shard {shard} was given GPU(s) (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')}) but torch {torch.__version__} there cannot use "
            f"CUDA; install a CUDA build of torch on the GPU nodes, or drop --gpus-per-task")
    info = read_info(ObjectStore(path))
    if info is None:
        raise RuntimeError(f"{path} is not a synthgen dataset (was it deleted while generating?)")
    engine = get_engine(info.engine, **info.config)
    start, stop = info.shard_range(shard)
    arrays = {name: np.empty((stop - start, *spec.shape), dtype=spec.dtype)
              for name, spec in info.schema.items()}
    with torch.inference_mode():
        for offset, index in enumerate(range(start, stop)):
            for name, tensor in engine.sample(info.seed, index, device=device).items():
                arrays[name][offset] = tensor.cpu().numpy()
    record: CommitRecord = write_shard(path, info, shard, arrays, started=started)
    return ShardResult(shard=shard, samples=stop - start, nbytes=record.nbytes,
                       seconds=time.perf_counter() - started)
