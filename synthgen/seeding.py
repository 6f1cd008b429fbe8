"""Decision 1 of DESIGN.md: every random draw of sample ``i`` comes from (dataset seed, i) only."""

from __future__ import annotations

import numpy as np
import torch


def sample_seed(seed: int, index: int, stream: int = 0) -> int:
    """A 63-bit integer derived from ``(seed, index, stream)`` only, through numpy's
    SeedSequence hashing.

    Neighbouring indices give statistically independent streams (unlike ``seed + index``).
    ``stream`` separates independent parts of one sample (e.g. label map and appearance), so
    one part can be re-drawn without drawing the other; stream 0 is ``(seed, index)`` itself.
    """
    if seed < 0 or index < 0 or stream < 0:
        raise ValueError(f"seed, index and stream must be non-negative, got {seed}, {index}, {stream}")
    entropy = [int(seed), int(index)] + ([int(stream)] if stream else [])
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def sample_generator(seed: int, index: int, stream: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` for sample ``index`` of a dataset with ``seed`` (and one
    independent ``stream`` of that sample, see :func:`sample_seed`).

    Engines draw every random number on the CPU from this generator and move the (small) draws
    to their device, so the random numbers are identical on CPU and GPU workers.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(sample_seed(seed, index, stream))
    return generator
