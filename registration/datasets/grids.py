"""Voxel grids of a pair's images and the fixed-voxel -> moving-voxel map between them.

The map comes from the pair's ``align`` option:

- ``centre`` (default): each image keeps its orientation and voxel size (the affine's rotation
  and zooms) but not its origin; the two grids' centres coincide. For data whose origins are
  not meaningful (the prostate MR/US pairs).
- ``world``: the NIfTI affines as stored (scanner/world coordinates).

An optional ``moving_shift`` (mm) translates the alignment: a known pre-alignment. When the
map is the identity (same shape, and the same spacing and orientation under
``centre``, or the same affine under ``world``) nothing is resampled.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from registration.datasets.pair_files import PairSpec, Spacing
from registration.datasets.volumes import _Volume
from synthgen.errors import SynthgenError
from synthgen.ops.warp import warp_image, warp_labels

# Nearest-neighbour resampling rounds half to even; grids whose centres are half a voxel apart
# would then take alternately the lower and the upper voxel (duplicated and dropped planes).
# Nudging label coordinates by this much (voxels) resolves every exact tie upwards instead.
TIE_BREAK = 1e-3


@dataclasses.dataclass
class _Grid:
    shape: tuple[int, int, int]
    spacing: Spacing | None
    affine: np.ndarray | None  # voxel -> world mm, with spacing overrides applied


def _grid(volume: _Volume, shape: tuple[int, ...], override: Spacing | None) -> _Grid:
    spacing = override or volume.zooms
    affine = None
    if volume.affine is not None and spacing is not None:
        linear = volume.affine[:3, :3]
        norms = np.linalg.norm(linear, axis=0)
        direction = linear / np.where(norms > 0, norms, 1.0)
        affine = volume.affine.copy()
        affine[:3, :3] = direction * np.asarray(spacing)
    elif spacing is not None:
        affine = np.diag([*spacing, 1.0])
    return _Grid(tuple(int(n) for n in shape), spacing, affine)  # type: ignore[arg-type]


def _centred(grid: _Grid) -> np.ndarray:
    affine = grid.affine.copy()
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(grid.shape) - 1) / 2.0)
    return affine


def _fixed_to_moving(fixed: _Grid, moving: _Grid, spec: PairSpec, has_affines: bool) -> np.ndarray | None:
    """4x4 map from fixed voxel indices to moving voxel indices; None when it is the identity."""
    if fixed.spacing is None or moving.spacing is None:
        if fixed.shape == moving.shape:
            unit = _Grid(fixed.shape, (1.0, 1.0, 1.0), np.eye(4))
            fixed, moving = unit, unit
        else:
            raise SynthgenError(f"pair {spec.name}: fixed image {fixed.shape} and moving image "
                                f"{moving.shape} differ in shape and the "
                                f"{'fixed' if fixed.spacing is None else 'moving'} one has no spacing "
                                f"(.npy/.npz); give fixed_spacing and moving_spacing, or resample both "
                                f"images to one shape")
    if spec.align == "world":
        if not has_affines:
            raise SynthgenError(f"pair {spec.name}: align=world needs NIfTI affines on both images; use "
                                f"align=centre for .npy/.npz images")
        matrix = np.linalg.solve(moving.affine, fixed.affine)
    else:
        matrix = np.linalg.solve(_centred(moving), _centred(fixed))
    if spec.moving_shift is not None:
        shift = np.eye(4)
        shift[:3, 3] = np.asarray(spec.moving_shift) / np.asarray(fixed.spacing)
        matrix = matrix @ shift
    if fixed.shape == moving.shape and np.allclose(matrix, np.eye(4), atol=1e-5):
        return None
    return matrix


def _to_fixed_points(points: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    if matrix is None:
        return points
    inverse = np.linalg.inv(matrix)
    return points @ inverse[:3, :3].T + inverse[:3, 3]


def onto_grid(array: np.ndarray, displacement: torch.Tensor | None, labels: bool) -> torch.Tensor:
    """``array`` (D', H', W') sampled at ``x + displacement(x)`` for the voxels x of another
    grid (``displacement`` (3, D, H, W) in voxels of ``array``, e.g. from
    ``registration.warp.affine_displacement``): trilinear, or for labels nearest with ties
    resolved upwards (TIE_BREAK); zero outside ``array``. ``displacement`` None: ``array``
    itself, as a tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if displacement is None:
        return tensor
    if labels:
        return warp_labels(tensor, displacement + TIE_BREAK, padding="zeros")
    return warp_image(tensor, displacement, padding="zeros")
