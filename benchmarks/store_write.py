"""Store write throughput: one whole-shard write plus read-back fingerprint and commit record.

Run: .venv/bin/python -m benchmarks.store_write [--engine random-shapes] [--size 128] [--shard-size 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from synthgen.engines import Engine, get_engine
from synthgen.runner import plan_dataset
from synthgen.store import prepare_dataset, write_shard


def measure_store_write(engine: Engine, shard_size: int, repeats: int = 3) -> dict[str, float]:
    """Write the same shard ``repeats`` times into fresh datasets on local disk; returns MB/s of
    uncompressed sample data and of bytes stored (median over repeats)."""
    info = plan_dataset(engine, shard_size, seed=0, shard_size=shard_size)
    samples = [engine.sample(0, i) for i in range(shard_size)]
    arrays = {name: np.stack([s[name].numpy() for s in samples]) for name in info.schema}
    raw_bytes = sum(a.nbytes for a in arrays.values())
    seconds, stored = [], 0
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            path = str(Path(scratch) / f"bench{repeat}.zarr")
            prepare_dataset(path, info)
            started = time.perf_counter()
            record = write_shard(path, info, 0, arrays)
            seconds.append(time.perf_counter() - started)
            stored = record.nbytes
            shutil.rmtree(path)
    median = statistics.median(seconds)
    return {"shard_samples": shard_size, "raw_mb": raw_bytes / 1e6, "stored_mb": stored / 1e6,
            "seconds_per_shard": median, "raw_mb_per_s": raw_bytes / 1e6 / median,
            "stored_mb_per_s": stored / 1e6 / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="random-shapes")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    engine = get_engine(args.engine, size=args.size)
    print(json.dumps(measure_store_write(engine, args.shard_size, args.repeats), indent=2))


if __name__ == "__main__":
    main()
