"""Separable linear interpolation of volumes on regular sample grids.

``F.interpolate`` (and MONAI/TorchIO resizers, which call it) resample all three axes in one
pass and, on one CPU thread, take ~25 ms to upsample a 3-channel 32^3 field x4. Trilinear
interpolation is separable, and every resampling the engines need is regular along each axis:
positions ``start + k / factor``. Output samples with the same ``k mod factor`` then share one
weight and read consecutive inputs, so each axis costs ``factor`` vectorised ``lerp`` calls
(written into strided views of the output) instead of per-sample gathers: 3-channel 32^3 -> 128^3
takes ~2.4 ms instead of ~24 ms, with elementwise ops only (bitwise independent of the thread
count) and on any device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F


class Sampling(NamedTuple):
    """Regular sample positions ``start + k / factor``, k = 0..count-1, along one axis, in index
    units of the input axis. All positions must lie within [0, size - 1]."""

    start: float
    factor: int
    count: int


def _residue(sampling: Sampling, r: int, size: int) -> tuple[int, float, int]:
    """For outputs k = r, r + factor, ...: the first left input index, the weight of the right
    input, and how many outputs there are."""
    start, factor, count = sampling
    position = start + r / factor
    left = math.floor(position)
    weight = position - left
    n = len(range(r, count, factor))
    last = position + (n - 1)
    if n and (position < 0 or last > size - 1 + 1e-9):
        raise ValueError(f"sample positions [{start}, {start + (count - 1) / factor}] leave the "
                         f"axis of {size} samples")
    if weight > 1 - 1e-12:
        left, weight = left + 1, 0.0
    elif weight < 1e-12:
        weight = 0.0
    return left, weight, n


def resample_axis(x: torch.Tensor, dim: int, sampling: Sampling,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at regular positions.

    Args:
        x: float tensor.
        dim: the axis to resample.
        sampling: the output positions along ``dim`` (within the axis; no clamping).
        dtype: output dtype (default ``x.dtype``); computed in ``x.dtype``, rounded once.

    Returns:
        ``x`` with ``x.shape[dim]`` replaced by ``sampling.count`` (possibly a strided view).
    """
    dim = dim % x.dim()
    size = x.shape[dim]
    groups = -(-sampling.count // sampling.factor)
    shape = list(x.shape)
    shape[dim] = groups * sampling.factor
    out = torch.empty(shape, dtype=dtype or x.dtype, device=x.device)
    view = out.unflatten(dim, (groups, sampling.factor))
    for r in range(min(sampling.factor, sampling.count)):
        left, weight, n = _residue(sampling, r, size)
        target = view.select(dim + 1, r).narrow(dim, 0, n)
        if weight == 0.0:
            target.copy_(x.narrow(dim, left, n))
        else:
            torch.lerp(x.narrow(dim, left, n), x.narrow(dim, left + 1, n), weight, out=target)
    return out.narrow(dim, 0, sampling.count)


def first_axis_slices(x: torch.Tensor, sampling: Sampling) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(k, slab)``: the linear interpolation of ``x`` along dim -3 at sample k.

    For consumers that reduce each output slice at once (no (..., N, H, W) volume is ever
    materialised). The slab lives in a reused buffer: consume it before advancing.

    Args:
        x: (..., Dc, H, W) float tensor.
        sampling: the positions along dim -3.

    Yields:
        k and a (..., H, W) tensor.
    """
    size = x.shape[-3]
    diff = x[..., 1:, :, :] - x[..., :-1, :, :] if size > 1 else None
    buffer = torch.empty_like(x[..., 0, :, :])
    for k in range(sampling.count):
        r, j = k % sampling.factor, k // sampling.factor
        left, weight, _ = _residue(sampling, r, size)
        if weight == 0.0:
            buffer.copy_(x[..., left + j, :, :])
        else:
            torch.add(x[..., left + j, :, :], diff[..., left + j, :, :], alpha=weight, out=buffer)
        yield k, buffer


def resample_regular(x: torch.Tensor, samplings: Sequence[Sampling],
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    """Separable linear interpolation of the last three axes of ``x`` on a regular grid.

    Args:
        x: (..., D, H, W) float tensor.
        samplings: output positions along D, H and W.
        dtype: output dtype (default ``x.dtype``); intermediate stages keep ``x.dtype``.

    Returns:
        (..., N_0, N_1, N_2) contiguous tensor on ``x``'s device.
    """
    x = resample_axis(x, -1, samplings[2])
    x = resample_axis(x, -2, samplings[1])
    return resample_axis(x, -3, samplings[0], dtype).contiguous()


def upsample(x: torch.Tensor, factor: int, *, pad: int = 0, dtype: torch.dtype | None = None,
             shape: Sequence[int] | None = None) -> torch.Tensor:
    """Trilinear upsampling by an integer factor, ``align_corners=False`` layout.

    Coarse sample j sits at fine index ``j * factor + (factor - 1) / 2``.

    Args:
        x: (..., D, H, W) float tensor; with ``pad`` > 0 its outer ``pad`` samples per side lie
            outside the output grid and serve only as interpolation support.
        factor: upsampling factor.
        pad: coarse samples per side beyond the output's extent. With 0 the fine samples beyond
            the outermost coarse ones take the border value, as ``F.interpolate`` does.
        dtype: output dtype (default ``x.dtype``).
        shape: with ``pad`` 0, the output's spatial shape (default ``(D f, H f, W f)``), e.g.
            a volume whose sides are not multiples of ``factor`` for a grid of ``side // factor``
            blocks; sides beyond the coarse grid take its border value.

    Returns:
        (..., *shape) tensor, or (..., (D - 2 pad) f, (H - 2 pad) f, (W - 2 pad) f) with ``pad``.
    """
    if pad > 0:
        if shape is not None:
            raise ValueError("upsample takes pad or shape, not both")
        start = pad - (factor - 1) / (2 * factor)
        samplings = [Sampling(start, factor, (n - 2 * pad) * factor) for n in x.shape[-3:]]
        return resample_regular(x, samplings, dtype)
    coarse = x.shape[-3:]
    out = [n * factor for n in coarse] if shape is None else [int(n) for n in shape]
    if factor == 1 and out == list(coarse):
        return resample_regular(x, [Sampling(0.0, 1, n) for n in out], dtype)
    offset = (factor - 1) / (2 * factor)
    # replicate-pad one node below and enough above that the last output voxel has support
    high = [max(1, math.ceil((o - 1) / factor - offset - (n - 1))) for o, n in zip(out, coarse)]
    lead = x.shape[:-3]
    x = F.pad(x.reshape(1, -1, *coarse), (1, high[2], 1, high[1], 1, high[0]), mode="replicate")
    x = x.reshape(*lead, *x.shape[-3:])
    return resample_regular(x, [Sampling(1 - offset, factor, o) for o in out], dtype)
