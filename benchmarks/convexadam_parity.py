"""ConvexAdam parity: the published reference (PyPI ``convexadam`` 0.2.0) against ours, side by
side in one process on the same pairs with the same hyper-parameters (MIND-SSC features).

Both fields are scored by the harness's scoring (``benchmarks.registration.run.score``): Dice,
HD95, SDlogJ, % non-positive Jacobians, TRE and end-point error where the pair has them, and
the wall time of the registration call (MIND included for both). Both run on ``--device``
(default ``cpu``; ``cuda`` synchronises the GPU before and after each timed call) with their
default settings: the reference's default float16 becomes float32 on the CPU (the reference
itself does that) and stays float16 on a GPU; ours is float32 everywhere. With
``--repeats N`` each pair is registered N times, ours and the reference alternating, and the
speed-up is the median of the N ratios (the scores come from the first run; both are
deterministic). Every run is also profiled by stage (the timers wrap the stage functions, so
they cost nothing measurable).

``--pairs`` takes what the harness takes (a pairs CSV, ``random-shapes:N``, ...) and the brain
pairs of this benchmark:

- ``oasis``: the two OASIS brains, both directions (160x192x144, labels {1: grey matter,
  2: white matter});
- ``mni-oasis``: the MNI T1 template (182x218x182, 1 mm) as the moving image onto each OASIS
  brain, resampled onto its grid as the harness does (``align centre``); the template has no
  tissue labels, so grey and white matter are the upper two of three intensity clusters of its
  brain voxels (1-D k-means), written to a temporary NIfTI;
- any of these with ``@DxHxW``: each image and label map centre-padded with zeros (or cropped)
  to that shape, e.g. ``oasis@160x192x224``, the size of Learn2Reg's OASIS volumes.

    python -m benchmarks.convexadam_parity --repeats 2 --threads 2  # the brain pairs, 2 threads
    python -m benchmarks.convexadam_parity --pairs random-shapes:2,size=128 --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

import registration._adam as adam_module
import registration.convexadam as convexadam_module
from benchmarks.registration.run import Registered, initial_scores, register, score
from benchmarks.registration.sources import BenchPair, PairSource, open_pairs
from registration.convexadam import ConvexAdamParams
from registration.features import get_extractor
from synthgen.errors import SynthgenError

PAIR_FILES = Path(__file__).resolve().parent / "registration" / "pairs"
ROOT = Path(__file__).resolve().parents[1]
# the shared data next to the checkout, or inside it (a copy of the working tree elsewhere)
DATA = next((path for path in (ROOT.parent / "shared" / "data", ROOT / "shared" / "data")
             if path.is_dir()), ROOT.parent / "shared" / "data")
DEFAULT_PAIRS = ["oasis", "mni-oasis", "oasis@160x192x224", "mni-oasis@160x192x224"]
REPORTED = ("dice_initial", "dice", "hd95", "sdlogj", "sdlogj_l2r", "fold_pct", "tre", "epe", "seconds")
OURS_STAGES = ("mind", "convex", "cost_volume", "coupled_convex", "inverse_consistency",
               "upsample", "adam_setup", "adam_iterations", "adam_data")
REFERENCE_STAGES = ("mind", "correlate", "coupled_convex", "inverse_consistency", "rest")


def _synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Seconds spent in wrapped functions, summed per stage (thread-safe: stages that run on
    worker threads add up their threads' time)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def wrap(self, stage: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        return timed

    @contextlib.contextmanager
    def patch(self, targets: list[tuple[object, str, str]]) -> Iterator[StageTimer]:
        """Wrap ``owner.name`` as ``stage`` for each (owner, name, stage) while inside."""
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
        for owner, name, stage in targets:
            setattr(owner, name, self.wrap(stage, getattr(owner, name)))
        try:
            yield self
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)


def ours_registration(bench: BenchPair, params: ConvexAdamParams,
                      device: torch.device) -> tuple[Registered, dict]:
    """MIND and our ``convex_adam`` on ``device``, with the seconds per stage (on a GPU the
    stage times are those of launching the work, only the total is synchronised)."""
    timer = StageTimer()
    stage = adam_module.AdamStage
    targets = [(convexadam_module, "_convex_field", "convex"),
               (convexadam_module, "_cost_volume", "cost_volume"),
               (convexadam_module, "_coupled_convex", "coupled_convex"),
               (convexadam_module, "_inverse_consistent", "inverse_consistency"),
               (convexadam_module, "upsample", "upsample"),
               (stage, "__init__", "adam_setup"), (stage, "run", "adam_iterations"),
               (stage, "_data_part", "adam_data")]
    with timer.patch(targets):
        registered = register(bench, get_extractor("mind", device), params, device)
    return registered, {"mind": registered.feature_seconds, **timer.seconds}


def reference_registration(bench: BenchPair, params: ConvexAdamParams,
                           device: torch.device) -> tuple[Registered, dict]:
    """The reference's ``convex_adam_pt`` with MIND (r=1, d=2) on ``device``, with the seconds
    per stage; its (D, H, W, 3) result becomes the project's (3, D, H, W)."""
    import convexAdam.convex_adam_MIND as reference

    timer = StageTimer()
    targets = [(reference, "MINDSSC", "mind"), (reference, "correlate", "correlate"),
               (reference, "coupled_convex", "coupled_convex"),
               (reference, "inverse_consistency", "inverse_consistency")]
    pair = bench.pair
    with timer.patch(targets), contextlib.redirect_stdout(io.StringIO()):
        _synchronize(device)
        start = time.perf_counter()
        disp = reference.convex_adam_pt(pair.fixed.numpy(), pair.moving.numpy(), mind_r=1, mind_d=2,
                                        lambda_weight=params.lambda_weight, grid_sp=params.grid_sp,
                                        disp_hw=params.disp_hw, selected_niter=params.niter,
                                        selected_smooth=params.smooth,
                                        grid_sp_adam=params.grid_sp_adam, ic=params.ic,
                                        device=device)
        _synchronize(device)
        seconds = time.perf_counter() - start
    stages = dict(timer.seconds)
    stages["rest"] = seconds - sum(stages.values())
    field = torch.from_numpy(np.ascontiguousarray(np.moveaxis(disp, -1, 0))).float()
    return Registered(bench, field, math.nan, seconds), stages


