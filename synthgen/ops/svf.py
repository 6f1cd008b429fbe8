"""Displacement-field algebra: composition, SVF integration (scaling and squaring), resizing.

A displacement ``u`` is (3, D, H, W) or (B, 3, D, H, W) in voxels, channel i along axis i; it
stands for the map ``T_u(x) = x + u(x)`` and ``warped(x) = moving(T_u(x))``. Out-of-grid
samples use border padding (constant extension of the field): with zero padding a constant
velocity would not integrate to a translation and fields would fold at the edges.

MONAI's ``DVF2DDF`` integrates with zero padding and its own grid convention; voxelmorph's
``VecInt`` mixes align_corners conventions. This module uses ``ops.grids`` throughout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from synthgen.ops.interpolate import upsample
from synthgen.ops.warp import warp


def compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Displacement of ``T_outer o T_inner``: ``inner(x) + outer(x + inner(x))``.

    Warping by the result equals warping by ``outer`` and then by ``inner``:
    ``warp(warp(m, outer), inner) ~= warp(m, compose(outer, inner))``.

    Args:
        outer, inner: (3, D, H, W) or (B, 3, D, H, W) float displacements on the same grid.

    Returns:
        Tensor of the same shape and dtype.
    """
    return inner + warp(outer, inner, mode="bilinear", padding="border")


def integrate_svf(velocity: torch.Tensor, steps: int = 7) -> torch.Tensor:
    """``exp(v)`` by scaling and squaring: ``u = v / 2**steps``, then ``steps`` times ``u = u o u``.

    Args:
        velocity: (3, D, H, W) or (B, 3, D, H, W) float stationary velocity field in voxels.
        steps: number of squarings (>= 0).

    Returns:
        Displacement of the same shape and dtype as ``velocity``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    u = velocity / (2 ** steps)
    for _ in range(steps):
        u = compose(u, u)
    return u


def upsample_flow(flow: torch.Tensor, factor: int) -> torch.Tensor:
    """A (B, 3, D, H, W) displacement on a grid ``factor`` times finer, magnitude x ``factor``:
    ``F.interpolate`` (trilinear, ``align_corners=False``), differentiable, for training losses
    and network outputs. The same values as :func:`upsample_displacement` without ``pad``."""
    if factor == 1:
        return flow
    return F.interpolate(flow, scale_factor=factor, mode="trilinear", align_corners=False) * factor


def upsample_displacement(displacement: torch.Tensor, factor: int, *, pad: int = 0,
                          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Resample a displacement from a coarse grid to a grid ``factor`` times finer.

    Coarse node j sits at fine voxel ``j * f + (f - 1) / 2`` (``align_corners=False`` layout,
    as ``F.interpolate(scale_factor=f)``); values are interpolated trilinearly and multiplied by
    f, since a fine voxel is f times smaller. The outermost (f - 1) / 2 fine voxels lie beyond
    the outer nodes: without ``pad`` they take the border value, which zeroes the field's normal
    derivative there (a large local rotation then reads as a fold). With ``pad >= 1`` the coarse
    field carries ``pad`` extra nodes per side, used for interpolation and dropped from the output.

    Args:
        displacement: (3, D, H, W) or (B, 3, D, H, W) float, in coarse voxels, including the
            ``pad`` nodes per side.
        factor: integer upsampling factor.
        pad: coarse nodes per side beyond the fine grid's extent.
        dtype: output dtype (default the input's), e.g. float16 for storage.

    Returns:
        (..., 3, (D - 2 pad) f, (H - 2 pad) f, (W - 2 pad) f) displacement in fine voxels.
    """
    return upsample(displacement * factor, factor, pad=pad, dtype=dtype)
