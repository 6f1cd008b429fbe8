"""Registration scores as the Learn2Reg evaluation (MDL-UzL/L2R, eval_version 2.0) computes them.

Inputs are numpy arrays or torch tensors (moved to the CPU); results are Python floats, dicts of
floats or numpy arrays. Label maps are (D, H, W) integer volumes on the fixed grid; a
displacement is (3, D, H, W) in voxels with ``warped(x) = moving(x + u(x))``
(:mod:`registration.warp`). A label is scored when it is present in the fixed map and in the
moving map before warping, as Learn2Reg's ``compute_dice``/``compute_hd95`` decide (pass
``moving_labels``; without it presence is judged on the warped map, which drops a label the warp
wiped out instead of scoring it Dice 0 and HD95 inf). Unscored labels are NaN, and
:func:`label_mean` skips them as Learn2Reg's ``nanmean``.

Deviations from the reference, on purpose:

- :func:`hd95` is in mm (the grid's spacing); Learn2Reg passes unit spacing (voxels).
- :func:`fold_pct` counts ``J <= 0`` on the raw determinant. Learn2Reg's ``num_foldings``
  counts on ``clip(J + 3)``, which is always positive, so it always reports 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from registration import _surfels
from synthgen.ops import jacobian as _jacobian

Array = np.ndarray | torch.Tensor
L2R_CROP = 2  # voxels dropped per side of the Jacobian, as Learn2Reg's [2:-2]


def _numpy(x: Array) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _label_ids(fixed: np.ndarray, other: np.ndarray, labels: Sequence[int] | None) -> np.ndarray:
    if labels is not None:
        return np.asarray(sorted({int(v) for v in labels}), dtype=np.int64)
    present = np.union1d(np.unique(fixed), np.unique(other))
    return present[present != 0].astype(np.int64)


def _label_index(volume: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each voxel's label in ``ids`` (sorted), or ``len(ids)`` for other labels."""
    flat = volume.reshape(-1).astype(np.int64, copy=False)
    pos = np.clip(np.searchsorted(ids, flat), 0, max(len(ids) - 1, 0))
    hit = ids[pos] == flat if len(ids) else np.zeros(flat.shape, dtype=bool)
    return np.where(hit, pos, len(ids))


