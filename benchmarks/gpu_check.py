"""One GPU check: every measurement synthgen owes a CUDA machine, in one run, into one JSON file.

Run: ``bash benchmarks/gpu_check.sh [OUT.json]`` (sets up, then runs this module), or
``.venv/bin/python -m benchmarks.gpu_check --json OUT.json [--budget 480]`` in a set-up checkout.

Parts, each a subprocess with its own time limit inside the overall budget (8 minutes by
default), the JSON rewritten after each so a cut-off run still leaves what it measured:

1. ``cuda_tests``: the tests marked ``cuda`` (``pytest -m cuda``): counts of passed, failed,
   skipped, and the failures' names.
2. ``engines``: ``benchmarks.engine_devices`` for both engines at 128^3 and 192^3: samples/s on
   one GPU, CPU-seconds per sample on one thread, GPU/CPU agreement.
3. ``stream``: a 128^3 label-ensemble dataset streamed into device memory (ShardStream +
   DataLoader workers + pinned memory + ``.to(device)``): samples/s and GB/s delivered.
4. ``contrastive``: ``synthgen-pretrain contrastive`` with the paper's UNet on 128^3 crops and
   mixed precision (``amp: auto``) on that dataset; its data-wait fraction and samples/s as the
   loop reports them (``RUN/metrics.jsonl``).
5. ``convexadam``: ``benchmarks.convexadam_parity`` on the device: ours against the reference
   ``convexadam`` on the shared pairs, seconds and Dice.
6. ``randreg``: ``benchmarks.randreg_step`` at the paper's 224^3: seconds to make a random-shapes
   pair on the GPU against a training step of the paper's network, and the fraction.

Without CUDA it says so in one line, runs the CPU parts (the engines' CPU columns at 128^3 and
the stream into host memory, on a smaller dataset) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class Budget:
    """The seconds left of the whole check; each part gets its own limit, capped by what is left."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def limit(self, part_seconds: float) -> float:
        return max(1.0, min(part_seconds, self.deadline - time.monotonic()))


