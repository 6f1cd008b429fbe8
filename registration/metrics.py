"""Registration scores as the Learn2Reg evaluation (MDL-UzL/L2R, eval_version 2.0) computes them.

Inputs are numpy arrays or torch tensors (moved to the CPU); results are Python floats, dicts of
floats or numpy arrays. Label maps are (D, H, W) integer volumes on the fixed grid; a
displacement is (3, D, H, W) in voxels with ``warped(x) = moving(x + u(x))``
(:mod:`registration.warp`). Per-label scores are NaN for a label absent from the fixed map or
from the moving map (Learn2Reg judges presence on the moving map before warping; pass
``moving_labels`` to do the same, otherwise presence is judged on the warped map).

Deviations from the reference, on purpose:

- HD95 measures between surface *voxels* (see :func:`hd95`), not DeepMind's surfels.
- :func:`fold_pct` counts ``J <= 0`` on the raw determinant. Learn2Reg's ``num_foldings``
  counts on ``clip(J + 3)``, which is always positive, so it always reports 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

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
        moving_labels: the unwarped moving map; when given, a label counts as absent if it is
            absent there (Learn2Reg), else if it is absent from ``warped_labels``.

    Returns:
        {label id: Dice in [0, 1], or NaN when absent from the fixed or moving map}.
    """
    fixed, warped = _numpy(fixed_labels), _numpy(warped_labels)
    if fixed.shape != warped.shape:
        raise ValueError(f"label maps differ in shape: {fixed.shape} vs {warped.shape}")
    ids = _label_ids(fixed, warped, labels)
    n = len(ids)
    fi, wi = _label_index(fixed, ids), _label_index(warped, ids)
    size_f, size_w = _counts(fi, n), _counts(wi, n)
    overlap = _counts(fi[fi == wi], n)
    present = size_f > 0
    present &= (_present(moving_labels, ids) if moving_labels is not None else size_w > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(present, 2.0 * overlap / (size_f + size_w), np.nan)
    return {int(i): float(s) for i, s in zip(ids, scores)}


def _present(labels: Array, ids: np.ndarray) -> np.ndarray:
    return _counts(_label_index(_numpy(labels), ids), len(ids)) > 0


def label_mean(scores: dict[int, float]) -> float:
    """Mean of per-label scores (Dice, HD95) ignoring NaN (Learn2Reg's nanmean); NaN if all are
    NaN."""
    values = np.array(list(scores.values()), dtype=np.float64)
    return float(values[~np.isnan(values)].mean()) if np.any(~np.isnan(values)) else float("nan")


def mean_dice(scores: dict[int, float]) -> float:
    """:func:`label_mean` of per-label Dice scores."""
    return label_mean(scores)


def _surface_voxels(labels: np.ndarray) -> np.ndarray:
    """(D, H, W) bool: voxels with a 6-neighbour of another label, or on the volume's faces."""
    surface = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        differs = labels[tuple(lo)] != labels[tuple(hi)]
        surface[tuple(lo)] |= differs
        surface[tuple(hi)] |= differs
        edge = [slice(None)] * 3
        edge[axis] = [0, -1]
        surface[tuple(edge)] = True
    return surface


def _surfaces(labels: np.ndarray, ids: np.ndarray) -> list[np.ndarray]:
    """Per label id, the (N, 3) int voxel coordinates of its surface voxels."""
    coords = np.argwhere(_surface_voxels(labels))
    index = _label_index(labels[tuple(coords.T)], ids)
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(len(ids) + 1))
    return [coords[order[bounds[k]:bounds[k + 1]]] for k in range(len(ids))]


def _directed_p95(source: np.ndarray, target: np.ndarray, scale: np.ndarray) -> float:
    distances, _ = cKDTree(target * scale).query(source * scale, k=1, workers=-1)
    return float(np.percentile(distances, 95))


def hd95(fixed_labels: Array, warped_labels: Array, labels: Sequence[int] | None,
         spacing: Sequence[float], *, moving_labels: Array | None = None) -> dict[int, float]:
    """Symmetric 95th-percentile Hausdorff distance per label, in mm.

    For each label, the surface of a region is its voxels that have a 6-neighbour outside it
    (or lie on the volume's faces, as if the volume were padded with background). Each surface
    voxel of the fixed region gets the Euclidean distance in mm (``spacing`` per axis) to the
    nearest surface voxel of the warped region, and vice versa (exact nearest neighbours, by a
    k-d tree over surface points; the same numbers as a distance transform of the other surface,
    at a fraction of the cost on large volumes). The score is the larger of the two directed
    95th percentiles (``np.percentile``, linear interpolation).

    Learn2Reg uses DeepMind's ``surface_distance``: surfels between voxels weighted by their
    area, and a cumulative-area percentile. On the same masks the two agree to within about
    half a voxel; both are 0 for identical masks. Learn2Reg passes unit spacing (its HD95 is
    in voxels); pass ``spacing=(1, 1, 1)`` to reproduce that.

    Args:
        fixed_labels, warped_labels: (D, H, W) integer label maps on the fixed grid.
        labels: ids to score (None: every non-zero id present in either map).
        spacing: voxel size (3 floats, mm) of the fixed grid.
        moving_labels: as in :func:`dice` (presence judged on the unwarped moving map).

    Returns:
        {label id: HD95 in mm}; NaN when absent from the fixed or moving map, inf when present
        there but absent after warping.
    """
    fixed, warped = _numpy(fixed_labels), _numpy(warped_labels)
    if fixed.shape != warped.shape:
        raise ValueError(f"label maps differ in shape: {fixed.shape} vs {warped.shape}")
    ids = _label_ids(fixed, warped, labels)
    scale = np.asarray(spacing, dtype=np.float64)
    surf_f, surf_w = _surfaces(fixed, ids), _surfaces(warped, ids)
    present = (_present(moving_labels, ids) if moving_labels is not None
               else np.array([len(s) > 0 for s in surf_w]))
    scores = {}
    for k, label in enumerate(ids):
        if len(surf_f[k]) == 0 or not present[k]:
            scores[int(label)] = float("nan")
        elif len(surf_w[k]) == 0:
            scores[int(label)] = float("inf")
        else:
            scores[int(label)] = max(_directed_p95(surf_f[k], surf_w[k], scale),
                                     _directed_p95(surf_w[k], surf_f[k], scale))
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
