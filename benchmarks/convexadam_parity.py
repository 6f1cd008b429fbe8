"""ConvexAdam parity: the published reference (PyPI ``convexadam`` 0.2.0) against ours, side by
side in one process on the same pairs with the same hyper-parameters (MIND-SSC features).

Both fields are scored by the harness's scoring (``benchmarks.registration.run.score``): Dice,
HD95, SDlogJ, % non-positive Jacobians, TRE and end-point error where the pair has them, and
the wall time of the registration call (MIND included for both). The reference runs on the CPU
in float32 (its fp16 default is turned into float32 on CPU by the reference itself).

    python benchmarks/convexadam_parity.py                       # the real pairs + 1 synthetic
    python benchmarks/convexadam_parity.py --pairs random-shapes:2,size=128 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.registration.run import Registered, initial_scores, register, score
from benchmarks.registration.sources import BenchPair, open_pairs
from registration.convexadam import ConvexAdamParams
from registration.features import get_extractor

PAIR_FILES = Path(__file__).resolve().parent / "registration" / "pairs"
DEFAULT_PAIRS = [str(PAIR_FILES / "prostate-mr-us.csv"), str(PAIR_FILES / "oasis.csv"),
                 str(PAIR_FILES / "totalsegmentator-mr-ct.csv"), "random-shapes:1,size=128"]
REPORTED = ("dice_initial", "dice", "hd95", "sdlogj", "sdlogj_l2r", "fold_pct", "tre", "epe", "seconds")


def reference_registration(bench: BenchPair, params: ConvexAdamParams) -> Registered:
    """The reference's ``convex_adam_pt`` with MIND (r=1, d=2) on the CPU; its (D, H, W, 3)
    result becomes the project's (3, D, H, W)."""
    from convexAdam.convex_adam_MIND import convex_adam_pt

    pair = bench.pair
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        disp = convex_adam_pt(pair.fixed.numpy(), pair.moving.numpy(), mind_r=1, mind_d=2,
                              lambda_weight=params.lambda_weight, grid_sp=params.grid_sp,
                              disp_hw=params.disp_hw, selected_niter=params.niter,
                              selected_smooth=params.smooth, grid_sp_adam=params.grid_sp_adam,
                              ic=params.ic, device=torch.device("cpu"))
    seconds = time.perf_counter() - start
    field = torch.from_numpy(np.ascontiguousarray(np.moveaxis(disp, -1, 0))).float()
    return Registered(bench, field, math.nan, seconds)


def run(pair_specs: list[str], limit: int | None, params: ConvexAdamParams) -> list[dict]:
    extractor = get_extractor("mind", "cpu")
    rows = []
    for spec in pair_specs:
        for source in open_pairs(spec)[:limit]:
            bench = source.load()
            initial = initial_scores(bench)
            ours = score(register(bench, extractor, params, torch.device("cpu")), initial).scores
            reference = score(reference_registration(bench, params), initial).scores
            row = {"pair": source.name, "shape": "x".join(map(str, bench.pair.fixed.shape)),
                   "ours": {k: ours[k] for k in REPORTED if k in ours},
                   "reference": {k: reference[k] for k in REPORTED if k in reference}}
            row["speedup"] = reference["seconds"] / ours["seconds"]
            rows.append(row)
            print(f"{source.name}: Dice ours {ours.get('dice', math.nan):.4f} reference "
                  f"{reference.get('dice', math.nan):.4f}, {ours['seconds']:.1f} s vs "
                  f"{reference['seconds']:.1f} s ({row['speedup']:.1f}x)", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    def cell(scores: dict, key: str) -> str:
        value = scores.get(key, math.nan)
        return "-" if math.isnan(value) else f"{value:.3f}"

    lines = ["| pair | shape | Dice before | Dice ours / ref | HD95 ours / ref | SDlogJ ours / ref "
             "| % J<=0 ours / ref | TRE ours / ref | s ours / ref | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        o, r = row["ours"], row["reference"]
        lines.append(f"| {row['pair']} | {row['shape']} | {cell(o, 'dice_initial')} | "
                     + " | ".join(f"{cell(o, k)} / {cell(r, k)}" for k in
                                  ("dice", "hd95", "sdlogj", "fold_pct", "tre", "seconds"))
                     + f" | {row['speedup']:.1f}x |")
    speedups = [row["speedup"] for row in rows]
    gaps = [abs(row["ours"]["dice"] - row["reference"]["dice"]) for row in rows if "dice" in row["ours"]]
    lines.append("")
    lines.append(f"speed-up: median {np.median(speedups):.1f}x, min {min(speedups):.1f}x; "
                 f"largest Dice gap {max(gaps) * 100:.2f} points over {len(gaps)} pairs")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=DEFAULT_PAIRS)
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each source")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.pairs, args.limit, ConvexAdamParams())
    print(markdown(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