def run_part(command: list[str], timeout: float, log: Path) -> dict[str, Any]:
    """Run ``command`` in the repository root with ``timeout`` seconds; its output goes to ``log``.
    Returns ``{"rc", "seconds", "timed_out", "log"}``."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        try:
            rc = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
            timed_out = False
        except subprocess.TimeoutExpired:
            rc, timed_out = None, True
    return {"rc": rc, "seconds": round(time.perf_counter() - started, 1), "timed_out": timed_out, "log": str(log)}


def cuda_tests(work: Path, timeout: float) -> dict[str, Any]:
    report = work / "cuda_tests.xml"
    result = run_part([str(BIN / "python"), "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                       f"--junitxml={report}"], timeout, work / "cuda_tests.log")
    if report.exists():
        cases = ElementTree.parse(report).getroot().iter("testcase")
        outcome: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
        for case in cases:
            name = f"{case.get('classname')}::{case.get('name')}"
            kind = ("failed" if case.find("failure") is not None or case.find("error") is not None
                    else "skipped" if case.find("skipped") is not None else "passed")
            outcome[kind].append(name)
        result.update({kind: len(names) for kind, names in outcome.items()}, failures=outcome["failed"])
    return result


def engines(work: Path, timeout: float, device: str | None, sizes: list[int]) -> dict[str, Any]:
    out = work / "engines.json"
    command = [str(BIN / "python"), "-m", "benchmarks.engine_devices", "--sizes", *map(str, sizes),
               "--samples", "8", "--compare", "2", "--json", str(out)]
    result = run_part(command + (["--device", device] if device else []), timeout, work / "engines.log")
    if out.exists():
        result["results"] = json.loads(out.read_text())
    return result


def make_dataset(work: Path, timeout: float, n: int, size: int) -> dict[str, Any]:
    path = work / "stream.zarr"
    result = run_part([str(BIN / "synthgen"), "generate", "--engine", "label-ensemble", "--n", str(n),
                       "--size", str(size), "--shard-size", "8", "--out", str(path), "--overwrite"],
                      timeout, work / "generate.log")
    result["path"] = str(path)
    return result


def stream_part(work: Path, timeout: float, dataset: str, device: str) -> dict[str, Any]:
    out = work / "stream.json"
    result = run_part([str(BIN / "python"), "-m", "benchmarks.gpu_check", "--stream-child", dataset,
                       "--device", device, "--json", str(out)], timeout, work / "stream.log")
    if out.exists():
        result.update(json.loads(out.read_text()))
    return result


def stream_into_device(path: str, device: str, workers: int, batch_size: int, epochs: int) -> dict[str, Any]:
    """Samples/s and GB/s of ``labels``, ``view1``, ``view2`` delivered into ``device`` memory by
    ShardStream through a DataLoader with ``workers`` workers and pinned memory, over ``epochs``
    passes after one warm-up pass (the page cache is then warm: this is the reader, not the disk)."""
    from torch.utils.data import DataLoader

    from synthgen.stream import ShardStream

    stream = ShardStream(path, fields=("labels", "view1", "view2"), batch_size=batch_size)
    loader = DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=device.startswith("cuda"),
                        persistent_workers=workers > 0)
    samples = nbytes = 0
    elapsed = 0.0
    for epoch in range(epochs + 1):
        stream.set_epoch(epoch)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for batch in loader:
            moved = {name: value.to(device, non_blocking=True) for name, value in batch.items()}
            if epoch:
                samples += len(moved["index"])
                nbytes += sum(value.numel() * value.element_size() for value in moved.values())
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        if epoch:
            elapsed += time.perf_counter() - started
    return {"device": device, "workers": workers, "batch_size": batch_size, "samples": samples,
            "samples_per_s": samples / elapsed, "gb_per_s": nbytes / elapsed / 1e9}


def contrastive(work: Path, timeout: float, dataset: str, steps: int) -> dict[str, Any]:
    run = work / "contrastive-run"
    result = run_part([str(BIN / "synthgen-pretrain"), "contrastive", "--data", dataset, "--out", str(run),
                       "--set", f"train.steps={steps}", "--set", "train.log_every=10", "--set", "train.val_every=0",
                       "--set", "data.workers=8", "--set", "data.val_shards=0"], timeout, work / "contrastive.log")
    metrics = run / "metrics.jsonl"
    if metrics.exists():
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        data = [r for r in records if r.get("kind") == "data"]
        result["intervals"] = data
        if len(data) > 1:  # the first interval holds start-up (cuDNN autotuning, worker start)
            steady = data[1:]
            result["steady_wait_fraction"] = sum(r["wait_fraction"] for r in steady) / len(steady)
            result["steady_samples_per_s"] = sum(r["samples_per_s"] for r in steady) / len(steady)
    return result


def convexadam(work: Path, timeout: float, device: str) -> dict[str, Any]:
    out = work / "convexadam.json"
    result = run_part([str(BIN / "python"), "-m", "benchmarks.convexadam_parity", "--device", device,
                       "--out", str(out)], timeout, work / "convexadam.log")
    if out.exists():
        result["results"] = json.loads(out.read_text())
    return result


def randreg(work: Path, timeout: float, device: str) -> dict[str, Any]:
    out = work / "randreg.json"
    result = run_part([str(BIN / "python"), "-m", "benchmarks.randreg_step", "--size", "224", "--device", device,
                       "--steps", "3", "--json", str(out)], timeout, work / "randreg.log")
    if out.exists():
        result["results"] = json.loads(out.read_text())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"),
                        help="where every figure goes (default benchmarks/results/gpu_check.json)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all parts (default 480)")
    parser.add_argument("--work", help="folder for datasets, runs and logs (default: beside --json)")
    parser.add_argument("--stream-child", metavar="DATASET", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stream_child:
        workers = min(8, os.cpu_count() or 1)
        figures = stream_into_device(args.stream_child, args.device, workers, batch_size=4, epochs=2)
        Path(args.json).write_text(json.dumps(figures, indent=1))
        return 0

    out = Path(args.json).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="gpu_check-", dir=out.parent))
    work.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget)
    cuda = torch.cuda.is_available()
    figures: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
                               "cuda": cuda, "device": torch.cuda.get_device_name(0) if cuda else None,
                               "cpus": os.cpu_count(), "work": str(work)}

    def record(name: str, result: dict[str, Any]) -> None:
        figures[name] = result
        out.write_text(json.dumps(figures, indent=1))
        print(f"gpu_check: {name} done in {result.get('seconds', 0)} s"
              f"{' (TIMED OUT)' if result.get('timed_out') else ''}", flush=True)

    if not cuda:
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); running the CPU parts only",
              flush=True)
        record("engines", engines(work, budget.limit(150), None, [128]))
        dataset = make_dataset(work, budget.limit(120), n=16, size=128)
        record("dataset", dataset)
        record("stream", stream_part(work, budget.limit(90), dataset["path"], "cpu"))
    else:
        record("cuda_tests", cuda_tests(work, budget.limit(100)))
        record("engines", engines(work, budget.limit(110), "cuda", [128, 192]))
        dataset = make_dataset(work, budget.limit(60), n=64, size=128)
        record("dataset", dataset)
        record("stream", stream_part(work, budget.limit(50), dataset["path"], "cuda"))
        record("contrastive", contrastive(work, budget.limit(100), dataset["path"], steps=60))
        record("convexadam", convexadam(work, budget.limit(120), "cuda"))
        record("randreg", randreg(work, budget.limit(60), "cuda"))
    print(f"gpu_check: figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
