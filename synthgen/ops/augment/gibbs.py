"""Gibbs ringing, MONAI ``RandGibbsNoise(prob=0.5, alpha=(0, 0.333))``.

MONAI: ``k = fftshift(fftn(x))``, zero every coefficient whose distance from the shifted grid's
centre ``(n - 1) / 2`` exceeds ``r = (1 - alpha) * max(shape) * sqrt(2) / 2``, return
``Re(ifftn(ifftshift(k)))``. (For even n the centre (n - 1) / 2 sits half a bin off the zero
frequency, so the mask is not symmetric under f -> -f; taking the real part is what makes the
output real.) Note that alpha = 0 is not the identity: the k-space corners beyond
``max(shape) / sqrt(2)`` are always cut.

Own kernel, same result at half the cost: for a real image ``Re(ifftn(M k)) = ifftn(M_s k)`` with
the symmetrised mask ``M_s(f) = (M(f) + M(-f)) / 2`` (values 0, 1/2, 1), which is Hermitian,
so one ``rfftn`` / ``irfftn`` pair on the half spectrum does it (~20 ms at 128^3, one thread).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from synthgen.ops.augment._common import apply_where, as_batch, bernoulli, uniform


@dataclasses.dataclass(frozen=True)
class GibbsParams:
    """fire: (B,) bool; alpha: (B,) float64 in [0, 1]."""

    fire: torch.Tensor
    alpha: torch.Tensor


def sample_params(generator: torch.Generator, batch_size: int = 1, *, p: float = 0.5,
                  alpha_range: tuple[float, float] = (0.0, 0.333)) -> GibbsParams:
    """Draw fire flags (B) then alpha (B) ~ U(alpha_range)."""
    fire = bernoulli(generator, p, (batch_size,))
    return GibbsParams(fire, uniform(generator, alpha_range[0], alpha_range[1], (batch_size,)))


@functools.lru_cache(maxsize=4)
def _distances(shape: tuple[int, int, int], sign: int, device: torch.device) -> torch.Tensor:
    """Distance from the shifted grid's centre of frequency ``sign * f`` for every f of the
    ``rfftn`` half grid, float64 (D, H, W // 2 + 1); cached per shape and device (8 MB at 128^3)."""
    counts = (shape[0], shape[1], shape[2] // 2 + 1)
    terms = []
    for axis, n in enumerate(shape):
        f = torch.arange(counts[axis], dtype=torch.int64)
        shifted = (sign * f + n // 2) % n  # index of frequency sign*f after fftshift
        terms.append(((shifted.to(torch.float64) - (n - 1) / 2.0) ** 2).to(device))
    d2 = terms[0].view(-1, 1, 1) + terms[1].view(1, -1, 1) + terms[2].view(1, 1, -1)
    return d2.sqrt_()  # compared as MONAI does: sqrt(sum of squares) <= r


def symmetric_mask(shape: tuple[int, int, int], alpha: torch.Tensor,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``(M(f) + M(-f)) / 2`` on the ``rfftn`` half grid, for each alpha.

    Returns:
        (B, 1, D, H, W // 2 + 1) float32 tensor.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    radius = (1.0 - alpha.to(torch.float64).cpu()) * max(shape) * math.sqrt(2.0) / 2.0
    out = None
    for sign in (1, -1):
        dist = _distances(tuple(shape), sign, device)
        inside = torch.stack([dist <= float(r) for r in radius]).to(torch.float32)
        out = inside if out is None else out.add_(inside)
    return out.mul_(0.5).unsqueeze(1)


def gibbs(volume: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Gibbs ringing on (B, C, D, H, W) ``volume`` with (B,) alpha."""
    shape = tuple(volume.shape[2:])
    spectrum = torch.fft.rfftn(volume.to(torch.float32), dim=(-3, -2, -1))
    spectrum.mul_(symmetric_mask(shape, alpha, volume.device))
    return torch.fft.irfftn(spectrum, s=shape, dim=(-3, -2, -1)).to(volume.dtype)


def apply(volume: torch.Tensor, params: GibbsParams) -> torch.Tensor:
    """Gibbs ringing on the firing samples of a (B, C, D, H, W) batch or a (D, H, W) volume."""
    x, restore = as_batch(volume)
    return restore(apply_where(x, params.fire, lambda sub, idx: gibbs(sub, params.alpha[idx])))
