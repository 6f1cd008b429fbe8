"""``synthgen generate``: turn "make N samples" into shard tasks, skip committed ones, report."""

from __future__ import annotations

import dataclasses
import sys
import time

from tqdm import tqdm

from synthgen.engines import Engine
from synthgen.errors import SynthgenError
from synthgen.runner.backends import (check_local_gpus, check_ray_address, connect_ray, disconnect_ray,
                                      ray_connected, run_local, run_ray)
from synthgen.store import prepare_dataset
from synthgen.store.plan import plan_dataset

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

    def __str__(self) -> str:
        rate = self.samples_written / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.path}: {self.written_shards} shard(s) written, {self.skipped_shards} already committed, "
                f"{self.total_shards} total; {self.samples_written} samples in {self.seconds:.1f} s "
                f"({rate:.2f} samples/s), {self.bytes_written / 2**20:.1f} MiB")


def generate(engine: Engine, out: str, num_samples: int, seed: int = 0, shard_size: int | None = None,
             backend: str = "ray", workers: int | None = None, ray_address: str | None = None,
             overwrite: bool = False, progress: bool = True, gpus_per_task: float | None = None,
             label_codec: str | None = None) -> GenerateReport:
    """Generate (or finish) the dataset at ``out``; returns what was written.

    Every check that can fail (arguments, the Ray address, a local run's GPUs, an existing
    dataset at ``out``) runs before anything is written. ``gpus_per_task``: each Ray shard task
    asks for that many GPUs (a fraction shares one GPU between tasks) and generates on its GPU.
    ``label_codec``: how label maps are compressed (``synthgen.store.layout.LABEL_CODECS``);
    None: the default for a new dataset, the recorded one when resuming (a different explicit
    codec is refused, like any other change of the dataset's identity).
    """
    if backend not in BACKENDS:
        raise SynthgenError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if workers is not None and workers <= 0:
        raise SynthgenError(f"--workers must be a positive integer, got {workers}")
    if ray_address and backend != "ray":
        raise SynthgenError("--ray-address needs --backend ray")
    if gpus_per_task is not None and (backend != "ray" or not gpus_per_task > 0):
        raise SynthgenError(f"--gpus-per-task must be a positive number of GPUs (e.g. 1 or 0.25) with "
                            f"--backend ray, got {gpus_per_task} with --backend {backend}")
    info = plan_dataset(engine, num_samples, seed, shard_size, label_codec)
    if ray_address:
        check_ray_address(ray_address)
    elif gpus_per_task and backend == "ray" and not ray_connected():
        check_local_gpus(gpus_per_task)
    committed = set(prepare_dataset(out, info, overwrite=overwrite, keep_label_codec=label_codec is None))
    todo = [k for k in range(info.num_shards) if k not in committed]
    done_samples = sum(min(info.shard_size, num_samples - k * info.shard_size) for k in committed)
    started = time.perf_counter()
    written = samples = nbytes = 0
    started_ray = backend == "ray" and bool(todo) and connect_ray(workers, ray_address)
    try:
        results = (run_local(out, todo) if backend == "local" or not todo
                   else run_ray(out, todo, workers=workers, gpus_per_task=gpus_per_task))
        bar = tqdm(total=num_samples, initial=done_samples, unit="sample", disable=not progress,
                   file=sys.stderr, smoothing=0.1, mininterval=1.0, desc=f"generate {info.engine}")
        try:
            for result in results:
                written += 1
                samples += result.samples
                nbytes += result.nbytes
                bar.update(result.samples)
        finally:
            results.close()
            bar.close()
    finally:
        if started_ray:  # also on Ctrl-C: a Ray runtime started for this run goes with it
            disconnect_ray()
    return GenerateReport(path=out, total_shards=info.num_shards, skipped_shards=len(committed),
                          written_shards=written, samples_written=samples, bytes_written=nbytes,
                          seconds=time.perf_counter() - started)
