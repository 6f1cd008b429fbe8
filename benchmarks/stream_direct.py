"""The direct cell of ``benchmarks.stream_throughput``: ShardStream iterated without a DataLoader.

What a new user times first: ``for batch in ShardStream(path, fields=("labels", "view1"))`` with
the stream's defaults (batch size 1, shuffled; construction included), one process, page cache
warm, against ``np.load`` of the same samples' ``.npy`` files in the same order. Every reader
runs in one fresh process (this file with ``--child``), alternated within each round, the first
pass of each not kept. The same stream is also timed on copies of the dataset in the other store
layouts (VARIANTS, written from the same samples through ``prepare_dataset`` + ``write_shard``):
without per-chunk crc32c (the checksum's read cost), label maps blosc-zstd or raw (the label
codecs), and zstd without checksums (the layout before both). :func:`codec_table` measures the
label codecs alone; :func:`before_after` runs an earlier synthgen source tree on the layout it
wrote, alternated with today's.

Run through ``benchmarks.stream_throughput`` (``--direct-rounds``, ``--baseline-source``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

FIELDS = ("labels", "view1")
# name -> (label codec, per-chunk crc32c), None: the generated dataset's; "default" is that dataset
VARIANTS = {"default": (None, True), "no-crc": (None, False), "zstd": ("zstd", True), "none": ("none", True),
            "zstd-no-crc": ("zstd", False)}


def prepare_variants(root: Path, zarr_path: Path) -> dict[str, Path]:
    """The dataset's samples in every layout of VARIANTS (copies written through the store writer,
    kept under ``root`` and reused)."""
    import synthgen
    from synthgen.store import prepare_dataset, write_shard

    source = synthgen.open_dataset(str(zarr_path))
    paths = {"default": zarr_path}
    for name, (codec, checksums) in VARIANTS.items():
        if name == "default":
            continue
        path = paths[name] = root / f"variant-{name}.zarr"
        done = root / f"variant-{name}.DONE"
        if done.exists() and done.read_text() == str(source.info.num_samples):
            continue
        info = dataclasses.replace(source.info, label_codec=codec or source.info.label_codec)
        shutil.rmtree(path, ignore_errors=True)
        prepare_dataset(str(path), info, chunk_checksums=checksums)
        for shard in source.committed:
            write_shard(str(path), info, shard, source.read_shard(shard, list(info.schema)))
        done.write_text(str(source.info.num_samples))
    return paths


def direct_child(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The cell in this (fresh) process: per round one pass of every reader, the order rotating
    between rounds; a first round (page cache, allocator) is not kept."""
    from synthgen.stream import ShardStream

    torch.set_num_threads(spec["torch_threads"])
    n, npy_dir = spec["n"], spec["npy"]
    order = ShardStream(spec["datasets"]["default"], fields=FIELDS).epoch_order().tolist()

    def npy_pass() -> None:
        for index in order:
            {field: torch.from_numpy(np.load(os.path.join(npy_dir, f"{index:06d}_{field}.npy"))) for field in FIELDS}

    def stream_pass(path: str) -> None:
        seen = np.zeros(n, dtype=np.int64)
        for batch in ShardStream(path, fields=FIELDS):
            seen[batch["index"].numpy()] += 1
        if not (seen == 1).all():
            raise RuntimeError(f"ShardStream({path}) did not yield every sample once")

    readers: dict[str, Callable[[], None]] = {"npy": npy_pass}
    readers.update({name: functools.partial(stream_pass, path) for name, path in spec["datasets"].items()})
    names = list(readers)
    rows = []
    for round_ in range(-1, spec["rounds"]):
        shift = max(round_, 0) % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            readers[name]()
            if round_ >= 0:
                rows.append({"round": round_, "reader": name, "seconds": time.perf_counter() - started})
    return rows


