"""Bringing one real volume onto the dataset's grid: intensities, orientation, spacing, shape.

The output grid has the dataset's voxel size, the chosen axis orientation (``RAS``: array axis
0 runs to the patient's right, 1 to anterior, 2 to superior, as nibabel's axis codes; ``none``:
the source's own axis directions) and the dataset's shape, centred on the centre of the source
volume: a crop where the source is larger, zero padding where it is smaller. One affine map from
output voxels to source voxels does reorientation, resampling and crop/pad in a single
interpolation: trilinear for images, nearest for labels (ties broken upwards, as the harness).
Intensities are normalised on the source voxels before resampling, so padding is the
normalised minimum, 0.
"""

from __future__ import annotations

import numpy as np
import torch

from registration.datasets.grids import onto_grid
from registration.warp import affine_displacement
from synthgen.errors import SynthgenError

AXIS_LETTERS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
FLOAT16_MAX = 65504.0


def check_orientation(orientation: str) -> str:
    """``orientation`` if it is ``none`` or three axis letters naming each world axis once
    (e.g. RAS, LPS); else SynthgenError."""
    letters = orientation.upper() if isinstance(orientation, str) else ""
    axes = sorted(AXIS_LETTERS[c][0] for c in letters if c in AXIS_LETTERS)
    if orientation != "none" and (len(letters) != 3 or axes != [0, 1, 2]):
        raise SynthgenError(f"orientation must be three letters naming each axis once from R/L, A/P, S/I "
                            f"(e.g. RAS, LPS) or 'none' to keep the source's axes, got {orientation!r}")
    return orientation if orientation == "none" else letters


def parse_intensity(intensity: str) -> tuple[str, float, float]:
    """``percentile:LO,HI`` (per volume, 0 <= LO < HI <= 100), ``ct:LO,HI`` (a window in the
    image's units, LO < HI) or ``none`` -> ``(kind, lo, hi)``; else SynthgenError."""
    kind, _, values = str(intensity).partition(":")
    try:
        lo, hi = (float(v) for v in values.split(",")) if kind != "none" else (0.0, 0.0)
        valid = (kind == "none" and not values) or (kind in ("percentile", "ct") and lo < hi and
                                                    (kind == "ct" or 0 <= lo and hi <= 100))
    except ValueError:
        valid = False
    if not valid:
        raise SynthgenError(f"intensity must be percentile:LO,HI (0 <= LO < HI <= 100, e.g. percentile:1,99), "
                            f"ct:LO,HI (a window, e.g. ct:-450,450) or none, got {intensity!r}")
    return kind, lo, hi


def normalise(image: np.ndarray, intensity: str, where: str) -> np.ndarray:
    """``image`` (float32, any shape) mapped to [0, 1] by ``intensity`` (``parse_intensity``),
    or unchanged for ``none`` (refused if float16 cannot hold it). Returns float32."""
    kind, lo, hi = parse_intensity(intensity)
    if kind == "none":
        if np.abs(image).max(initial=0.0) > FLOAT16_MAX:
            raise SynthgenError(f"{where}: intensities up to {np.abs(image).max():g} overflow float16; "
                                f"normalise them (--intensity percentile:1,99 or ct:LO,HI)")
        return image
    if kind == "percentile":
        lo, hi = (float(v) for v in np.percentile(image, [lo, hi]))
    if not hi > lo:  # a constant image
        return np.zeros(image.shape, dtype=np.float32)
    return apply_window(torch.from_numpy(image), (lo, hi)).numpy()


def apply_window(image: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """A real image (any shape) clipped to ``window`` = (low, high), low < high, and mapped
    linearly to [0, 1], as float32 (also the harness's ``--intensity-window``)."""
    low, high = window
    return (image.float().clamp(low, high) - low) / (high - low)


def output_affine(source_affine: np.ndarray, source_shape: tuple[int, ...], shape: tuple[int, int, int],
                  spacing: float, orientation: str) -> np.ndarray:
    """The (4, 4) voxel -> RAS mm affine of the output grid (module docstring).

    Args:
        source_affine: (4, 4) voxel -> RAS mm affine of the source volume.
        source_shape: its (D, H, W).
        shape: the output (D, H, W).
        spacing: the output voxel size in mm.
        orientation: ``check_orientation``'s form.
    """
    direction = output_direction(source_affine, orientation)
    centre = source_affine[:3, :3] @ ((np.asarray(source_shape[:3]) - 1) / 2.0) + source_affine[:3, 3]
    affine = np.eye(4)
    affine[:3, :3] = direction * spacing
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def output_direction(source_affine: np.ndarray, orientation: str) -> np.ndarray:
    """(3, 3) unit world directions (RAS) of the output array axes, as columns."""
    if orientation == "none":
        linear = source_affine[:3, :3]
        return linear / np.linalg.norm(linear, axis=0)
    direction = np.zeros((3, 3))
    for axis, letter in enumerate(orientation):
        world, sign = AXIS_LETTERS[letter]
        direction[world, axis] = sign
    return direction


def covering_shape(source_affine: np.ndarray, source_shape: tuple[int, ...], spacing: float,
                   orientation: str) -> tuple[int, int, int]:
    """The (D, H, W) of the output grid that spans the whole source volume (the centres of
    its corner voxels) at ``spacing`` mm in ``orientation``; with ``output_affine`` the grid
    is centred on the source, as the crop/pad grid."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in source_shape[:3]], indexing="ij")).reshape(3, -1)
    world = source_affine[:3, :3] @ corners
    along = output_direction(source_affine, orientation).T @ world / spacing
    extent = along.max(axis=1) - along.min(axis=1)
    return tuple(int(np.floor(e + 1e-6)) + 1 for e in extent)  # type: ignore[return-value]


def resample(volume: np.ndarray, source_affine: np.ndarray, target_affine: np.ndarray,
             shape: tuple[int, int, int], labels: bool) -> torch.Tensor:
    """``volume`` (D', H', W') sampled on the grid of ``target_affine`` and ``shape``: float32
    trilinear for an image, int64 nearest for labels, 0 outside the source."""
    matrix = np.linalg.solve(source_affine, target_affine)  # output voxel -> source voxel
    return onto_grid(volume, affine_displacement(matrix, shape), labels)
