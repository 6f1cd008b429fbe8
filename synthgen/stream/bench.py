"""``synthgen stream-bench``: how fast a ShardStream feeds a DataLoader from this storage."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from torch.utils.data import DataLoader

from synthgen.errors import SynthgenError
from synthgen.stream.dataset import ShardStream
from synthgen.stream.worker_errors import worker_message


@dataclasses.dataclass(frozen=True)
class StreamBenchReport:
    samples: int
    megabytes: float
    seconds: float
    workers: int

    def __str__(self) -> str:
        return (f"{self.samples} samples, {self.megabytes:.1f} MB in {self.seconds:.2f} s with "
                f"{self.workers} worker(s): {self.samples / self.seconds:.1f} samples/s, "
                f"{self.megabytes / self.seconds:.1f} MB/s")


def stream_bench(path: str, fields: Sequence[str] | None = None, workers: int = 0, batch_size: int = 8,
                 max_samples: int | None = None, shuffle: bool = True) -> StreamBenchReport:
    """Time one pass (or ``max_samples``) of a DataLoader with ``workers`` worker processes over
    a ShardStream of ``path``; with 0 workers the stream is iterated directly, as a training loop
    without a DataLoader would."""
    stream = ShardStream(path, fields=fields, batch_size=batch_size, shuffle=shuffle)
    loader = DataLoader(stream, batch_size=None, num_workers=workers) if workers else stream
    samples, nbytes = 0, 0
    started = time.perf_counter()
    try:
        for batch in loader:
            samples += len(batch["index"])
            nbytes += sum(value.numel() * value.element_size() for name, value in batch.items() if name != "index")
            if max_samples is not None and samples >= max_samples:
                break
    except SynthgenError as err:
        raise SynthgenError(worker_message(str(err))) from None
    return StreamBenchReport(samples, nbytes / 1e6, time.perf_counter() - started, workers)
