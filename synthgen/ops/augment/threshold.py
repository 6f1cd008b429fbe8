"""Clip negative intensities (MONAI ``ThresholdIntensity(threshold=0, above=True, cval=0)``).

MONAI keeps ``x > threshold`` and writes ``cval`` elsewhere; with threshold = cval = 0 that is
``clamp(x, min=0)``. Deterministic, elementwise, any shape and device.
"""

from __future__ import annotations

import torch


def threshold_intensity(volume: torch.Tensor, threshold: float = 0.0, cval: float = 0.0) -> torch.Tensor:
    """Keep values above ``threshold``; replace the rest by ``cval`` (any shape)."""
    if threshold == 0.0 and cval == 0.0:
        return volume.clamp(min=0.0)
    return torch.where(volume > threshold, volume, torch.full_like(volume, cval))


apply = threshold_intensity