def _counts(index: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(index, minlength=n + 1)[:n]


def dice(fixed_labels: Array, warped_labels: Array, labels: Sequence[int] | None = None, *,
         moving_labels: Array | None = None) -> dict[int, float]:
    """Dice overlap per label.

    Args:
        fixed_labels: (D, H, W) integer label map of the fixed image.
        warped_labels: (D, H, W) integer moving label map warped onto the fixed grid.
        labels: label ids to score (label 0 too if listed); default every non-zero id present
            in either map.
        moving_labels: (D, H, W) the moving map before warping (on the fixed grid); when
            given, a label is scored if present in the fixed map and here (Learn2Reg), so a
            label the warp wiped out scores 0; else if present in the fixed and warped maps.

    Returns:
        {label id: Dice in [0, 1], or NaN when not scored}.
    """
    return _dice(_indexed(fixed_labels, warped_labels, labels, moving_labels))


def label_scores(fixed_labels: Array, warped_labels: Array, labels: Sequence[int] | None,
                 spacing: Sequence[float], *, moving_labels: Array | None = None
                 ) -> tuple[dict[int, float], dict[int, float]]:
    """``(dice(...), hd95(...))`` of the same arguments, indexing the label maps once."""
    indexed = _indexed(fixed_labels, warped_labels, labels, moving_labels)
    return _dice(indexed), _hd95(indexed, spacing)


@dataclasses.dataclass
class _Indexed:
    """Two label maps as positions in ``ids`` (``len(ids)`` for other labels), flat, with each
    label's voxel counts and whether it is scored."""

    shape: tuple[int, ...]
    ids: np.ndarray
    fixed: np.ndarray
    warped: np.ndarray
    size_fixed: np.ndarray
    size_warped: np.ndarray
    present: np.ndarray


def _indexed(fixed_labels: Array, warped_labels: Array, labels: Sequence[int] | None,
             moving_labels: Array | None) -> _Indexed:
    fixed, warped = _numpy(fixed_labels), _numpy(warped_labels)
    if fixed.shape != warped.shape:
        raise ValueError(f"label maps differ in shape: {fixed.shape} vs {warped.shape}")
    ids = _label_ids(fixed, warped, labels)
    n = len(ids)
    fi, wi = _label_index(fixed, ids), _label_index(warped, ids)
    size_f, size_w = _counts(fi, n), _counts(wi, n)
    present = _scored(size_f, size_w, moving_labels, ids, fixed.shape)
    return _Indexed(fixed.shape, ids, fi, wi, size_f, size_w, present)


def _dice(x: _Indexed) -> dict[int, float]:
    overlap = _counts(x.fixed[x.fixed == x.warped], len(x.ids))
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(x.present, 2.0 * overlap / (x.size_fixed + x.size_warped), np.nan)
    return {int(i): float(s) for i, s in zip(x.ids, scores)}


def _scored(size_fixed: np.ndarray, size_warped: np.ndarray, moving_labels: Array | None,
            ids: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Which of ``ids`` to score: present in the fixed map and in the moving map before warping
    (Learn2Reg), or in the warped map when ``moving_labels`` is None."""
    if moving_labels is None:
        return (size_fixed > 0) & (size_warped > 0)
    moving = _numpy(moving_labels)
    if moving.shape != shape:
        raise ValueError(f"moving labels {moving.shape} are not on the fixed grid {shape}")
    return (size_fixed > 0) & (_counts(_label_index(moving, ids), len(ids)) > 0)


def label_mean(scores: dict[int, float]) -> float:
    """Mean of per-label scores (Dice, HD95) ignoring NaN (Learn2Reg's nanmean; an inf HD95 makes
    it inf); NaN if all are NaN."""
    values = np.array(list(scores.values()), dtype=np.float64)
    return float(values[~np.isnan(values)].mean()) if np.any(~np.isnan(values)) else float("nan")


def mean_dice(scores: dict[int, float]) -> float:
    """:func:`label_mean` of per-label Dice scores."""
    return label_mean(scores)


def hd95(fixed_labels: Array, warped_labels: Array, labels: Sequence[int] | None,
         spacing: Sequence[float], *, moving_labels: Array | None = None) -> dict[int, float]:
    """Symmetric 95th-percentile Hausdorff distance per label, in mm, as Learn2Reg computes it.

    DeepMind's ``surface-distance`` method (``compute_robust_hausdorff(
    compute_surface_distances(fixed == l, warped == l, spacing), 95)``, reproduced to the bit by
    :mod:`registration._surfels`): surface elements on the lattice of voxel corners, weighted
    by their area, each with its distance to the other surface; the score is the larger of the
    two directed area-weighted 95th percentiles. Learn2Reg passes unit spacing (its HD95 is in
    voxels); this takes the grid's ``spacing`` so the result is in mm, and ``spacing=(1, 1, 1)``
    gives Learn2Reg's number.

    Args:
        fixed_labels, warped_labels: (D, H, W) integer label maps on the fixed grid.
        labels: ids to score (None: every non-zero id present in either map).
        spacing: voxel size (3 floats, mm) of the fixed grid.
        moving_labels: the moving map before warping, which decides presence as in :func:`dice`.

    Returns:
        {label id: HD95 in mm}; NaN when not scored, inf when scored but absent after warping
        (Learn2Reg's value; :func:`label_mean` is then inf too, as Learn2Reg's ``nanmean``).
    """
    return _hd95(_indexed(fixed_labels, warped_labels, labels, moving_labels), spacing)


def _hd95(x: _Indexed, spacing: Sequence[float]) -> dict[int, float]:
    ids, n, present, size_w = x.ids, len(x.ids), x.present, x.size_warped
    fi, wi = x.fixed.reshape(x.shape), x.warped.reshape(x.shape)
    boxes_f = ndimage.find_objects(np.where(fi < n, fi + 1, 0), max_label=n)
    boxes_w = ndimage.find_objects(np.where(wi < n, wi + 1, 0), max_label=n)
    spacing = tuple(float(s) for s in spacing)
    scores = {}
    for k, label in enumerate(ids):
        if not present[k]:
            scores[int(label)] = float("nan")
        elif size_w[k] == 0:
            scores[int(label)] = float("inf")
        else:
            box = tuple(slice(min(f.start, w.start), max(f.stop, w.stop))
                        for f, w in zip(boxes_f[k], boxes_w[k]))
            scores[int(label)] = _surfels.robust_hausdorff(fi[box] == k, wi[box] == k, spacing)
    return scores


def jacobian_determinant(disp: Array) -> np.ndarray:
    """Learn2Reg's Jacobian determinant of ``x -> x + u(x)``, cropped by 2 voxels per side.

    Learn2Reg correlates each component with [-0.5, 0, 0.5] (zero padding), adds the identity
    and keeps ``[2:-2]`` on every axis; there every difference is central, so this crops
    :func:`synthgen.ops.jacobian.jacobian_determinant` (central differences inside) the same way.

    Args:
        disp: (3, D, H, W) float displacement in voxels (every size > 4).

    Returns:
        (D - 4, H - 4, W - 4) numpy array (float64 for float64 input, else float32).
    """
    u = torch.as_tensor(_numpy(disp))
    c = L2R_CROP
    return _jacobian.jacobian_determinant(u)[c:-c, c:-c, c:-c].numpy()


def _masked(values: np.ndarray, mask: Array | None) -> np.ndarray:
    return values if mask is None else values[_numpy(mask).astype(bool)]


def sdlogj(jac: Array, mask: Array | None = None) -> float:
    """Standard deviation of ``log(clip(J, 1e-9, 1e9))`` over J (or over ``mask``, J's shape)."""
    j = _masked(_numpy(jac).astype(np.float64), mask)
    return float(np.log(np.clip(j, 1e-9, 1e9)).std())


def sdlogj_l2r(jac: Array, mask: Array | None = None) -> float:
    """Learn2Reg's score exactly: std of ``log(clip(J + 3, 1e-9, 1e9))`` (note the + 3)."""
    j = _masked(_numpy(jac).astype(np.float64), mask)
    return float(np.log(np.clip(j + 3.0, 1e-9, 1e9)).std())


def fold_pct(jac: Array, mask: Array | None = None) -> float:
    """Percentage of voxels with ``J <= 0``, counted on the raw determinant.

    Learn2Reg's ``num_foldings`` counts on the ``J + 3``-clipped array, so it is always 0; this
    is the count it meant.
    """
    j = _masked(_numpy(jac), mask)
    return float(100.0 * np.count_nonzero(j <= 0) / j.size) if j.size else float("nan")


def tre(fixed_landmarks: Array, moving_landmarks: Array, disp: Array,
        spacing: Sequence[float]) -> np.ndarray:
    """Target registration error per landmark pair, in mm, as Learn2Reg.

    The displacement is sampled at the fixed landmarks by cubic spline interpolation
    (``scipy.ndimage.map_coordinates``, order 3, zero outside the grid), and the error is
    ``||(fix + u(fix) - mov) * spacing||``.

    Args:
        fixed_landmarks: (N, 3) float voxel coordinates in the fixed grid.
        moving_landmarks: (N, 3) corresponding voxel coordinates, in the grid the displacement
            points into (the fixed grid once the moving image is resampled onto it).
        disp: (3, D, H, W) displacement in voxels.
        spacing: voxel size (3 floats, mm).

    Returns:
        (N,) float64 distances in mm.
    """
    fix = _numpy(fixed_landmarks).astype(np.float64).reshape(-1, 3)
    mov = _numpy(moving_landmarks).astype(np.float64).reshape(-1, 3)
    if fix.shape != mov.shape:
        raise ValueError(f"landmark sets differ in shape: {fix.shape} vs {mov.shape}")
    u = _numpy(disp).astype(np.float64)
    sampled = np.stack([ndimage.map_coordinates(u[i], fix.T, order=3) for i in range(3)], axis=1)
    return np.linalg.norm((fix + sampled - mov) * np.asarray(spacing, dtype=np.float64), axis=1)


def endpoint_error_map(disp: Array, true_disp: Array,
                       spacing: Sequence[float] | None = None) -> np.ndarray:
    """Per-voxel end-point error ``||u - u_true||``, (D, H, W) float64, in voxels or in mm when
    ``spacing`` is given. Both fields are (3, D, H, W) in voxels on the same grid."""
    diff = _numpy(disp).astype(np.float64) - _numpy(true_disp).astype(np.float64)
    if spacing is not None:
        diff = diff * np.asarray(spacing, dtype=np.float64).reshape(3, 1, 1, 1)
    return np.sqrt((diff ** 2).sum(axis=0))


def endpoint_error(disp: Array, true_disp: Array, mask: Array | None = None,
                   spacing: Sequence[float] | None = None) -> float:
    """Mean end-point error over all voxels, or over ``mask`` ((D, H, W) bool) when given."""
    return float(_masked(endpoint_error_map(disp, true_disp, spacing), mask).mean())
