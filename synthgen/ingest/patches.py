"""Patches of real volumes with a minimum foreground fraction, as the 3D DINO paper's data.

The published recipe (Kats et al., ``EytanKats/med_ssl_3d`` ``data/create_data.py`` and
``utils/img_ops.py``) resamples a volume, masks its foreground and draws up to 100 random
patch positions, keeping the first whose foreground fraction reaches the minimum (0.7) or else
the best one. Here:

- the foreground mask is the published MRI rule, for every modality: Gaussian smoothing
  (sigma 1 voxel, MONAI's erf kernel and zero padding, as its ``GaussianSmooth``), above the
  volume's 40th percentile, closed with a ball of radius 7 (skimage's ``binary_closing``: torch
  dilation then erosion, ``synthgen.ops.morphology``), holes filled, largest connected
  component. (The published CT rule thresholds raw HU at 0.2 although its comment says -400 HU;
  one rule for both keeps the foreground meaning the same after any intensity normalisation.)
- positions come from the sample's own generator (``seeding.PATCH_STREAM``), all 100 drawn at
  once and scored from a summed-volume table.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from synthgen.ops.augment._common import erf_gaussian_kernel, separable_filter
from synthgen.ops.morphology import dilate_ball, erode_ball

SMOOTH_SIGMA = 1.0
THRESHOLD_PERCENTILE = 40.0
CLOSING_RADIUS = 7
TRIES = 100


def foreground_mask(image: torch.Tensor) -> torch.Tensor:
    """The body of a (D, H, W) float image as a (D, H, W) bool tensor (module docstring)."""
    kernel = erf_gaussian_kernel(SMOOTH_SIGMA).to(image.device)
    smooth = separable_filter(image.float()[None, None], [kernel] * 3, padding="zeros")[0, 0]
    mask = smooth > float(np.percentile(smooth.cpu().numpy(), THRESHOLD_PERCENTILE))
    mask = erode_ball(dilate_ball(mask, CLOSING_RADIUS), CLOSING_RADIUS)
    filled = ndimage.binary_fill_holes(mask.cpu().numpy())
    components, count = ndimage.label(filled)
    if count > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        filled = components == int(np.argmax(sizes))
    return torch.from_numpy(np.ascontiguousarray(filled)).to(image.device)


def summed_volume(mask: torch.Tensor) -> torch.Tensor:
    """The (D + 1, H + 1, W + 1) int64 summed-volume table of a (D, H, W) bool mask (CPU):
    entry (d, h, w) counts the foreground voxels before (d, h, w) on every axis."""
    return torch.nn.functional.pad(mask.cpu().to(torch.int64).cumsum(0).cumsum(1).cumsum(2), (1, 0, 1, 0, 1, 0))


def choose_patch(mask: torch.Tensor, patch: tuple[int, int, int], min_fraction: float,
                 generator: torch.Generator, table: torch.Tensor | None = None
                 ) -> tuple[tuple[int, int, int], float]:
    """A patch position in ``mask`` (D, H, W) bool: of TRIES uniform draws, the first whose
    foreground fraction reaches ``min_fraction``, else the one with the largest fraction.
    ``table``: the mask's ``summed_volume``, when the caller keeps it for several patches.

    Returns:
        ``(start, fraction)``: the patch's first voxel (d, h, w) and its foreground fraction.
    """
    room = [n - p + 1 for n, p in zip(mask.shape, patch)]
    starts = torch.stack([torch.randint(0, r, (TRIES,), generator=generator) for r in room], dim=1)
    table = summed_volume(mask) if table is None else table
    lo, hi = starts, starts + torch.tensor(patch)
    total = torch.zeros(TRIES, dtype=torch.int64)
    for corner in range(8):  # inclusion-exclusion over the box's corners
        picks = [(hi if corner >> axis & 1 else lo)[:, axis] for axis in range(3)]
        sign = (-1) ** (3 - bin(corner).count("1"))
        total += sign * table[picks[0], picks[1], picks[2]]
    fractions = total.double() / float(np.prod(patch))
    good = torch.nonzero(fractions >= min_fraction)
    k = int(good[0, 0]) if len(good) else int(torch.argmax(fractions))
    return tuple(int(v) for v in starts[k]), float(fractions[k])  # type: ignore[return-value]
