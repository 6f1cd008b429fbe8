"""A small ConvexAdam hyper-parameter search on validation pairs.

The papers tune ConvexAdam per dataset and feature extractor; the reference's self-configuring
scripts rank settings by several scores at once. This search does the same on a small grid:
every setting is run on the validation pairs, each of mean Dice, the Dice 30% figure (higher is
better), HD95 and SDlogJ (lower is better) ranks the settings with scores from 1 (best) down to
0.1 (worst), and the setting with the largest geometric mean of its four rank scores wins (the
reference's ``sort_rank`` scheme). A score no setting has (e.g. HD95 without labels) is left out.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.registration.report import aggregate
from benchmarks.registration.run import (Extractor, PairResult, align, extract, initial_scores,
                                         score)
from benchmarks.registration.sources import PairSource
from registration.convexadam import ConvexAdamParams
from synthgen.errors import SynthgenError

DEFAULT_GRID: dict[str, tuple[Any, ...]] = {"grid_sp": (4, 6), "lambda_weight": (0.5, 1.25, 2.5)}
# (summary score, statistic, higher is better)
CRITERIA = (("dice", "mean", True), ("dice", "30", True), ("hd95", "mean", False),
            ("sdlogj", "mean", False))


@dataclasses.dataclass
class GridOutcome:
    """Every setting tried with its aggregate scores and rank, and the chosen one."""

    rows: list[dict[str, Any]]
    chosen: dict[str, Any]


def settings(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of ``grid`` as a list of override dicts, in a fixed order."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def rank_scores(values: Sequence[float], higher_is_better: bool) -> np.ndarray:
    """Per-setting rank scores, linearly from 1 (best) to 0.1 (worst); NaN ranks last."""
    values = np.asarray(values, dtype=np.float64)
    keyed = np.where(np.isnan(values), -np.inf if higher_is_better else np.inf, values)
    order = np.argsort(-keyed if higher_is_better else keyed, kind="stable")
    scores = np.empty(len(values))
    scores[order] = np.linspace(1.0, 0.1, len(values)) if len(values) > 1 else 1.0
    return scores


def choose(aggregates: Sequence[dict[str, dict[str, float]]]) -> tuple[int, np.ndarray]:
    """Index of the winning setting and every setting's combined rank score."""
    combined = np.ones(len(aggregates))
    used = 0
    for name, stat, higher in CRITERIA:
        values = [a.get(name, {}).get(stat, math.nan) for a in aggregates]
        if all(math.isnan(v) for v in values):
            continue
        combined *= rank_scores(values, higher)
        used += 1
    combined = combined ** (1.0 / max(used, 1))
    return int(np.argmax(combined)), combined


def search(sources: Sequence[PairSource], extractor: Extractor, base: ConvexAdamParams,
           device: torch.device, grid: Mapping[str, Sequence[Any]] = DEFAULT_GRID,
           log=print) -> GridOutcome:
    """Run every setting of ``grid`` (overriding ``base``) on ``sources`` and pick one. Each
    pair is loaded and its features and initial scores computed once, then registered with
    every setting."""
    tried = settings(grid)
    results: list[list[PairResult]] = [[] for _ in tried]
    for source in sources:
        try:
            extracted = extract(source.load(), extractor, device)
        except SynthgenError as err:
            for per_setting in results:
                per_setting.append(PairResult(source.name, error=str(err)))
            continue
        initial = initial_scores(extracted.bench)
        for per_setting, overrides in zip(results, tried):
            registered = align(extracted, dataclasses.replace(base, **overrides), device)
            per_setting.append(score(registered, initial))
    aggregates = [aggregate(per_setting) for per_setting in results]
    for overrides, summary in zip(tried, aggregates):
        log(f"grid {overrides}: mean Dice {summary.get('dice', {}).get('mean', math.nan):.4f}")
    best, combined = choose(aggregates)
    rows = [{**overrides, **{f"{name}_{stat}": agg.get(name, {}).get(stat, math.nan)
                             for name, stat, _ in CRITERIA}, "rank_score": float(rank)}
            for overrides, agg, rank in zip(tried, aggregates, combined)]
    return GridOutcome(rows, tried[best])
