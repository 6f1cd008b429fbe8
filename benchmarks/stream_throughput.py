"""Stream throughput: synthgen's ShardStream against raw .npy files and LitData, side by side.

Run: .venv/bin/python -m benchmarks.stream_throughput [--n 128] [--size 128] [--workers 0 1 2]
     [--batch-size 4] [--rounds 3] [--cold fadvise|drop_caches|none] [--torch-threads 1]
     [--direct-rounds 7] [--no-grid] [--baseline-source DIR] [--malloc-tuned] [--json OUT] [--keep DIR]
     [--profile OUT.prof]

One label-ensemble dataset is generated once (``synthgen.runner.generate``, local backend) and
the same samples are written as raw ``.npy`` files (one per sample per field) and, when the
``litdata`` package can be imported, as a LitData optimized dataset. Every reader delivers the
same items: ``{"labels": uint8 (B, D, H, W), "view1": float16 (B, D, H, W), "index": (B,)}``
through a torch DataLoader (LitData: its StreamingDataLoader) with the same batch size and
worker counts:

- ``npy``: a map-style Dataset calling ``np.load`` per field; ``DataLoader(shuffle=...)``.
- ``litdata``: ``StreamingDataset(dir, shuffle=...)`` + ``StreamingDataLoader``.
- ``synthgen``: ``ShardStream(path, fields, shuffle=..., batch_size=B)`` + ``DataLoader(batch_size=None)`` (whole batches).

Each reader runs with ``shuffle`` False and True, and every reader's bytes are first checked
against the dataset (untimed). For every round, worker count and reader variant, the reader's
files are evicted from the page cache, then a fresh process reads them twice: "cold", then
"warm" (page cache populated, as a second epoch). Fresh processes because LitData keeps its
chunk files memory-mapped after its loader is gone (mapped pages cannot be evicted), and so that
no reader inherits another's heap. A pass is timed from creating the DataLoader iterator (worker
start-up included) to its last batch; samples/s and MB/s (uncompressed bytes delivered, 3 bytes
per voxel) are reported, and the ratios reader / npy are computed within each round (same
machine state) and summarised by their median over rounds (min-max alongside).

Cold reads: ``--cold fadvise`` (default) calls ``posix_fadvise(POSIX_FADV_DONTNEED)`` on every
file of the reader after ``os.sync()`` and checks with ``fincore`` (util-linux) that none of
their pages stay resident (reported as "resident before"); ``--cold drop_caches`` writes 3 to
``/proc/sys/vm/drop_caches`` (root only; drops the whole machine's cache, which slows everything
else on a shared machine); ``--cold none`` skips cold passes.

First (``--direct-rounds R``, 0 skips it) the direct cell of ``benchmarks.stream_direct``: the
stream iterated without a DataLoader at its default batch size 1, against ``np.load``, on the
dataset and on copies of it in the other store layouts (no chunk checksums, other label codecs),
then the label codecs alone; ``--baseline-source DIR`` adds an earlier synthgen's direct cell.
``--no-grid`` runs only that.

LitData is optional (``pip install litdata`` pulls torchvision and a CUDA torch as
dependencies; installing ``litdata`` and its light dependencies with ``--no-deps`` into a
separate directory on ``PYTHONPATH`` is enough, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset as TorchDataset

FIELDS = ("labels", "view1")
LITDATA_CHUNK_BYTES = "64MB"


# -- data preparation ---------------------------------------------------------------------------

def prepare_synthgen(root: Path, n: int, size: int) -> Path:
    """Generate (or finish; committed shards are kept) the label-ensemble dataset."""
    from synthgen.engines import get_engine
    from synthgen.runner import generate

    path = root / "synthgen.zarr"
    started = time.perf_counter()
    report = generate(get_engine("label-ensemble", size=size), str(path), n, seed=0,
                      backend="local", progress=False)
    if report.written_shards:
        print(f"generated {report.samples_written} samples in {time.perf_counter() - started:.1f} s "
              f"-> {path}", file=sys.stderr)
    return path


def prepare_npy(root: Path, zarr_path: Path, n: int) -> Path:
    """One ``.npy`` file per sample and field: ``<dir>/<index:06d>_<field>.npy``."""
    import synthgen

    out = root / "npy"
    done = out / "DONE"
    if done.exists() and done.read_text() == str(n):
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ds = synthgen.open_dataset(str(zarr_path))
    for shard in range(ds.info.num_shards):
        start, _ = ds.info.shard_range(shard)
        arrays = ds.read_shard(shard, list(FIELDS))
        for offset in range(len(arrays[FIELDS[0]])):
            for field in FIELDS:
                np.save(out / f"{start + offset:06d}_{field}.npy", arrays[field][offset])
    done.write_text(str(n))
    return out


def _litdata_item(index: int, npy_dir: str) -> dict[str, Any]:
    item: dict[str, Any] = {"index": index}
    for field in FIELDS:
        item[field] = np.load(os.path.join(npy_dir, f"{index:06d}_{field}.npy"))
    return item


def prepare_litdata(root: Path, npy_dir: Path, n: int) -> Path | None:
    """LitData optimized copy of the same samples (uncompressed chunks of LITDATA_CHUNK_BYTES);
    None when litdata cannot be imported."""
    try:
        import litdata
    except ImportError:
        return None
    out = root / "litdata"
    done = root / "litdata.DONE"
    if done.exists() and done.read_text() == str(n):
        return out
    shutil.rmtree(out, ignore_errors=True)
    with contextlib.redirect_stdout(sys.stderr):
        litdata.optimize(fn=functools.partial(_litdata_item, npy_dir=str(npy_dir)), inputs=list(range(n)),
                         output_dir=str(out), chunk_bytes=LITDATA_CHUNK_BYTES, num_workers=1,
                         verbose=False)
    done.write_text(str(n))
    return out


# -- readers ------------------------------------------------------------------------------------

class NpyDataset(TorchDataset):
    """The baseline: one ``np.load`` per sample and field."""

    def __init__(self, directory: Path, n: int) -> None:
        self.directory, self.n = str(directory), n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {field: torch.from_numpy(np.load(os.path.join(self.directory, f"{index:06d}_{field}.npy")))
                for field in FIELDS}
        item["index"] = torch.tensor(index, dtype=torch.int64)
        return item


def npy_loader(directory: Path, n: int, shuffle: bool, workers: int, batch_size: int) -> Iterable:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(NpyDataset(directory, n), batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      drop_last=False, generator=generator)


def litdata_loader(directory: Path, n: int, shuffle: bool, workers: int, batch_size: int) -> Iterable:
    from litdata import StreamingDataLoader, StreamingDataset

    dataset = StreamingDataset(str(directory), shuffle=shuffle, drop_last=False, seed=0)
    return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=workers)


def synthgen_loader(path: Path, n: int, shuffle: bool, workers: int, batch_size: int) -> Iterable:
    from synthgen.stream import ShardStream

    stream = ShardStream(str(path), fields=FIELDS, seed=0, shuffle=shuffle, batch_size=batch_size)
    return DataLoader(stream, batch_size=None, num_workers=workers)  # the stream yields whole batches




# -- page cache ---------------------------------------------------------------------------------

def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def evict(files: list[Path], method: str) -> None:
    if method == "drop_caches":
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return
    os.sync()
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_bytes(files: list[Path]) -> int | None:
    """Bytes of ``files`` in the page cache (``fincore``), None when fincore is unavailable."""
    if shutil.which("fincore") is None or not files:
        return None
    total = 0
    for start in range(0, len(files), 500):
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES",
                              *map(str, files[start:start + 500])], capture_output=True, text=True)
        if out.returncode != 0:
            return None
        total += sum(int(line) for line in out.stdout.split())
    return total


# -- timing -------------------------------------------------------------------------------------

def timed_pass(make: Callable[[], Iterable], n: int) -> dict[str, float]:
    """One epoch: seconds from creating the iterator to the last batch, time to first batch."""
    loader = make()
    seen = np.zeros(n, dtype=np.int64)
    started = time.perf_counter()
    first = None
    for batch in loader:
        if first is None:
            first = time.perf_counter()
        seen[batch["index"].numpy()] += 1
    seconds = time.perf_counter() - started
    del loader
    if not (seen == 1).all():
        raise RuntimeError(f"a pass did not yield every sample once ({int((seen == 0).sum())} missing, "
                           f"{int((seen > 1).sum())} repeated)")
    return {"seconds": seconds, "first_batch_s": (first or started) - started}


def check_reader(make: Callable[[], Iterable], reference: Callable[[int], dict[str, np.ndarray]]) -> None:
    """Every sample of one pass equals the dataset's bytes."""
    for batch in make():
        for row, index in enumerate(batch["index"].tolist()):
            expected = reference(index)
            for field in FIELDS:
                got = np.asarray(batch[field][row])
                if got.dtype != expected[field].dtype or not np.array_equal(got, expected[field]):
                    raise RuntimeError(f"sample {index} field {field} differs from the dataset")


