"""``synthgen generate``: turn "make N samples" into shard tasks, skip committed ones, report."""

from __future__ import annotations

import dataclasses
import sys
import time
from importlib.metadata import version

from tqdm import tqdm

from synthgen.engines import Engine
from synthgen.errors import SynthgenError
from synthgen.runner.backends import check_ray_address, run_local, run_ray
from synthgen.store import DatasetInfo, default_shard_size, prepare_dataset

BACKENDS = ("ray", "local")


@dataclasses.dataclass(frozen=True)
class GenerateReport:
    path: str
    total_shards: int
    skipped_shards: int
    written_shards: int
    samples_written: int
    bytes_written: int
    seconds: float


def plan_dataset(engine: Engine, num_samples: int, seed: int, shard_size: int | None) -> DatasetInfo:
    """The identity of the dataset a generate command asks for (validates n, seed, shard size)."""
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


def generate(engine: Engine, out: str, num_samples: int, seed: int = 0, shard_size: int | None = None,
             backend: str = "ray", workers: int | None = None, ray_address: str | None = None,
             overwrite: bool = False, progress: bool = True) -> GenerateReport:
    """Generate (or finish) the dataset at ``out``; returns what was written."""
    if backend not in BACKENDS:
        raise SynthgenError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if workers is not None and workers <= 0:
        raise SynthgenError(f"--workers must be a positive integer, got {workers}")
    if ray_address and backend != "ray":
        raise SynthgenError("--ray-address needs --backend ray")
    info = plan_dataset(engine, num_samples, seed, shard_size)
    if ray_address:
        check_ray_address(ray_address)
    committed = set(prepare_dataset(out, info, overwrite=overwrite))
    todo = [k for k in range(info.num_shards) if k not in committed]
    done_samples = sum(min(info.shard_size, num_samples - k * info.shard_size) for k in committed)
    started = time.perf_counter()
    results = (run_local(out, todo) if backend == "local"
               else run_ray(out, todo, workers=workers, address=ray_address))
    written = samples = nbytes = 0
    bar = tqdm(total=num_samples, initial=done_samples, unit="sample", disable=not progress,
               file=sys.stderr, smoothing=0.1, mininterval=1.0, desc=f"generate {info.engine}")
    try:
        for result in results:
            written += 1
            samples += result.samples
            nbytes += result.nbytes
            bar.update(result.samples)
    finally:
        results.close()  # shuts down a Ray runtime started for this run, also on Ctrl-C
        bar.close()
    return GenerateReport(path=out, total_shards=info.num_shards, skipped_shards=len(committed),
                          written_shards=written, samples_written=samples, bytes_written=nbytes,
                          seconds=time.perf_counter() - started)
