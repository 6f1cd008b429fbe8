"""PNG figures of a harness run: a Dice box plot over pairs and per-pair overlays.

Overlays show the mid-slices of the fixed grid along each array axis: fixed, moving (resampled
onto the fixed grid, unregistered) and warped moving, each with the fixed labels' contours in
one colour and the shown image's own labels in another, so misalignment reads directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.registration.run import PairResult  # noqa: E402

FIXED_CONTOUR = "#ffd000"
OWN_CONTOUR = "#00c8ff"


def dice_boxplot(results: Sequence[PairResult], path: str, title: str) -> None:
    """Box plot of the per-pair mean Dice before and after registration."""
    scored = [r for r in results if not math.isnan(r.scores.get("dice", math.nan))]
    before = [r.scores["dice_initial"] for r in scored]
    after = [r.scores["dice"] for r in scored]
    figure, axes = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    if scored:
        axes.boxplot([before, after], tick_labels=["identity", "registered"], widths=0.5)
        for column, values in ((1, before), (2, after)):
            axes.scatter(np.full(len(values), column) + np.linspace(-0.08, 0.08, len(values)),
                         values, s=12, alpha=0.7, color="tab:blue")
    else:
        axes.text(0.5, 0.5, "no pair has labels", ha="center", va="center", transform=axes.transAxes)
    axes.set_ylabel("mean Dice per pair")
    axes.set_ylim(0.0, 1.0)
    axes.set_title(title, fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, [1.0, 99.0])
    return float(low), float(high if high > low else low + 1.0)


def _plane(volume: np.ndarray, axis: int) -> np.ndarray:
    return np.take(volume, volume.shape[axis] // 2, axis=axis).T


def _contours(axes, labels: np.ndarray | None, axis: int, colour: str) -> None:
    if labels is None:
        return
    plane = _plane(labels, axis)
    for value in np.unique(plane):
        if value != 0:
            axes.contour(plane == value, levels=[0.5], colors=colour, linewidths=0.7)


def overlay(fixed: torch.Tensor, moving: torch.Tensor, warped: torch.Tensor,
            fixed_labels: torch.Tensor | None, moving_labels: torch.Tensor | None,
            warped_labels: torch.Tensor | None, spacing: Sequence[float], path: str,
            title: str) -> None:
    """Three rows (mid-slices across axes 0, 1, 2) x three columns (fixed, moving, warped) of
    (D, H, W) volumes on the fixed grid, with label contours; pixels keep ``spacing``'s aspect."""
    images = [v.float().cpu().numpy() for v in (fixed, moving, warped)]
    labels = [None if v is None else v.cpu().numpy() for v in (fixed_labels, moving_labels, warped_labels)]
    windows = [_window(image) for image in images]
    figure, grid = plt.subplots(3, 3, figsize=(9, 9), dpi=110)
    for axis in range(3):
        across, up = [a for a in range(3) if a != axis]
        aspect = spacing[up] / spacing[across]
        for column, name in enumerate(("fixed", "moving", "warped")):
            axes = grid[axis, column]
            low, high = windows[column]
            axes.imshow(_plane(images[column], axis), cmap="gray", vmin=low, vmax=high,
                        origin="lower", aspect=aspect)
            _contours(axes, labels[0], axis, FIXED_CONTOUR)
            if column > 0:
                _contours(axes, labels[column], axis, OWN_CONTOUR)
            axes.set_xticks([])
            axes.set_yticks([])
            if axis == 0:
                axes.set_title(name)
        grid[axis, 0].set_ylabel(f"axis {axis} = {fixed.shape[axis] // 2}")
    figure.suptitle(f"{title}\ncontours: fixed labels (yellow), shown image's labels (blue)",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