# -- one reader in a fresh process ---------------------------------------------------------------

MAKERS = {"npy": npy_loader, "litdata": litdata_loader, "synthgen": synthgen_loader}


def child(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``spec["passes"]`` ("check", "timed") of one reader in this (fresh) process: a reader
    that keeps files mapped (LitData does, after its loader is gone) cannot leave pages behind
    that the next cold pass would find, and no reader inherits another's state."""
    torch.set_num_threads(spec["torch_threads"])
    make = functools.partial(MAKERS[spec["reader"]], Path(spec["data"]), spec["n"], spec["shuffle"],
                             spec["workers"], spec["batch_size"])
    results = []
    for kind in spec["passes"]:
        if kind == "check":
            import synthgen

            ds = synthgen.open_dataset(spec["zarr"])
            cache: dict[int, dict[str, np.ndarray]] = {}

            def reference(index: int) -> dict[str, np.ndarray]:
                if index not in cache:
                    cache.clear()
                    shard = ds.shard_of(index)
                    start, _ = ds.info.shard_range(shard)
                    arrays = ds.read_shard(shard, list(FIELDS))
                    cache.update({start + i: {f: arrays[f][i] for f in FIELDS} for i in range(len(arrays[FIELDS[0]]))})
                return cache[index]

            check_reader(make, reference)
            results.append({"checked": True})
        elif kind == "profile":
            profile = cProfile.Profile()
            profile.enable()
            results.append(timed_pass(make, spec["n"]))
            profile.disable()
            profile.dump_stats(spec["profile"])
        else:
            results.append(timed_pass(make, spec["n"]))
    return results


MALLOC_TUNED = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": str(2**31 - 1),
                "MALLOC_TRIM_THRESHOLD_": str(2**32 - 1)}


