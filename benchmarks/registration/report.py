"""The harness's outputs: per-pair CSV, summary JSON and a Markdown table.

Aggregation over pairs follows Learn2Reg's evaluation script: mean, std and a robustness figure
"30", the 0.3 quantile of the per-pair values for Dice and HD95 and the 0.7 quantile for SDlogJ
and TRE (as Learn2Reg writes it: for HD95 that is the better end). Scores Learn2Reg does not have
take the 0.7 quantile when lower is better (end-point error, folds, runtime) and 0.3 otherwise.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.registration.run import PairResult

SCORE_ORDER = ("dice", "dice_initial", "hd95", "sdlogj", "sdlogj_l2r", "fold_pct", "tre",
               "tre_initial", "epe", "epe_initial", "seconds", "feature_seconds")
QUANTILE_30 = {"dice": 0.3, "dice_initial": 0.3, "hd95": 0.3}
DEFAULT_QUANTILE_30 = 0.7


def score_names(results: Sequence[PairResult]) -> list[str]:
    """The scores any pair has, in a fixed order."""
    present = {name for result in results for name in result.scores}
    return [name for name in SCORE_ORDER if name in present]


def aggregate(results: Sequence[PairResult]) -> dict[str, dict[str, float]]:
    """{score: {"mean", "std", "30", "n"}} over the pairs that have the score (NaNs skipped)."""
    summary = {}
    for name in score_names(results):
        values = np.array([r.scores[name] for r in results if name in r.scores], dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            summary[name] = {"mean": math.nan, "std": math.nan, "30": math.nan, "n": 0}
            continue
        quantile = QUANTILE_30.get(name, DEFAULT_QUANTILE_30)
        summary[name] = {"mean": float(values.mean()), "std": float(values.std()),
                         "30": float(np.quantile(values, quantile)), "n": int(values.size)}
    return summary


def write_pairs_csv(results: Sequence[PairResult], path: str) -> None:
    """One row per pair: name, every score, and the error of a failed pair."""
    names = score_names(results)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", *names, "error"])
        for result in results:
            writer.writerow([result.name, *(_cell(result.scores.get(n, math.nan)) for n in names),
                             result.error or ""])


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_summary(summary: dict[str, Any], path: str) -> None:
    """``summary`` as JSON (NaN written as null)."""
    with open(path, "w") as handle:
        json.dump(_json_safe(summary), handle, indent=2)
        handle.write("\n")


def markdown_table(aggregated: dict[str, dict[str, float]]) -> str:
    """| score | mean | std | 30% | n | rows, for the console and summary.md."""
    lines = ["| score | mean | std | 30% | n |", "|---|---|---|---|---|"]
    for name, stats in aggregated.items():
        lines.append(f"| {name} | {_fmt(stats['mean'])} | {_fmt(stats['std'])} | "
                     f"{_fmt(stats['30'])} | {stats['n']} |")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4g}"


def write_outputs(results: Sequence[PairResult], out_dir: str, header: dict[str, Any]) -> str:
    """pairs.csv, summary.json (``header`` plus the aggregate and failures) and summary.md in
    ``out_dir``; returns the Markdown table."""
    aggregated = aggregate(results)
    failed = [{"name": r.name, "error": r.error} for r in results if r.error]
    write_pairs_csv(results, os.path.join(out_dir, "pairs.csv"))
    write_summary({**header, "pairs": len(results), "failed": failed, "scores": aggregated},
                  os.path.join(out_dir, "summary.json"))
    table = markdown_table(aggregated)
    with open(os.path.join(out_dir, "summary.md"), "w") as handle:
        handle.write(table + "\n")
    return table
