"""Engines on a GPU next to the CPU: samples/s on one GPU, CPU-seconds per sample on one thread,
and how far the GPU's samples are from the CPU's, for both engines at the given sizes.

Run: .venv/bin/python -m benchmarks.engine_devices [--device cuda] [--sizes 128 192]
     [--samples 10] [--compare 4] [--json OUT]

GPU throughput is wall-clock over ``--samples`` consecutive samples of one process after two
warm-up samples (``torch.cuda.synchronize`` around the timed loop): what one shard task with a
whole GPU (``--gpus-per-task 1``) generates. CPU cost is ``time.process_time()`` with one
intra-op thread, median over samples (``benchmarks.engine_throughput.cpu_seconds``). Agreement
compares sample i made on the device with sample i made on the CPU, field by field: label maps
as the fraction of equal voxels, images and displacements as the largest and mean absolute
difference. Random numbers are drawn on the CPU for both, so differences come only from
floating-point kernels (and the label decisions they flip). Without CUDA only the CPU columns
are measured.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from benchmarks.engine_throughput import cpu_seconds, summarize
from synthgen.engines import Engine, get_engine

ENGINES = ("random-shapes", "label-ensemble")


def device_samples_per_s(engine: Engine, device: str, count: int) -> dict[str, float]:
    """Samples/s of ``engine.sample`` on ``device`` over ``count`` samples after two warm-ups."""
    with torch.inference_mode():
        for index in (10_000, 10_001):
            engine.sample(0, index, device=device)
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for index in range(count):
            engine.sample(0, index, device=device)
        torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
    return {"samples": count, "wall_s": wall, "samples_per_s": count / wall}


def agreement(engine: Engine, device: str, count: int) -> dict[str, dict[str, float]]:
    """Per field, over samples 0..count-1: labels -> fraction of voxels equal on ``device`` and
    CPU; other fields -> max and mean |device - CPU| (float32)."""
    found: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for index in range(count):
            on_cpu = engine.sample(0, index)
            on_device = {name: tensor.cpu() for name, tensor in engine.sample(0, index, device=device).items()}
            for name, spec in engine.schema.items():
                entry = found.setdefault(name, {})
                if spec.kind == "labels":
                    equal = (on_cpu[name] == on_device[name]).double().mean().item()
                    entry["min_equal_fraction"] = min(entry.get("min_equal_fraction", 1.0), equal)
                else:
                    diff = (on_cpu[name].float() - on_device[name].float()).abs()
                    entry["max_abs"] = max(entry.get("max_abs", 0.0), diff.max().item())
                    entry["mean_abs"] = entry.get("mean_abs", 0.0) + diff.mean().item() / count
    return found


def measure(engine_name: str, size: int, device: str | None, samples: int, compare: int) -> dict[str, Any]:
    engine = get_engine(engine_name, size=size)
    cpu = summarize(cpu_seconds(lambda i: engine.sample(0, i), samples))
    result: dict[str, Any] = {"engine": engine_name, "size": size, "cpu_s_per_sample": cpu,
                              "cpu_samples_per_s_per_core": 1.0 / cpu["median_s"]}
    if device is not None:
        gpu = device_samples_per_s(engine, device, samples)
        result.update(device=torch.cuda.get_device_name(device), gpu=gpu,
                      gpu_vs_one_core=gpu["samples_per_s"] * cpu["median_s"],
                      agreement=agreement(engine, device, compare))
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| engine | size | CPU-s/sample (1 thread) | samples/s per core | samples/s per GPU | GPU / core |",
             "|---|---|---|---|---|---|"]
    for r in results:
        gpu = f"{r['gpu']['samples_per_s']:.1f}" if "gpu" in r else "-"
        ratio = f"{r['gpu_vs_one_core']:.0f}x" if "gpu" in r else "-"
        lines.append(f"| {r['engine']} | {r['size']}^3 | {r['cpu_s_per_sample']['median_s']:.3f} | "
                     f"{r['cpu_samples_per_s_per_core']:.2f} | {gpu} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else None,
                        help="GPU to measure (default: cuda when available, else CPU only)")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 192])
    parser.add_argument("--samples", type=int, default=10, help="timed samples per engine, size and device")
    parser.add_argument("--compare", type=int, default=4, help="samples compared between the GPU and the CPU")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [measure(engine, size, args.device, args.samples, args.compare)
               for engine in args.engines for size in args.sizes]
    text = json.dumps(results, indent=2)
    print(text)
    print(markdown(results))
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