def run_child(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`direct_child` in a fresh process; ``spec["source"]``: a synthgen source tree put
    first on its PYTHONPATH."""
    env = dict(os.environ)
    if spec.get("source"):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [spec["source"], env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError("the direct cell failed:\n" + out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def direct_cell(datasets: dict[str, Path], npy_dir: Path, n: int, rounds: int, torch_threads: int
                ) -> dict[str, Any]:
    """Run the cell on every layout and summarise: samples/s per reader (median over rounds),
    its ratio to npy and to "default" (medians of per-round ratios, min-max alongside), the
    layout (label codec, chunk checksums) and the stored bytes per sample of the two fields."""
    import synthgen
    from benchmarks.stream_throughput import files_under

    spec = {"datasets": {k: str(v) for k, v in datasets.items()}, "npy": str(npy_dir), "n": n,
            "rounds": rounds, "torch_threads": torch_threads}
    rows = run_child(spec)
    seconds = {(r["reader"], r["round"]): r["seconds"] for r in rows}
    summary = []
    for name in ["npy", *datasets]:
        times = [seconds[(name, k)] for k in range(rounds)]
        ratios = [seconds[("npy", k)] / seconds[(name, k)] for k in range(rounds)]
        versus_default = [seconds[("default", k)] / seconds[(name, k)] for k in range(rounds)]
        row = {"reader": name, "label_codec": None, "chunk_crc32c": None, "stored_bytes_per_sample": None,
               "samples_per_s": statistics.median(n / t for t in times),
               "ratio_vs_npy": statistics.median(ratios), "ratio_vs_npy_min": min(ratios),
               "ratio_vs_npy_max": max(ratios), "ratio_vs_default": statistics.median(versus_default)}
        if name in datasets:
            dataset = synthgen.open_dataset(str(datasets[name]))
            row.update(label_codec=dataset.info.label_codec, chunk_crc32c=dataset.chunk_checksums,
                       stored_bytes_per_sample=sum(p.stat().st_size for f in FIELDS
                                                   for p in files_under(datasets[name] / f)) / n)
        summary.append(row)
    return {"rounds": rounds, "summary": summary, "passes": rows}


def before_after(source: str, datasets: dict[str, Path], npy_dir: Path, n: int, rounds: int,
                 torch_threads: int) -> dict[str, Any]:
    """The cell of an earlier reader against today's, alternated: per round one fresh process runs
    today's synthgen on the default dataset, one runs the synthgen source tree ``source`` (e.g.
    ``git archive COMMIT synthgen | tar -x -C DIR``) on the ``zstd-no-crc`` copy (the layout
    synthgen wrote before label codecs and chunk checksums); each against np.load in its own
    process. Returns the per-round ratios to npy and their medians."""
    ratios: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(rounds):
        for name, tree, path in (("after", None, datasets["default"]), ("before", source, datasets["zstd-no-crc"])):
            spec = {"datasets": {"default": str(path)}, "npy": str(npy_dir), "n": n, "rounds": 1,
                    "torch_threads": torch_threads, "source": tree}
            seconds = {r["reader"]: r["seconds"] for r in run_child(spec)}
            ratios[name].append(seconds["npy"] / seconds["default"])
    return {"source": source, "rounds": rounds, "ratios": ratios,
            "median": {name: statistics.median(values) for name, values in ratios.items()}}


def codec_table(npy_dir: Path, n: int, repeats: int = 5) -> list[dict[str, Any]]:
    """Every label codec of the store on the dataset's label maps: compression ratio (raw /
    encoded bytes over all maps) and the best of ``repeats`` single-thread blosc decode and
    encode times per map (numcodecs' blosc with the store's parameters)."""
    from numcodecs import Blosc, blosc

    from synthgen.store.layout import LABEL_CODECS

    maps = [np.load(npy_dir / f"{index:06d}_labels.npy") for index in range(n)]
    out = np.empty_like(maps[0])
    blosc.use_threads = False  # as in the stream's reader threads

    def best(run: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
        return min(times) / len(maps)

    rows = []
    for name, codec in LABEL_CODECS.items():
        if codec is None:
            rows.append({"codec": name, "blosc": None, "ratio": 1.0, "decode_ms": None, "encode_ms": None})
            continue
        numcodec = Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=Blosc.SHUFFLE)
        encoded = [numcodec.encode(m) for m in maps]
        decode = best(lambda: [blosc.decompress(e, out) for e in encoded])
        encode = best(lambda: [numcodec.encode(m) for m in maps])
        rows.append({"codec": name, "blosc": f"{codec.cname.value} clevel {codec.clevel}",
                     "ratio": sum(m.nbytes for m in maps) / sum(len(e) for e in encoded),
                     "decode_ms": decode * 1e3, "decode_gb_per_s": maps[0].nbytes / decode / 1e9,
                     "encode_ms": encode * 1e3})
    return rows


def print_direct(direct: dict[str, Any], codecs: list[dict[str, Any]] | None) -> None:
    """The cell, the before/after comparison and the codec table as markdown tables."""
    print(f"direct cell: 0 workers, warm, ShardStream(path, fields) with its defaults (batch 1, shuffled) "
          f"iterated directly; np.load in the same order; {direct['rounds']} rounds in one process")
    print("| reader | label codec | chunk crc32c | stored MB/sample | samples/s | x npy (min-max) | x default |")
    print("|---|---|---|---|---|---|---|")
    for row in direct["summary"]:
        stored = row["stored_bytes_per_sample"]
        crc = "-" if row["chunk_crc32c"] is None else "yes" if row["chunk_crc32c"] else "no"
        print(f"| {row['reader']} | {row['label_codec'] or '-'} | {crc} | {stored / 1e6 if stored else 0:.2f} | "
              f"{row['samples_per_s']:.0f} | {row['ratio_vs_npy']:.2f} "
              f"({row['ratio_vs_npy_min']:.2f}-{row['ratio_vs_npy_max']:.2f}) | {row['ratio_vs_default']:.2f} |")
    if direct.get("before_after"):
        ba = direct["before_after"]
        medians = ", ".join(f"{name} {ba['median'][name]:.2f}x npy ({min(v):.2f}-{max(v):.2f})"
                            for name, v in ba["ratios"].items())
        print(f"before/after (direct cell, {ba['rounds']} alternated process pairs; before = {ba['source']} "
              f"on zstd-no-crc): {medians}")
    if codecs:
        print("| label codec | blosc | ratio | decode ms/map (GB/s) | encode ms/map |")
        print("|---|---|---|---|---|")
        for row in codecs:
            decode = f"{row['decode_ms']:.3f} ({row['decode_gb_per_s']:.1f})" if row["decode_ms"] else "-"
            encode = f"{row['encode_ms']:.1f}" if row["encode_ms"] else "-"
            print(f"| {row['codec']} | {row['blosc'] or 'raw'} | {row['ratio']:.1f}x | {decode} | {encode} |")


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    print(json.dumps(direct_child(json.loads(sys.argv[2]))))
