"""Worker threads for the CPU kernels of :mod:`registration.mind` and
:mod:`registration.convexadam`.

Those kernels are sequences of many medium-sized tensor ops (a ConvexAdam iteration is ~100).
With torch's intra-op threads each op is a parallel region ending in a barrier, and when another
process holds a core the barrier waits for a scheduler slice: measured on a busy 2-core machine,
40 ms -> 150-700 ms per Adam iteration. Independent pieces of work (slabs of slices, channels)
on separate Python threads, with intra-op parallelism off, need no barrier between ops (torch
releases the GIL inside ops) and are as fast on an idle machine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch


class Workers:
    """``count`` threads (or the calling thread alone when ``pool`` is None)."""

    def __init__(self, pool: ThreadPoolExecutor | None, count: int) -> None:
        self.pool = pool
        self.count = count if pool is not None else 1

    def map(self, function: Callable[..., Any], *arguments: Iterable[Any]) -> list[Any]:
        """``[function(*args) for args in zip(*arguments)]``, spread over the threads."""
        if self.pool is None:
            return [function(*args) for args in zip(*arguments)]
        return list(self.pool.map(function, *arguments))


def parts(size: int, count: int) -> list[slice]:
    """``size`` indices in at most ``count`` contiguous, nearly equal, non-empty slices."""
    step = -(-size // max(1, count))
    return [slice(start, min(start + step, size)) for start in range(0, size, step)]


_lock = threading.Lock()
_active = 0
_threads = 1


@contextlib.contextmanager
def cpu_workers(device: torch.device) -> Iterator[Workers]:
    """On the CPU: as many worker threads as torch had intra-op threads, with torch's intra-op
    threads set to 1 until the last of any concurrent or nested uses exits (then restored).
    Elsewhere, or with one intra-op thread: no workers.

    Yields:
        The :class:`Workers`.
    """
    global _active, _threads
    if device.type != "cpu":
        yield Workers(None, 1)
        return
    with _lock:
        if _active == 0:
            _threads = torch.get_num_threads()
        _active += 1
        threads = _threads
        torch.set_num_threads(1)
    try:
        if threads == 1:
            yield Workers(None, 1)
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="registration") as pool:
                yield Workers(pool, threads)
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                torch.set_num_threads(_threads)
