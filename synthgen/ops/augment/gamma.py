"""Random gamma, TorchIO ``RandomGamma(p=0.5, log_gamma=(-0.4, 0.4))``, anatomix loader.

``gamma = exp(beta)``, beta ~ U(-0.4, 0.4); ``x' = sign(x) |x| ** gamma`` (TorchIO uses the signed
power when the image has negative values and ``x ** gamma`` otherwise; the two agree bitwise for
x >= 0, so the signed form is used unconditionally, without a data-dependent branch). Maps 0 to 0
and 1 to 1. TorchIO draws one gamma per channel; the views here are single-channel, and one
gamma per sample is drawn.
"""

from __future__ import annotations

import dataclasses

import torch

from synthgen.ops.augment._common import apply_where, as_batch, bernoulli, per_sample, to_range, uniform


@dataclasses.dataclass(frozen=True)
class GammaParams:
    """fire: (B,) bool; log_gamma: (B,) float64."""

    fire: torch.Tensor
    log_gamma: torch.Tensor

    @property
    def gamma(self) -> torch.Tensor:
        return self.log_gamma.exp()


def sample_params(generator: torch.Generator, batch_size: int = 1, *, p: float = 0.5,
                  log_gamma: float | tuple[float, float] = (-0.4, 0.4)) -> GammaParams:
    """Draw fire flags (B) then log-gammas (B) (a single x means U(-x, x))."""
    fire = bernoulli(generator, p, (batch_size,))
    low, high = to_range(log_gamma, 0.0)
    return GammaParams(fire, uniform(generator, low, high, (batch_size,)))


def signed_gamma(volume: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``sign(x) |x| ** gamma`` for (B, C, D, H, W) ``volume`` and (B,) ``gamma``."""
    return volume.abs().pow_(per_sample(gamma, volume)).mul_(volume.sign())


def apply(volume: torch.Tensor, params: GammaParams) -> torch.Tensor:
    """Gamma on the firing samples of a (B, C, D, H, W) batch or a (D, H, W) volume."""
    x, restore = as_batch(volume)
    return restore(apply_where(x, params.fire, lambda sub, idx: signed_gamma(sub, params.gamma[idx])))
