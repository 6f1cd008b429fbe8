"""Gamma contrast adjustment, MONAI ``RandAdjustContrast(prob=0.5, gamma=(0.5, 2))``.

``x' = ((x - min) / range) ** gamma * range + min`` per sample (min and range over the sample's
channels and voxels), gamma ~ U(0.5, 2). Deliberate deviation: MONAI divides by
``range + 1e-7``, so its maximum maps to slightly below the maximum; here the division is exact
(range > 0), so a [0, 1] image keeps 0 -> 0 and 1 -> 1. A constant sample is returned
unchanged (MONAI returns ``0 ** gamma * 0 + min``, the same). Elementwise and exact min/max.
"""

from __future__ import annotations

import dataclasses

import torch

from synthgen.ops.augment._common import apply_where, as_batch, bernoulli, per_sample, sample_max, sample_min, uniform


@dataclasses.dataclass(frozen=True)
class ContrastParams:
    """fire: (B,) bool; gamma: (B,) float64."""

    fire: torch.Tensor
    gamma: torch.Tensor


def sample_params(generator: torch.Generator, batch_size: int = 1, *, p: float = 0.5,
                  gamma_range: tuple[float, float] = (0.5, 2.0)) -> ContrastParams:
    """Draw fire flags (B) then gamma (B) ~ U(gamma_range)."""
    fire = bernoulli(generator, p, (batch_size,))
    return ContrastParams(fire, uniform(generator, gamma_range[0], gamma_range[1], (batch_size,)))


def adjust_contrast(volume: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Min-max-relative gamma for (B, C, D, H, W) ``volume`` and (B,) ``gamma``."""
    low, high = sample_min(volume), sample_max(volume)
    span = high - low
    safe = torch.where(span > 0, span, torch.ones_like(span))
    # a constant sample gives (0 / 1) ** gamma * 0 + low = low, i.e. itself, without a mask
    return torch.sub(volume, low).div_(safe).pow_(per_sample(gamma, volume)).mul_(span).add_(low)


def apply(volume: torch.Tensor, params: ContrastParams) -> torch.Tensor:
    """Contrast on the firing samples of a (B, C, D, H, W) batch or a (D, H, W) volume."""
    x, restore = as_batch(volume)
    return restore(apply_where(x, params.fire, lambda sub, idx: adjust_contrast(sub, params.gamma[idx])))