def in_child(spec: dict[str, Any]) -> list[dict[str, Any]]:
    env = {**os.environ, **(MALLOC_TUNED if spec.get("malloc_tuned") else {})}
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{spec['reader']} (shuffle={spec['shuffle']}, workers={spec['workers']}) failed:\n"
                           + out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- main ---------------------------------------------------------------------------------------

def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    zarr_path = prepare_synthgen(root, args.n, args.size)
    npy_dir = prepare_npy(root, zarr_path, args.n)
    lit_dir = None if args.no_litdata or args.no_grid else prepare_litdata(root, npy_dir, args.n)
    sample_bytes = args.size ** 3 * 3  # uint8 labels + float16 view1

    data = {"npy": npy_dir, "synthgen": zarr_path}
    reader_files: dict[str, list[Path]] = {"npy": files_under(npy_dir)}
    # the synthgen reader touches the two fields' arrays and the metadata, not view2
    reader_files["synthgen"] = [p for p in files_under(zarr_path)
                                if not p.relative_to(zarr_path).parts[0] == "view2"]
    readers = ["npy"]
    notes = []
    if lit_dir is not None:
        data["litdata"] = lit_dir
        reader_files["litdata"] = files_under(lit_dir)
        readers.append("litdata")
    else:
        notes.append("litdata not importable (or --no-litdata): skipped")
    if not args.no_synthgen:
        readers.append("synthgen")
    stored = {name: sum(p.stat().st_size for p in reader_files[name]) for name in readers}

    def spec(name: str, shuffle: bool, workers: int, passes: list[str]) -> dict[str, Any]:
        return {"reader": name, "data": str(data[name]), "zarr": str(zarr_path), "n": args.n,
                "shuffle": shuffle, "workers": workers, "batch_size": args.batch_size, "passes": passes,
                "profile": args.profile, "torch_threads": args.torch_threads,
                "malloc_tuned": args.malloc_tuned}

    direct, codecs = None, None
    if args.direct_rounds and not args.no_synthgen:
        from benchmarks.stream_direct import before_after, codec_table, direct_cell, prepare_variants

        layouts = prepare_variants(root, zarr_path)
        direct = direct_cell(layouts, npy_dir, args.n, args.direct_rounds, args.torch_threads)
        codecs = codec_table(npy_dir, args.n)
        if args.baseline_source:
            direct["before_after"] = before_after(args.baseline_source, layouts, npy_dir, args.n,
                                                  args.direct_rounds, args.torch_threads)

    variants = [(name, shuffle) for name in readers for shuffle in (False, True)] if not args.no_grid else []
    for name, shuffle in variants:  # correctness, once per variant, untimed
        in_child(spec(name, shuffle, max(args.workers), ["check"]))
    if variants:
        print(f"checked: {', '.join(readers)} deliver the dataset's bytes, each sample once", file=sys.stderr)

    raw: list[dict[str, Any]] = []
    for round_ in range(args.rounds if variants else 0):
        for workers in args.workers:
            for name, shuffle in variants:
                resident = None
                if args.cold != "none":
                    evict(reader_files[name], args.cold)
                    resident = resident_bytes(reader_files[name])
                first, second = in_child(spec(name, shuffle, workers, ["timed", "timed"]))
                passes = [("cold", first), ("warm", second)] if args.cold != "none" else [("warm", second)]
                for cache, result in passes:
                    row = {"round": round_, "workers": workers, "reader": name, "shuffle": shuffle,
                           "cache": cache, "resident_bytes_before": resident if cache == "cold" else None,
                           **result, "samples_per_s": args.n / result["seconds"],
                           "mb_per_s": args.n * sample_bytes / 1e6 / result["seconds"]}
                    raw.append(row)
                    print(f"round {round_} K={workers} {name:8s} shuffle={int(shuffle)} {cache}: "
                          f"{row['samples_per_s']:7.1f} samples/s {row['mb_per_s']:7.1f} MB/s "
                          f"(first batch {result['first_batch_s'] * 1e3:.0f} ms"
                          + (f", resident before {resident / 1e6:.1f} MB"
                             if cache == "cold" and resident is not None else "")
                          + ")", file=sys.stderr)

    if args.profile and not args.no_synthgen:
        in_child(spec("synthgen", True, 0, ["timed", "profile"]))
        print(f"cProfile of a warm synthgen pass (shuffle, 0 workers) -> {args.profile}", file=sys.stderr)

    caches = ["cold", "warm"] if args.cold != "none" else ["warm"]
    summary = []
    for workers in args.workers if variants else []:
        for name, shuffle in variants:
            for cache in caches:
                key = (workers, shuffle, cache)
                rows = [r for r in raw if (r["workers"], r["shuffle"], r["cache"]) == key and r["reader"] == name]
                base = {r["round"]: r for r in raw
                        if (r["workers"], r["shuffle"], r["cache"]) == key and r["reader"] == "npy"}
                ratios = [base[r["round"]]["seconds"] / r["seconds"] for r in rows]
                summary.append({
                    "workers": workers, "reader": name, "shuffle": shuffle, "cache": cache,
                    "samples_per_s": statistics.median(r["samples_per_s"] for r in rows),
                    "mb_per_s": statistics.median(r["mb_per_s"] for r in rows),
                    "first_batch_ms": statistics.median(r["first_batch_s"] for r in rows) * 1e3,
                    "ratio_vs_npy": statistics.median(ratios),
                    "ratio_vs_npy_min": min(ratios), "ratio_vs_npy_max": max(ratios)})
    return {"n": args.n, "size": args.size, "batch_size": args.batch_size, "rounds": args.rounds,
            "workers": args.workers, "fields": list(FIELDS), "bytes_per_sample_delivered": sample_bytes,
            "stored_bytes_per_sample": {k: v / args.n for k, v in stored.items()},
            "cold_method": args.cold, "torch_threads": args.torch_threads,
            "malloc_env": MALLOC_TUNED if args.malloc_tuned else None, "reader_source": reader_source(),
            "litdata_chunk_bytes": LITDATA_CHUNK_BYTES if lit_dir else None,
            "notes": notes, "environment": environment(), "direct": direct, "label_codecs": codecs,
            "summary": summary, "passes": raw}


