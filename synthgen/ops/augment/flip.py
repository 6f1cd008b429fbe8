"""Random axis flips, TorchIO ``RandomFlip(p=0.9, axes=(0, 1, 2))`` (anatomix loader), shared by
both views and the label map.

TorchIO semantics reproduced: with probability ``p`` the transform runs; it then flips each of
the listed spatial axes independently with ``flip_probability`` (0.5 by default), so each axis
is flipped with probability 0.45 and nothing is flipped with probability 0.1 + 0.9 / 8. Axes are
array axes 0, 1, 2 = (D, H, W) (TorchIO's integer axes index the data array, ignoring the
orientation). A flip is its own inverse; values are moved, never interpolated, so label maps and
any dtype are safe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from synthgen.ops.augment._common import as_batch, bernoulli, check_batch


@dataclasses.dataclass(frozen=True)
class FlipParams:
    """fire: (B,) bool; axes: (B, 3) bool, the axes flipped when the transform fires."""

    fire: torch.Tensor
    axes: torch.Tensor

    def flipped_axes(self, b: int) -> list[int]:
        """Spatial axes (0, 1, 2) flipped for sample ``b``."""
        if not bool(self.fire[b]):
            return []
        return [a for a in range(3) if bool(self.axes[b, a])]


def sample_params(generator: torch.Generator, batch_size: int = 1, *, p: float = 0.9,
                  axes: Sequence[int] = (0, 1, 2), flip_probability: float = 0.5) -> FlipParams:
    """Draw fire flags (B), then (B, 3) per-axis flips (axes outside ``axes`` are never flipped)."""
    fire = bernoulli(generator, p, (batch_size,))
    flips = bernoulli(generator, flip_probability, (batch_size, 3))
    allowed = torch.tensor([a in tuple(axes) for a in range(3)])
    return FlipParams(fire, flips & allowed)


def apply(volume: torch.Tensor, params: FlipParams) -> torch.Tensor:
    """Flip each sample of a (B, C, D, H, W) batch (or a (D, H, W) volume, B = 1) along its axes."""
    x, restore = as_batch(volume)
    check_batch(x, params.fire)
    samples = []
    changed = False
    for b in range(x.shape[0]):
        dims = [a + 1 for a in params.flipped_axes(b)]  # sample tensor is (C, D, H, W)
        samples.append(x[b].flip(dims) if dims else x[b])
        changed = changed or bool(dims)
    return restore(torch.stack(samples) if changed else x)