def mni_tissue_labels(path: Path) -> None:
    """Write grey (1) and white (2) matter of the MNI template as the upper two of three 1-D
    k-means clusters of its brain intensities (0 elsewhere) to ``path``."""
    image = nib.load(DATA / "mni" / "mni.nii.gz")
    volume = np.asarray(image.dataobj, dtype=np.float32)
    brain = volume > 0
    values = volume[brain]
    centres = np.percentile(values, [10, 50, 90])
    for _ in range(100):
        cluster = np.abs(values[:, None] - centres[None]).argmin(1)
        updated = np.array([values[cluster == k].mean() for k in range(3)])
        if np.allclose(updated, centres):
            break
        centres = updated
    labels = np.zeros(volume.shape, np.int16)
    labels[brain] = cluster
    nib.save(nib.Nifti1Image(labels, image.affine), path)


def mni_oasis_pairs(folder: Path) -> list[PairSource]:
    """MNI -> each OASIS brain, via a pairs CSV in ``folder`` (labels 1, 2)."""
    labels = folder / "mni_tissue.nii.gz"
    mni_tissue_labels(labels)
    oasis = DATA / "oasis-pair"
    rows = ["name,fixed,moving,fixed_labels,moving_labels,labels"]
    for name in "AB":
        image = oasis / f"image_{name}_160x192x144.nii.gz"
        rows.append(f"{name}<-MNI,{image},{DATA / 'mni' / 'mni.nii.gz'},"
                    f"{oasis / f'image_{name}_160x192x144_seg.nii.gz'},{labels},1 2")
    pairs = folder / "mni-oasis.csv"
    pairs.write_text("\n".join(rows) + "\n")
    return open_pairs(str(pairs))