def reader_source() -> dict[str, str]:
    """SHA-256 (first 12 hex digits) of synthgen's store and stream sources: which version of
    the reader a result measured (they change while it is being written)."""
    import hashlib

    import synthgen.store

    root = Path(synthgen.store.__file__).parent.parent
    digest = hashlib.sha256()
    for file in sorted([*root.glob("store/*.py"), *root.glob("stream/*.py")]):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return {"synthgen_store_stream_sha256": digest.hexdigest()[:12],
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def environment() -> dict[str, Any]:
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for module in ("zarr", "litdata", "synthgen"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return {**versions, "cpus": os.cpu_count(), "start_method": torch.multiprocessing.get_start_method()}


def print_table(result: dict[str, Any]) -> None:
    print(f"n={result['n']} size={result['size']} batch={result['batch_size']} rounds={result['rounds']} "
          f"cold={result['cold_method']} torch_threads={result['torch_threads']} "
          f"malloc_tuned={result['malloc_env'] is not None} "
          f"reader={result['reader_source']['synthgen_store_stream_sha256']}; MB = 1e6 bytes delivered ({result['bytes_per_sample_delivered']} "
          f"per sample); ratio = median over rounds of (npy seconds / reader seconds), same round")
    print("stored bytes per sample: " + ", ".join(f"{k} {v / 1e6:.2f} MB"
                                                   for k, v in result["stored_bytes_per_sample"].items()))
    for note in result["notes"]:
        print(f"note: {note}")
    if result["direct"]:
        from benchmarks.stream_direct import print_direct

        print_direct(result["direct"], result["label_codecs"])
    if not result["summary"]:
        return
    print("| workers | reader | shuffle | cache | samples/s | MB/s | first batch ms | x npy (min-max) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in result["summary"]:
        print(f"| {row['workers']} | {row['reader']} | {'yes' if row['shuffle'] else 'no'} | {row['cache']} | "
              f"{row['samples_per_s']:.0f} | {row['mb_per_s']:.0f} | {row['first_batch_ms']:.0f} | "
              f"{row['ratio_vs_npy']:.2f} ({row['ratio_vs_npy_min']:.2f}-{row['ratio_vs_npy_max']:.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="samples (default 128; ~8 MiB each at 128^3)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader num_workers")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="repeats of the whole grid (medians reported)")
    parser.add_argument("--cold", choices=("fadvise", "drop_caches", "none"), default="fadvise")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="intra-op threads of the consuming process (collate with 0 workers; "
                             "DataLoader workers always use 1). Default 1: OpenMP spinning in torch.stack "
                             "on a busy 2-core machine made 0-worker timings swing up to 10x")
    parser.add_argument("--malloc-tuned", action="store_true",
                        help="run every reader with MALLOC_ARENA_MAX=1 and huge MALLOC_MMAP_THRESHOLD_/"
                             "MALLOC_TRIM_THRESHOLD_ (no page faults on fresh large buffers)")
    parser.add_argument("--json", help="write all passes and the summary here")
    parser.add_argument("--keep", help="data directory to create or reuse (default: a temporary one, deleted)")
    parser.add_argument("--profile", help="cProfile a warm synthgen pass (0 workers, shuffle) into this file")
    parser.add_argument("--direct-rounds", type=int, default=7,
                        help="rounds of the direct cell (0 workers, batch 1, no DataLoader) and its layout "
                             "variants, alternated with np.load in one process (0: skip it and the codec table)")
    parser.add_argument("--no-grid", action="store_true", help="only the direct cell and the codec table")
    parser.add_argument("--baseline-source", metavar="DIR",
                        help="also time the direct cell with this synthgen source tree (e.g. `git archive "
                             "COMMIT synthgen | tar -x -C DIR`) on the zstd-no-crc copy, alternated with today's")
    parser.add_argument("--no-litdata", action="store_true")
    parser.add_argument("--no-synthgen", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.n % args.batch_size:
        parser.error("--n must be a multiple of --batch-size (every reader then yields whole batches)")
    if args.cold == "drop_caches" and not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        parser.error("--cold drop_caches needs root; use --cold fadvise")
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = Path(args.keep)
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stream-bench-")))
        result = run(args, root)
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
