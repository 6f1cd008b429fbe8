"""Percentile normalisation of the anatomix loader (``data_utils.normalize_img``, percentile 99.99,
``zero_centered=False``): ``(x - min) / (p - min)`` per sample, left unchanged when p <= min.

As published, values above the percentile are not clipped (they end slightly above 1). The
percentile is numpy's default "linear" one: position ``q / 100 * (n - 1)`` in the sorted values,
interpolated between its two neighbours. Only the top ``n - floor(position)`` values are needed
(211 of 128^3 at 99.99 %), found exactly with ``topk``; on the CPU a block-maximum prefilter
first keeps only values >= the k-th largest block maximum (which bounds the k-th largest value
from below), ~3 ms instead of ~17 ms for a ``topk`` over 2M values.
"""

from __future__ import annotations

import math

import torch

from synthgen.ops.augment._common import as_batch, sample_min

BLOCK = 1024


def _top_values(flat: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest values of a 1-D tensor, descending (exact)."""
    n = flat.numel()
    if flat.is_cuda or n < 4 * k * BLOCK:
        return flat.topk(k, sorted=True).values
    full = n // BLOCK * BLOCK
    block_max = flat[:full].view(-1, BLOCK).amax(1)
    if full < n:
        block_max = torch.cat([block_max, flat[full:].amax().view(1)])
    bound = block_max.topk(k, sorted=True).values[-1]
    candidates = flat[flat >= bound]
    return candidates.topk(k, sorted=True).values


def upper_percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """numpy-style linear percentile ``q`` (>= 50) of each sample of (B, ...) ``x``.

    Returns:
        (B,) tensor of ``x``'s dtype and device.
    """
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    position = q / 100.0 * (n - 1)
    lower = math.floor(position)
    fraction = position - lower
    k = n - lower  # values at sorted indices >= lower
    out = []
    for row in flat:
        top = _top_values(row, k)
        value = top[k - 1]
        if k >= 2 and fraction > 0:
            value = value + (top[k - 2] - value) * fraction
        out.append(value)
    return torch.stack(out)


def percentile_normalize(volume: torch.Tensor, percentile: float = 99.99) -> torch.Tensor:
    """Normalise each sample of a (B, C, D, H, W) batch (or a (D, H, W) volume) by its minimum
    and ``percentile``; returns float32."""
    x, restore = as_batch(volume.to(torch.float32))
    low = sample_min(x)
    high = upper_percentile(x, percentile).view_as(low)
    span = high - low
    keep = span > 0  # p <= min: left unchanged, via low = 0 and span = 1 (exact)
    low = torch.where(keep, low, torch.zeros_like(low))
    span = torch.where(keep, span, torch.ones_like(span))
    return restore(torch.sub(x, low).div_(span))
