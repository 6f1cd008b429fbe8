"""Binary-mask geometry: tight bounding boxes, crops, and resampling to an isotropic spacing.

Axis convention: a mask's axes are the array axes it came with (for NIfTI files, the axes of
nibabel's data array, i, j, k, with no reorientation to RAS or any other frame), and its
``spacing`` is the voxel size along each of those axes in mm. Templates are placed by engines
with random rotations of up to 180 degrees and random reflections, so their orientation carries
no meaning and is not normalised.

Resampling is linear interpolation followed by a threshold at 0.5 (not nearest neighbour).
Nearest neighbour at a non-integer scale factor duplicates or drops whole voxel planes, which
gives staircase boundaries when upsampling (e.g. 3 mm -> 1.5 mm) and a volume that depends on
the phase of the output grid; the 0.5 level set of the linear interpolant is the boundary
halfway between inside and outside voxel centres, so it is smoother and keeps volume and
extent unbiased. Values outside the crop are 0 (the crop is tight, so that is true outside).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The tight bounding box of the non-zero voxels of a 3-D array, or None if there are none.

    Args:
        mask: (D, H, W) array of any dtype; non-zero means inside.

    Returns:
        Three slices, one per axis, such that ``mask[box]`` holds every non-zero voxel and each
        of its six faces holds at least one.
    """
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=others))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def crop(mask: np.ndarray) -> np.ndarray | None:
    """``mask`` cropped to its tight bounding box, as a new C-contiguous bool array (d, h, w);
    None if the mask is empty."""
    box = bounding_box(mask)
    if box is None:
        return None
    return np.ascontiguousarray(mask[box], dtype=bool)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: float) -> tuple[int, int, int]:
    """Voxels per axis covering the same physical extent, ``shape[i] * spacing[i]`` mm, at
    ``target`` mm: ``max(1, round(extent / target))``."""
    return tuple(max(1, int(round(n * s / target))) for n, s in zip(shape, spacing))  # type: ignore[return-value]


def _resample_axis(values: np.ndarray, axis: int, spacing: float, target: float, size: int) -> np.ndarray:
    """Linear interpolation of float32 ``values`` along ``axis`` onto ``size`` points ``target``
    mm apart, centred on the input's centre; zero outside the input."""
    n = values.shape[axis]
    position = (n - 1) / 2.0 + (np.arange(size) - (size - 1) / 2.0) * (target / spacing)
    lower = np.floor(position)
    weight = (position - lower).astype(np.float32)
    padded = np.pad(values, [(1, 1) if a == axis else (0, 0) for a in range(values.ndim)])
    first = np.clip(lower.astype(np.intp) + 1, 0, n + 1)
    second = np.clip(lower.astype(np.intp) + 2, 0, n + 1)
    view = [1] * values.ndim
    view[axis] = size
    weight = weight.reshape(view)
    return np.take(padded, first, axis=axis) * (1 - weight) + np.take(padded, second, axis=axis) * weight


def resample(mask: np.ndarray, spacing: Sequence[float], target: float) -> np.ndarray:
    """Resample a binary mask to isotropic ``target`` mm (linear interpolation, threshold 0.5).

    Args:
        mask: (d, h, w) bool (or 0/1) array, typically a tight crop.
        spacing: (3,) voxel size of ``mask`` along each axis in mm.
        target: output voxel size in mm, > 0.

    Returns:
        (d', h', w') bool array with ``shape == resampled_shape(mask.shape, spacing, target)``,
        sharing the input's centre; axes with ``spacing == target`` are copied unchanged. The
        result may be empty, or not tight, where structures are thinner than ``target``.
    """
    values = mask.astype(np.float32)
    size = resampled_shape(mask.shape, spacing, target)
    for axis in range(3):
        if spacing[axis] != target:
            values = _resample_axis(values, axis, float(spacing[axis]), float(target), size[axis])
    return values >= 0.5


def prepare(mask: np.ndarray, spacing: Sequence[float], target: float | None) -> np.ndarray | None:
    """A template from a full-size mask: crop to the bounding box, resample to ``target`` mm if
    given, and crop tight again. Returns a C-contiguous bool (d, h, w) array, or None if the mask
    is empty (before or after resampling)."""
    cropped = crop(mask)
    if cropped is None or target is None:
        return cropped
    return crop(resample(cropped, spacing, target))
