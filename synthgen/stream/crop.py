"""Random crops: one box per sample, a pure function of (seed, epoch, sample index)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def crop_start(shape: Sequence[int], crop: Sequence[int], seed: int, epoch: int, index: int) -> np.ndarray:
    """(3,) int64 corner of a uniformly placed ``crop`` box inside a volume of ``shape``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index), 0xC209]))
    return np.array([rng.integers(0, n - c + 1) for n, c in zip(shape, crop)], dtype=np.int64)


def apply_crop(volume: np.ndarray, start: Sequence[int], crop: Sequence[int]) -> np.ndarray:
    """Crop the last three axes of ``volume`` (any leading axes, e.g. channels, are kept)."""
    d, h, w = (int(s) for s in start)
    cd, ch, cw = (int(c) for c in crop)
    return volume[..., d:d + cd, h:h + ch, w:w + cw]
