"""Min-max intensity scaling to [0, 1] (MONAI ``ScaleIntensity()``, ``channel_wise=False``).

Deterministic (no parameters). Per sample: ``(x - min) / (max - min)``; a constant sample
becomes 0, as MONAI's ``rescale_array`` returns ``x * minv`` then. min and max are exact, so
the result is bitwise independent of the thread count, and the output's min is exactly 0 and
its max exactly 1 (x == max gives (max - min) / (max - min) = 1).
"""

from __future__ import annotations

import torch

from synthgen.ops.augment._common import as_batch, sample_max, sample_min


def scale_intensity(volume: torch.Tensor) -> torch.Tensor:
    """Min-max scale each sample to [0, 1].

    Args:
        volume: (D, H, W), (C, D, H, W) or (B, C, D, H, W) float tensor; statistics are per
            sample (over its channels and voxels).

    Returns:
        Tensor of the same shape, dtype and device.
    """
    x, restore = as_batch(volume)
    low, high = sample_min(x), sample_max(x)
    span = high - low
    # constant sample: x - low is exactly 0 and the divisor 1, so it maps to 0 without a mask
    out = torch.sub(x, low).div_(torch.where(span > 0, span, torch.ones_like(span)))
    return restore(out)


apply = scale_intensity
