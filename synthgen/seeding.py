"""Decision 1 of DESIGN.md: every random draw of sample ``i`` comes from (dataset seed, i) only."""

from __future__ import annotations

import numpy as np
import torch


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit integer derived from ``(seed, index)`` only, through numpy's SeedSequence hashing.

    Neighbouring indices give statistically independent streams (unlike ``seed + index``).
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def sample_generator(seed: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for sample ``index`` of a dataset with ``seed``.

    Engines draw every random number on the CPU from this generator and move the (small) draws
    to their device, so the random numbers are identical on CPU and GPU workers.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(sample_seed(seed, index))
    return generator