def centred(volume: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor | None:
    """``volume`` centre-padded with zeros or centre-cropped to ``shape``."""
    if volume is None:
        return None
    pads = []
    for size, target in zip(reversed(volume.shape), reversed(shape)):
        low = (target - size) // 2
        pads += [low, target - size - low]
    return F.pad(volume, pads)


def resized(source: PairSource, shape: tuple[int, ...]) -> PairSource:
    def load() -> BenchPair:
        bench = source.load()
        pair = bench.pair
        if bench.true_displacement is not None or pair.fixed_landmarks is not None:
            raise SynthgenError(f"pair {pair.name}: @DxHxW takes pairs without landmarks or a "
                                f"true displacement")
        fields = {name: centred(getattr(pair, name), shape) for name in
                  ("fixed", "moving", "fixed_labels", "moving_labels", "fixed_mask", "moving_mask")}
        return BenchPair(dataclasses.replace(pair, name=f"{pair.name} @{'x'.join(map(str, shape))}",
                                             **fields))
    return PairSource(f"{source.name} @{'x'.join(map(str, shape))}", load)


def pair_sources(spec: str, folder: Path) -> list[PairSource]:
    """The pairs named by ``spec`` (see the module docstring)."""
    name, _, size = spec.partition("@")
    if name == "oasis":
        sources = open_pairs(str(PAIR_FILES / "oasis.csv"))
    elif name == "mni-oasis":
        sources = mni_oasis_pairs(folder)
    else:
        sources = open_pairs(name)
    if not size:
        return sources
    try:
        shape = tuple(int(n) for n in size.split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise SynthgenError(f"--pairs {spec}: the size after @ must be DxHxW, e.g. 160x192x224")
    return [resized(source, shape) for source in sources]


def run(pair_specs: list[str], limit: int | None, repeats: int, params: ConvexAdamParams,
        device: torch.device) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for spec in pair_specs:
            for source in pair_sources(spec, Path(folder))[:limit]:
                bench = source.load()
                initial = initial_scores(bench)
                runs = []
                for _ in range(repeats):
                    ours, ours_stages = ours_registration(bench, params, device)
                    reference, reference_stages = reference_registration(bench, params, device)
                    runs.append((ours, ours_stages, reference, reference_stages))
                ours_scores = score(runs[0][0], initial).scores
                reference_scores = score(runs[0][2], initial).scores
                ratios = [r[2].seconds / r[0].seconds for r in runs]
                row = {"pair": source.name, "shape": "x".join(map(str, bench.pair.fixed.shape)),
                       "ours": {k: ours_scores[k] for k in REPORTED if k in ours_scores},
                       "reference": {k: reference_scores[k] for k in REPORTED
                                     if k in reference_scores},
                       "ours_seconds": [r[0].seconds for r in runs],
                       "reference_seconds": [r[2].seconds for r in runs],
                       "speedups": ratios, "speedup": float(np.median(ratios)),
                       "ours_stages": [r[1] for r in runs],
                       "reference_stages": [r[3] for r in runs],
                       "iterations": max(params.niter - 1, 0), "device": str(device),
                       "threads": torch.get_num_threads()}
                rows.append(row)
                print(f"{source.name}: Dice ours {ours_scores.get('dice', math.nan):.4f} reference "
                      f"{reference_scores.get('dice', math.nan):.4f}, "
                      f"{np.median(row['ours_seconds']):.1f} s vs "
                      f"{np.median(row['reference_seconds']):.1f} s, speed-up "
                      f"{row['speedup']:.1f}x (runs: {', '.join(f'{r:.1f}' for r in ratios)})",
                      flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(scores: dict, key: str) -> str:
        value = scores.get(key, math.nan)
        return "-" if math.isnan(value) else f"{value:.3f}"

    lines = ["| pair | shape | Dice before | Dice ours / ref | HD95 ours / ref | SDlogJ ours / ref "
             "| % J<=0 ours / ref | TRE ours / ref | s ours / ref (median) | speed-up (median) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        o, r = row["ours"], row["reference"]
        lines.append(f"| {row['pair']} | {row['shape']} | {cell(o, 'dice_initial')} | "
                     + " | ".join(f"{cell(o, k)} / {cell(r, k)}" for k in
                                  ("dice", "hd95", "sdlogj", "fold_pct", "tre"))
                     + f" | {np.median(row['ours_seconds']):.2f} / "
                       f"{np.median(row['reference_seconds']):.2f} | {row['speedup']:.1f}x |")
    speedups = [row["speedup"] for row in rows]
    gaps = [row["ours"]["dice"] - row["reference"]["dice"] for row in rows if "dice" in row["ours"]]
    lines += ["", f"speed-up: median {np.median(speedups):.1f}x, min {min(speedups):.1f}x; Dice ours "
              f"minus reference: {min(gaps) * 100:+.2f} to {max(gaps) * 100:+.2f} points over "
              f"{len(gaps)} pairs" if gaps else ""]
    lines += ["", "Stages (median seconds over runs; worker-thread stages add up both threads):", "",
              "| pair | " + " | ".join(OURS_STAGES) + " | ms per Adam iteration | reference: "
              + " | ".join(REFERENCE_STAGES) + " |",
              "|---|" + "---|" * (len(OURS_STAGES) + 1 + len(REFERENCE_STAGES))]
    for row in rows:
        ours = {k: float(np.median([s.get(k, 0.0) for s in row["ours_stages"]])) for k in OURS_STAGES}
        reference = {k: float(np.median([s.get(k, 0.0) for s in row["reference_stages"]]))
                     for k in REFERENCE_STAGES}
        per_iteration = ours["adam_iterations"] / max(row["iterations"], 1) * 1e3
        lines.append(f"| {row['pair']} | " + " | ".join(f"{ours[k]:.2f}" for k in OURS_STAGES)
                     + f" | {per_iteration:.0f} | "
                     + " | ".join(f"{reference[k]:.2f}" for k in REFERENCE_STAGES) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="ConvexAdam parity: ours against the reference "
                                     "(PyPI convexadam 0.2.0), side by side")
    parser.add_argument("--pairs", nargs="+", default=DEFAULT_PAIRS)
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each source")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per pair, ours and the reference alternating")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads for each of ours and the reference (default 2)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where both run (default cpu)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to torch")
    torch.set_num_threads(args.threads)
    try:
        rows = run(args.pairs, args.limit, args.repeats, ConvexAdamParams(),
                   torch.device(args.device))
    except SynthgenError as err:
        parser.error(str(err))
    print(markdown(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
