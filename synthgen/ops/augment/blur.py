"""Random Gaussian blur, TorchIO ``RandomBlur(p=0.33)`` (std U(0, 2) per axis), anatomix loader.

TorchIO calls ``scipy.ndimage.gaussian_filter(data, std / spacing)``: per axis a sampled
Gaussian ``exp(-x^2 / 2 sigma^2)`` normalised to sum 1, radius ``int(4 sigma + 0.5)``, mode
'reflect' (d c b a | a b c d), axes with sigma ~ 0 skipped. Reproduced on torch with the
shifted-sum separable filter (any device, batched with per-sample kernels); stds are in voxels
(the loader's images have 1 mm spacing).
"""

from __future__ import annotations

import dataclasses

import torch

from synthgen.ops.augment._common import (apply_where, as_batch, bernoulli, sampled_gaussian_kernel, separable_filter,
                                          stack_kernels, to_range, uniform)


@dataclasses.dataclass(frozen=True)
class BlurParams:
    """fire: (B,) bool; std: (B, 3) float64 voxels along (D, H, W)."""

    fire: torch.Tensor
    std: torch.Tensor


def sample_params(generator: torch.Generator, batch_size: int = 1, *, p: float = 0.33,
                  std: float | tuple[float, float] = (0.0, 2.0)) -> BlurParams:
    """Draw fire flags (B) then stds (B, 3) ~ U(std) (a single x means U(0, x))."""
    fire = bernoulli(generator, p, (batch_size,))
    low, high = to_range(std)
    return BlurParams(fire, uniform(generator, low, high, (batch_size, 3)))


def gaussian_blur(volume: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """scipy-style Gaussian blur of (B, C, D, H, W) ``volume`` with (B, 3) stds (voxels)."""
    kernels = [stack_kernels([sampled_gaussian_kernel(float(s)) for s in std[:, axis]]) for axis in range(3)]
    return separable_filter(volume, kernels, padding="symmetric")


def apply(volume: torch.Tensor, params: BlurParams) -> torch.Tensor:
    """Blur the firing samples of a (B, C, D, H, W) batch or a (D, H, W) volume."""
    x, restore = as_batch(volume)
    return restore(apply_where(x, params.fire, lambda sub, idx: gaussian_blur(sub, params.std[idx])))
