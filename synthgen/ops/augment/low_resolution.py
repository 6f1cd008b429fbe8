"""Low-resolution simulation, MONAI ``RandSimulateLowResolution(prob=0.333,
downsample_mode="nearest-exact")`` (zoom U(0.5, 1), trilinear upsampling, align_corners=False).

Down to ``round(n * zoom)`` per axis (numpy rounding, at least 1) with ``F.interpolate``'s
"nearest-exact", back to n with "trilinear". This is exactly what MONAI runs, on torch and any
device; ``F.interpolate`` is elementwise per output voxel, hence thread-count independent.
(The fast integer-factor upsampler in ``synthgen.ops.interpolate`` does not apply: the zoom is
continuous.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from synthgen.ops.augment._common import apply_where, as_batch, bernoulli, uniform


@dataclasses.dataclass(frozen=True)
class LowResolutionParams:
    """fire: (B,) bool; zoom: (B,) float64 in (0, 1]."""

    fire: torch.Tensor
    zoom: torch.Tensor


def sample_params(generator: torch.Generator, batch_size: int = 1, *, p: float = 0.333,
                  zoom_range: tuple[float, float] = (0.5, 1.0)) -> LowResolutionParams:
    """Draw fire flags (B) then zoom (B) ~ U(zoom_range)."""
    fire = bernoulli(generator, p, (batch_size,))
    return LowResolutionParams(fire, uniform(generator, zoom_range[0], zoom_range[1], (batch_size,)))


def simulate_low_resolution(volume: torch.Tensor, zoom: float) -> torch.Tensor:
    """Nearest-exact down to ``round(n * zoom)``, trilinear back, for (B, C, D, H, W) ``volume``."""
    shape = tuple(volume.shape[2:])
    coarse = tuple(max(1, int(np.round(n * zoom))) for n in shape)
    x = volume.to(torch.float32)
    down = F.interpolate(x, size=coarse, mode="nearest-exact")
    return F.interpolate(down, size=shape, mode="trilinear", align_corners=False).to(volume.dtype)


def apply(volume: torch.Tensor, params: LowResolutionParams) -> torch.Tensor:
    """Low-resolution simulation on the firing samples of a (B, C, D, H, W) batch or a (D, H, W)
    volume (one interpolate pair per firing sample: the coarse shapes differ)."""
    x, restore = as_batch(volume)

    def run(sub: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.cat([simulate_low_resolution(sub[k:k + 1], float(params.zoom[i]))
                          for k, i in enumerate(idx.tolist())])

    return restore(apply_where(x, params.fire, run))
