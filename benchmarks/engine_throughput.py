"""Engine throughput: CPU-seconds per sample on one thread, samples/s on all cores, the speed-up
over a re-implementation of the published pipeline (random-shapes: Chen et al.; label-ensemble:
anatomix steps 1 and 2, ``benchmarks.published_anatomix``), and the store's write throughput for
one whole shard of the engine's samples.

Run: .venv/bin/python -m benchmarks.engine_throughput [--engine label-ensemble] [--size 128]
     [--samples 10] [--published-samples 3] [--json OUT]

All timings are ``time.process_time()`` of a process with one intra-op thread (``torch
.set_num_threads(1)``), medians over samples after one warm-up sample: on a shared, noisy machine
that approximates uncontended single-core time. Wall-clock numbers are only used for the
all-cores throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.store_write import measure_store_write
from synthgen.engines import Engine, get_engine


# -- the published pipeline ---------------------------------------------------------------------
# A faithful, CPU-only re-implementation of MIR ``random_shapes.gen_shapes`` (junyuchen245/MIR,
# as described in /work/shared/reference/engines.md §3): perlin-numpy style gradient noise,
# velocity Perlin upsampled to full resolution, scaling and squaring at full resolution with a
# voxelmorph SpatialTransformer, amplitude applied after integration, four warps. It exists only
# to time the published algorithm next to ours on the same machine; its quirks are kept.

def _published_perlin(shape: tuple[int, int, int], res: tuple[int, int, int],
                      rand1: np.ndarray, rand2: np.ndarray) -> torch.Tensor:
    """perlin-numpy ``generate_perlin_noise_3d`` on torch: angles (2 pi r1, 2 pi r2), gradients
    repeated over every voxel, eight corner ramps."""
    delta = [r / s for r, s in zip(res, shape)]
    d = [s // r for s, r in zip(shape, res)]
    axes = [torch.arange(0, r, dl, dtype=torch.float64)[:s] for r, dl, s in zip(res, delta, shape)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) % 1
    theta = 2 * np.pi * torch.from_numpy(rand1)
    phi = 2 * np.pi * torch.from_numpy(rand2)
    gradients = torch.stack((torch.sin(phi) * torch.cos(theta), torch.sin(phi) * torch.sin(theta),
                             torch.cos(phi)), dim=3)
    gradients = gradients.repeat_interleave(d[0], 0).repeat_interleave(d[1], 1).repeat_interleave(d[2], 2)
    corners = {}
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                g = gradients[a * d[0]:gradients.shape[0] - (1 - a) * d[0],
                              b * d[1]:gradients.shape[1] - (1 - b) * d[1],
                              c * d[2]:gradients.shape[2] - (1 - c) * d[2]]
                ramp = torch.stack((grid[..., 0] - a, grid[..., 1] - b, grid[..., 2] - c), dim=3)
                corners[a, b, c] = torch.sum(ramp * g, dim=3)
    t = 6 * grid ** 5 - 15 * grid ** 4 + 10 * grid ** 3
    n00 = corners[0, 0, 0] * (1 - t[..., 0]) + t[..., 0] * corners[1, 0, 0]
    n10 = corners[0, 1, 0] * (1 - t[..., 0]) + t[..., 0] * corners[1, 1, 0]
    n01 = corners[0, 0, 1] * (1 - t[..., 0]) + t[..., 0] * corners[1, 0, 1]
    n11 = corners[0, 1, 1] * (1 - t[..., 0]) + t[..., 0] * corners[1, 1, 1]
    n0 = (1 - t[..., 1]) * n00 + t[..., 1] * n10
    n1 = (1 - t[..., 1]) * n01 + t[..., 1] * n11
    return ((1 - t[..., 2]) * n0 + t[..., 2] * n1).float()


def _published_fractal(shape, res, octaves, rand1s, rand2s) -> torch.Tensor:
    noise = torch.zeros(shape)
    frequency, amplitude = 1, 1.0
    for octave in range(octaves):
        noise += amplitude * _published_perlin(shape, tuple(frequency * r for r in res),
                                               rand1s[octave], rand2s[octave])
        frequency *= 2
        amplitude *= 0.5
    return noise


def _published_transform(src: torch.Tensor, flow: torch.Tensor, mode: str) -> torch.Tensor:
    """voxelmorph SpatialTransformer as used by MIR, identity grid built per call."""
    shape = flow.shape[2:]
    grid = torch.stack(torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij"))[None].float()
    new_locs = grid + flow
    for i in range(3):
        new_locs[:, i] = 2 * (new_locs[:, i] / (shape[i] - 1) - 0.5)
    new_locs = new_locs.permute(0, 2, 3, 4, 1)[..., [2, 1, 0]]
    return F.grid_sample(src, new_locs, mode=mode, align_corners=False)


def _published_defs(size: int, res: tuple[int, int, int], rng: np.random.RandomState) -> torch.Tensor:
    """MIR ``gen_defs``: per component Perlin at size/4, upsampled x4, VecInt(5) at full res."""
    out = (size // 4,) * 3
    components = []
    for _ in range(3):
        octaves = rng.randint(1, 3)
        r1s, r2s, frequency = [], [], 1
        for _ in range(octaves):
            r1s.append(rng.rand(*(frequency * r + 1 for r in res)))
            r2s.append(rng.rand(*(frequency * r + 1 for r in res)))
            frequency *= 2
        noise = _published_fractal(out, res, octaves, r1s, r2s)
        components.append(F.interpolate(noise[None, None], scale_factor=4, mode="trilinear",
                                        align_corners=False))
    vec = torch.cat(components, dim=1) / 2 ** 5
    for _ in range(5):
        vec = vec + _published_transform(vec, vec, "bilinear")
    return vec


def published_pair(size: int, rng: np.random.RandomState, num_labels: int = 16) -> list[torch.Tensor]:
    """One pair by the published algorithm (MIR ``gen_shapes``; res = size // 32 as train_SSL.py)."""
    res = (size // 32,) * 3
    coarse = (size // 16,) * 3
    channels = []
    for _ in range(num_labels):
        r1, r2 = rng.rand(*(r + 1 for r in res)), rng.rand(*(r + 1 for r in res))
        noise = _published_fractal(coarse, res, 1, [r1], [r2])
        noise = F.interpolate(noise[None, None], scale_factor=16, mode="trilinear", align_corners=False)
        channels.append((noise - noise.min()) / (noise.max() - noise.min()))
    def_1 = _published_defs(size, res, rng)
    def_2 = _published_defs(size, res, rng)
    label = torch.argmax(torch.cat(channels, dim=1), dim=1, keepdim=True)
    low = np.array([0.0] + [25.0] * (num_labels - 1))
    means = torch.from_numpy((low - 225.0) * rng.rand(num_labels) + 225.0)
    image = label.float().clone()
    for i in range(num_labels):
        image = torch.where(label.float() == i, means[i].float(), image)
    amplitudes = [4, 6, 8, 14, 16, 18]
    def_1 = def_1 * amplitudes[rng.randint(len(amplitudes))]
    def_2 = def_2 * amplitudes[rng.randint(len(amplitudes))]
    label_1 = _published_transform(label.float(), def_1, "nearest")
    image_1 = _published_transform(image, def_1, "bilinear")
    label_2 = _published_transform(label.float(), def_2, "nearest")
    image_2 = _published_transform(image, def_2, "bilinear")
    image_1 = (image_1 - image_1.min()) / (image_1.max() - image_1.min())
    image_2 = (image_2 - image_2.min()) / (image_2.max() - image_2.min())
    return [image_1, image_2, label_1, label_2]


# -- measurements -------------------------------------------------------------------------------

def cpu_seconds(make_sample, count: int) -> list[float]:
    """Process CPU seconds of ``make_sample(i)`` for i in 1..count, after a warm-up call (i = 0)."""
    make_sample(0)
    times = []
    for i in range(1, count + 1):
        start = time.process_time()
        make_sample(i)
        times.append(time.process_time() - start)
    return times


def _init_worker() -> None:
    torch.set_num_threads(1)


def _worker_samples(engine_name: str, config: dict[str, Any], indices: list[int]) -> int:
    engine = get_engine(engine_name, **config)
    for index in indices:
        engine.sample(0, index)
    return len(indices)


def all_cores_throughput(engine: Engine, workers: int, per_worker: int) -> dict[str, float]:
    """Samples/s (wall clock) of ``workers`` processes with one thread each, after one warm-up
    sample per worker."""
    config = engine.config_dict()
    with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
        list(pool.map(_worker_samples, [engine.name] * workers, [config] * workers,
                      [[10_000 + w] for w in range(workers)]))
        chunks = [list(range(w * per_worker, (w + 1) * per_worker)) for w in range(workers)]
        start = time.perf_counter()
        done = sum(pool.map(_worker_samples, [engine.name] * workers, [config] * workers, chunks))
        wall = time.perf_counter() - start
    return {"workers": workers, "samples": done, "wall_s": wall, "samples_per_s": done / wall}


def label_ensemble_split(engine: Engine, count: int) -> dict[str, dict[str, float]]:
    """CPU-s of the two stages of a label-ensemble sample: the label map (template reads and
    Algorithm 1) and the two views (GMM, texture, offline pipeline)."""
    labels = {}
    label_times = cpu_seconds(lambda i: labels.__setitem__(i, engine.label_map(0, i)), count)
    view_times = cpu_seconds(lambda i: engine.render_views(labels[i], 0, i), count)
    return {"label_map": summarize(label_times), "two_views": summarize(view_times)}


def published_label_ensemble_split(size: int, count: int, templates: int = 24,
                                   seed: int = 0) -> dict[str, dict[str, float]]:
    """CPU-s of the published anatomix pipeline (``benchmarks.published_anatomix``), same
    measurement as :func:`label_ensemble_split`: step 1 (label map, templates loaded from
    ``templates`` 256^3 ``.nii.gz`` files of the default bank written to a temporary folder
    first, untimed), step 2 (two views) and their per-sample sum."""
    from benchmarks.published_anatomix import published_label_map, published_views, write_published_templates

    rng = np.random.RandomState(seed)
    with tempfile.TemporaryDirectory(prefix="published-anatomix-") as folder:
        paths = write_published_templates(folder, templates, rng)
        labels = {}
        with torch.no_grad():
            label_times = cpu_seconds(
                lambda i: labels.__setitem__(i, published_label_map(paths, rng, side_length=size)), count)
            view_times = cpu_seconds(lambda i: published_views(labels[i], rng), count)
    return {"label_map": summarize(label_times), "two_views": summarize(view_times),
            "total": summarize([a + b for a, b in zip(label_times, view_times)])}


def summarize(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "n": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="random-shapes")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--samples", type=int, default=10, help="timed samples for our engine")
    parser.add_argument("--published-samples", type=int, default=3,
                        help="timed samples of the published pipeline (random-shapes, label-ensemble; "
                             "0 skips)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--per-worker", type=int, default=4, help="samples per worker, all-cores run")
    parser.add_argument("--shard-size", type=int, default=8, help="samples per shard, store-write run")
    parser.add_argument("--json", metavar="OUT", help="also write the results to this file")
    args = parser.parse_args()

    torch.set_num_threads(1)
    engine = get_engine(args.engine, size=args.size)
    ours = summarize(cpu_seconds(lambda i: engine.sample(0, i), args.samples))
    results: dict[str, Any] = {"engine": args.engine, "size": args.size, "threads": 1,
                               "cpu_s_per_sample": ours}
    if args.engine == "random-shapes" and args.published_samples > 0:
        rng = np.random.RandomState(0)
        with torch.no_grad():
            published = summarize(cpu_seconds(lambda i: published_pair(args.size, rng),
                                               args.published_samples))
        results["published_cpu_s_per_pair"] = published
        results["speedup_median"] = published["median_s"] / ours["median_s"]
    if args.engine == "label-ensemble":
        results["split"] = label_ensemble_split(engine, args.samples)
        if args.published_samples > 0:
            published_split = published_label_ensemble_split(args.size, args.published_samples)
            results["published_cpu_s_per_sample"] = published_split
            results["speedup_median"] = published_split["total"]["median_s"] / ours["median_s"]
            results["speedup_median_split"] = {
                stage: published_split[stage]["median_s"] / results["split"][stage]["median_s"]
                for stage in ("label_map", "two_views")}
    results["all_cores"] = all_cores_throughput(engine, args.workers, args.per_worker)
    results["store_write"] = measure_store_write(engine, args.shard_size)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
