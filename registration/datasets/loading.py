"""Loading one pair: :func:`load_pair` reads it into a :class:`RegistrationPair`.

One grid. The moving image, labels, mask and landmarks are brought onto the fixed image's grid
when the two grids differ (image trilinear, labels and mask nearest, zero outside the moving
volume; landmarks mapped exactly), by the fixed-voxel -> moving-voxel map of the pair's
``align`` option (:mod:`registration.datasets.grids`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from registration.datasets.grids import _fixed_to_moving, _grid, _to_fixed_points, onto_grid
from registration.datasets.labels import _label_ids, _labels, _landmarks
from registration.datasets.pair_files import PairSpec, Spacing
from registration.datasets.volumes import _image, _mask
from registration.warp import affine_displacement


@dataclasses.dataclass
class RegistrationPair:
    """A loaded pair, everything on the fixed image's grid.

    Attributes:
        name: the pair's name.
        fixed, moving: (D, H, W) float32 tensors (moving resampled onto the fixed grid).
        spacing: voxel size of the fixed grid, 3 floats in mm.
        fixed_labels, moving_labels: (D, H, W) int64 tensors, or None.
        label_ids: label ids to evaluate.
        label_names: {label id: name}, or None.
        fixed_landmarks, moving_landmarks: (N, 3) float64 voxel coordinates in the fixed grid
            (corresponding rows), or None.
        fixed_mask, moving_mask: (D, H, W) bool tensors, or None.
        affine: (4, 4) voxel -> world mm affine of the fixed grid (RAS for NIfTI, NRRD and
            MetaImage files; spacing overrides applied), or None without geometry.
    """

    name: str
    fixed: torch.Tensor
    moving: torch.Tensor
    spacing: Spacing
    fixed_labels: torch.Tensor | None = None
    moving_labels: torch.Tensor | None = None
    label_ids: Sequence[int] = ()
    label_names: dict[int, str] | None = None
    fixed_landmarks: np.ndarray | None = None
    moving_landmarks: np.ndarray | None = None
    fixed_mask: torch.Tensor | None = None
    moving_mask: torch.Tensor | None = None
    affine: np.ndarray | None = None


def load_pair(spec: PairSpec) -> RegistrationPair:
    """Read one pair and bring its moving side onto the fixed grid (see the module docstring).

    Returns:
        A :class:`RegistrationPair`: images float32 (D, H, W), labels int64, masks bool,
        landmarks (N, 3) float64 fixed-grid voxel coordinates.

    Raises:
        SynthgenError: one line naming the pair and the file: missing or unreadable file, a
        non-3-D image, NaN/inf intensities, labels or masks off their image's grid, requested
        labels that do not exist, different shapes without spacing information.
    """
    fixed, fixed_vol = _image(spec.fixed, "fixed image", spec.where)
    moving, moving_vol = _image(spec.moving, "moving image", spec.where)
    shapes = (fixed.shape, moving.shape)
    fixed_grid = _grid(fixed_vol, fixed.shape, spec.fixed_spacing)
    moving_grid = _grid(moving_vol, moving.shape, spec.moving_spacing)
    matrix = _fixed_to_moving(fixed_grid, moving_grid, spec,
                              fixed_vol.affine is not None and moving_vol.affine is not None)
    labels = _labels(spec, shapes)
    masks = (_mask(spec.fixed_mask, "fixed mask", spec.where, shapes[0]),
             _mask(spec.moving_mask, "moving mask", spec.where, shapes[1]))
    landmarks = _landmarks(spec, labels)

    displacement = None if matrix is None else affine_displacement(matrix, fixed.shape)

    def onto_fixed(array: np.ndarray, labels_like: bool) -> torch.Tensor:
        return onto_grid(array, displacement, labels_like)

    spacing = fixed_grid.spacing or moving_grid.spacing or (1.0, 1.0, 1.0)
    pair = RegistrationPair(name=spec.name, fixed=torch.from_numpy(fixed),
                            moving=onto_fixed(moving, False), spacing=tuple(spacing),  # type: ignore[arg-type]
                            affine=fixed_grid.affine)
    if labels is not None:
        fixed_labels, moving_labels, names = labels
        pair.fixed_labels = torch.from_numpy(fixed_labels.volume)
        pair.moving_labels = onto_fixed(moving_labels.volume, True)
        pair.label_ids = _label_ids(spec, fixed_labels.volume, moving_labels.volume)
        pair.label_names = names
    if masks[0] is not None:
        pair.fixed_mask = torch.from_numpy(masks[0])
    if masks[1] is not None:
        pair.moving_mask = onto_fixed(masks[1].astype(np.uint8), True).bool()
    if landmarks is not None:
        pair.fixed_landmarks = landmarks[0]
        pair.moving_landmarks = _to_fixed_points(landmarks[1], matrix)
    return pair
