"""Backends that run shard tasks: in-process (tests, debugging) and Ray (default).

Ray is the distributed engine: one task per shard, the task writes its shard to storage and
returns only metadata, ``ray.wait`` bounds the tasks in flight, and Ray retries tasks whose
worker or node died. synthgen adds no scheduling of its own.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from synthgen.errors import SynthgenError
from synthgen.runner.task import ShardResult, make_shard

TASK_RETRIES = 3


def run_local(path: str, shards: list[int]) -> Iterator[ShardResult]:
    """Run the shard tasks one after another in this process."""
    for shard in shards:
        yield make_shard(path, shard)


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast, with one line, when a host:port Ray address does not answer.

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


def run_ray(path: str, shards: list[int], workers: int | None = None,
            address: str | None = None) -> Iterator[ShardResult]:
    """Run one Ray task per shard on a local Ray runtime (``address`` None, ``workers`` CPUs)
    or on the cluster at ``address`` (checked by the caller with :func:`check_ray_address`
    before anything is written); at most ``2 * workers`` tasks are in flight."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if address:
            try:
                ray.init(address=address, logging_level="WARNING")
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise SynthgenError(
                    f"cannot connect to the Ray cluster at {address} ({str(err).splitlines()[0]}); "
                    f"check the address printed by `ray start --head`") from None
        else:
            ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     logging_level="WARNING")
    try:
        capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(make_shard)
        pending = list(shards)
        in_flight: list = []
        while pending or in_flight:
            while pending and len(in_flight) < 2 * capacity:
                in_flight.append(remote.remote(path, pending.pop(0)))
            done, in_flight = ray.wait(in_flight, num_returns=1)
            yield ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()
