"""Ingest and read throughput of real volumes: `synthgen ingest` and ShardStream against raw .npy.

Run: .venv/bin/python -m benchmarks.ingest_throughput [--copies 16] [--rounds 5] [--workers 2]
     [--read-repeats 10] [--json OUT]

1. Ingest: ``--copies`` links to the shared MNI T1 + atlas (182x218x182 at 1 mm) ingested at
   1.5 mm into 128^3 (image + labels), in this process (``--backend local``) and on a local Ray
   runtime with ``--workers`` tasks, each into a fresh dataset. Reported: volumes/s, source MB/s
   (the .nii.gz bytes read) and output MB/s (uncompressed float16 image + uint8 labels).
2. Read: the ingested samples streamed by ``ShardStream(path, fields=("image", "labels"))``
   iterated directly (batch size 1, no DataLoader) against ``np.load`` of the same samples saved
   as raw ``.npy`` files (one per sample and field), warm page cache, each timed pass reading the
   whole dataset ``--read-repeats`` times, alternating per round; the speed ratio stream / npy
   per round and its median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthgen import open_dataset
from synthgen.ingest.run import ingest
from synthgen.stream import ShardStream

MNI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mni"


def ingest_rate(work: Path, copies: int, backend: str, workers: int) -> dict[str, float]:
    images, labels = work / "images", work / "labels"
    for folder, source in ((images, "mni.nii.gz"), (labels, "mnia.nii.gz")):
        folder.mkdir(exist_ok=True)
        for k in range(copies):
            link = folder / f"mni{k:03d}.nii.gz"
            if not link.exists():
                link.symlink_to(MNI / source)
    out = work / f"ingest-{backend}.zarr"
    started = time.perf_counter()
    ingest(str(images), str(out), labels=str(labels), size=128, spacing=1.5, backend=backend,
           workers=workers, shard_size=4, overwrite=True, progress=False)
    seconds = time.perf_counter() - started
    source_mb = copies * sum((MNI / f).stat().st_size for f in ("mni.nii.gz", "mnia.nii.gz")) / 1e6
    output_mb = copies * 128**3 * 3 / 1e6
    return {"backend": backend, "seconds": seconds, "volumes_per_s": copies / seconds,
            "source_mb_per_s": source_mb / seconds, "output_mb_per_s": output_mb / seconds, "path": str(out)}


def stream_pass(path: str, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        for _ in ShardStream(path, fields=("image", "labels"), shuffle=False):
            pass
    return time.perf_counter() - started


def npy_pass(folder: Path, count: int, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        for k in range(count):
            for field in ("image", "labels"):
                torch.from_numpy(np.load(folder / f"{k:05d}_{field}.npy"))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--read-repeats", type=int, default=10, help="reads of the whole dataset per timed pass")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="sg-ingest-") as tmp:
        work = Path(tmp)
        rates = [ingest_rate(work, args.copies, backend, args.workers) for backend in ("local", "ray")]
        for rate in rates:
            print(f"ingest {rate['backend']:5s}: {args.copies} volumes in {rate['seconds']:.1f} s = "
                  f"{rate['volumes_per_s']:.2f} volumes/s, source {rate['source_mb_per_s']:.1f} MB/s, "
                  f"output {rate['output_mb_per_s']:.1f} MB/s")
        dataset = open_dataset(rates[0]["path"])
        raw = work / "npy"
        raw.mkdir()
        for k in range(len(dataset)):
            sample = dataset[k]
            for field in ("image", "labels"):
                np.save(raw / f"{k:05d}_{field}.npy", sample[field])
        stream_pass(rates[0]["path"], 1), npy_pass(raw, len(dataset), 1)  # warm the page cache
        ratios, passes = [], []
        for _ in range(args.rounds):
            npy = npy_pass(raw, len(dataset), args.read_repeats)
            stream = stream_pass(rates[0]["path"], args.read_repeats)
            passes.append({"npy_s": npy, "stream_s": stream})
            ratios.append(npy / stream)
        mb = args.read_repeats * len(dataset) * 128**3 * 3 / 1e6
        print(f"read warm, batch 1, no DataLoader: stream {mb / min(p['stream_s'] for p in passes):.0f} MB/s, "
              f"npy {mb / min(p['npy_s'] for p in passes):.0f} MB/s (best passes); stream/npy speed "
              f"median {statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f}) over "
              f"{args.rounds} rounds")
        if args.json:
            Path(args.json).write_text(json.dumps({"ingest": rates, "read": passes, "ratios": ratios,
                                                   "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
