"""Additive Gaussian noise, TorchIO ``RandomNoise(p=0.33)`` (mean 0, std U(0, 0.25)), anatomix loader.

The noise field is not stored in the parameters (it is volume-sized): the parameters carry a
seed per sample, drawn on the CPU, and :func:`apply` draws ``N(0, 1)`` on the volume's device
from a generator of that device seeded with it. The same parameters therefore give the same
noise on the same kind of device (and bitwise on the CPU whatever the thread count), but CPU and
CUDA noise differ (different generators) -- acceptable for an online augmentation. Each sample
has its own seed, so its noise does not depend on the rest of the batch.
"""

from __future__ import annotations

import dataclasses

import torch

from synthgen.ops.augment._common import apply_where, as_batch, bernoulli, seeds, to_range, uniform


@dataclasses.dataclass(frozen=True)
class NoiseParams:
    """fire: (B,) bool; mean, std: (B,) float64; seed: (B,) int64."""

    fire: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    seed: torch.Tensor


def sample_params(generator: torch.Generator, batch_size: int = 1, *, p: float = 0.33,
                  mean: float | tuple[float, float] = 0.0,
                  std: float | tuple[float, float] = (0.0, 0.25)) -> NoiseParams:
    """Draw fire (B), mean (B), std (B) and seed (B), in that order."""
    fire = bernoulli(generator, p, (batch_size,))
    m_low, m_high = to_range(mean, 0.0)
    s_low, s_high = to_range(std)
    return NoiseParams(fire, uniform(generator, m_low, m_high, (batch_size,)),
                       uniform(generator, s_low, s_high, (batch_size,)), seeds(generator, (batch_size,)))


def add_noise(volume: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """``volume + mean + std * N(0, 1)`` per sample of (B, C, D, H, W) ``volume``."""
    out = []
    for b in range(volume.shape[0]):
        generator = torch.Generator(device=volume.device)
        generator.manual_seed(int(seed[b]))
        noise = torch.randn(volume.shape[1:], generator=generator, device=volume.device, dtype=volume.dtype)
        out.append(noise.mul_(float(std[b])).add_(float(mean[b])).add_(volume[b]))
    return torch.stack(out)


def apply(volume: torch.Tensor, params: NoiseParams) -> torch.Tensor:
    """Noise on the firing samples of a (B, C, D, H, W) batch or a (D, H, W) volume."""
    x, restore = as_batch(volume)
    return restore(apply_where(x, params.fire, lambda sub, idx: add_noise(
        sub, params.mean[idx], params.std[idx], params.seed[idx])))
