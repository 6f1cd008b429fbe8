"""Backends that run shard tasks: in-process (tests, debugging) and Ray (default).

Ray is the distributed engine: one task per shard, the task writes its shard to storage and
returns only metadata, ``ray.wait`` bounds the tasks in flight, and Ray retries tasks whose
worker or node died. synthgen adds no scheduling of its own. With ``gpus_per_task`` each task
asks Ray for that share of a GPU and runs the engine's kernels on it (Ray sets the task's
``CUDA_VISIBLE_DEVICES``, so its GPU is ``cuda``).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

from synthgen.errors import SynthgenError, first_line
from synthgen.runner.ray_auth import MODE_ENV, auth_mode, check_cluster_accepts, cluster_auth_mode, local_auth_mode
from synthgen.runner.task import ShardResult, make_shard

TASK_RETRIES = 3


def run_local(path: str, shards: list[int]) -> Iterator[ShardResult]:
    """Run the shard tasks one after another in this process."""
    for shard in shards:
        yield make_shard(path, shard)


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast, with one line, when a host:port Ray address does not answer, or its cluster
    refuses this driver for token authentication (see :mod:`synthgen.runner.ray_auth`).

    ``ray.init`` would otherwise retry for about a minute before a multi-line error.
    """
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SynthgenError(f"--ray-address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise SynthgenError(
            f"cannot reach a Ray cluster at {address} ({err.strerror or type(err).__name__}); start one "
            f"with `ray start --head` or leave out --ray-address to run locally") from None
    check_cluster_accepts(address)


def check_local_gpus(gpus_per_task: float) -> None:
    """Fail fast when a local Ray runtime could not schedule a task asking for ``gpus_per_task``."""
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < gpus_per_task:
        raise SynthgenError(
            f"--gpus-per-task {gpus_per_task:g} needs {gpus_per_task:g} GPU(s) per task and this machine has "
            f"{available} that torch can use; lower or drop --gpus-per-task, or give --ray-address of a "
            f"cluster with GPU nodes")


def ray_connected() -> bool:
    """Whether this process is already connected to a Ray runtime (then generate uses it)."""
    import ray

    return ray.is_initialized()


def connect_ray(workers: int | None = None, address: str | None = None) -> bool:
    """Join the cluster at ``address`` (checked by the caller with :func:`check_ray_address`), or
    start a local Ray runtime on 127.0.0.1 with ``workers`` CPUs; returns whether this call
    started the connection (and so must :func:`disconnect_ray` it).

    With ``RAY_AUTH_MODE`` unset, the local runtime uses token authentication (Ray's default,
    without its warning), and so does a cluster connection when a token is at hand (said in one
    line); the mode is set for this driver's connection only (:func:`~synthgen.runner.ray_auth.auth_mode`)."""
    import ray

    if ray_connected():
        return False
    if address:
        mode, source = cluster_auth_mode()
        if mode:
            print(f"synthgen: {MODE_ENV} is unset; joining the Ray cluster at {address} with token "
                  f"authentication, using the token from {source}", file=sys.stderr)
        with auth_mode(mode):
            try:
                ray.init(address=address, logging_level="WARNING")
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise SynthgenError(
                    f"cannot connect to the Ray cluster at {address} ({first_line(err)}); "
                    f"check the address printed by `ray start --head`") from None
    else:
        with auth_mode(local_auth_mode()):
            ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     logging_level="WARNING")
    return True


def disconnect_ray() -> None:
    import ray

    ray.shutdown()


def run_ray(path: str, shards: list[int], workers: int | None = None,
            gpus_per_task: float | None = None) -> Iterator[ShardResult]:
    """Run one Ray task per shard on the connected Ray runtime (see :func:`connect_ray`), each
    with one CPU and ``gpus_per_task`` GPUs if given. At most ``2 * workers`` tasks are in
    flight; ``workers`` defaults to what the cluster can run at once (its CPUs, or its GPUs
    divided by ``gpus_per_task``). A task's SynthgenError reaches the caller as one line."""
    import ray

    resources = ray.cluster_resources()
    if gpus_per_task:
        if resources.get("GPU", 0) < gpus_per_task:
            print(f"synthgen: the Ray cluster offers {resources.get('GPU', 0):g} GPU(s) now; the shard tasks "
                  f"(--gpus-per-task {gpus_per_task:g}) wait until GPU nodes join (e.g. from the autoscaler)",
                  file=sys.stderr)
        capacity = workers or max(1, int(resources.get("GPU", 0) / gpus_per_task))
    else:
        capacity = workers or max(1, int(resources.get("CPU", 1)))
    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task or 0, max_retries=TASK_RETRIES)(make_shard)
    device = "cuda" if gpus_per_task else None
    pending = list(shards)
    in_flight: list = []
    while pending or in_flight:
        while pending and len(in_flight) < 2 * capacity:
            in_flight.append(remote.remote(path, pending.pop(0), device))
        done, in_flight = ray.wait(in_flight, num_returns=1)
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, SynthgenError):
                raise SynthgenError(str(err.cause)) from None
            raise
        yield result
