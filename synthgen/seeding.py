"""Decision 1 of DESIGN.md: every random draw of sample ``i`` comes from (dataset seed, i) only."""

from __future__ import annotations

import numpy as np
import torch


def seed_from(*entropy: int) -> int:
    """A 63-bit integer hashed from non-negative integers by numpy's SeedSequence: neighbouring
    inputs give statistically independent streams (unlike ``seed + index``)."""
    state = np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def generator_from(*entropy: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`seed_from` ``(*entropy)``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed_from(*entropy))
    return generator


def sample_seed(seed: int, index: int, stream: int = 0) -> int:
    """The seed of sample ``index`` (and one independent ``stream`` of it) of a dataset with
    ``seed``: a pure function of ``(seed, index, stream)``.

    ``stream`` separates independent parts of one sample (e.g. label map and appearance), so
    one part can be re-drawn without drawing the other; stream 0 is ``(seed, index)`` itself.
    """
    if seed < 0 or index < 0 or stream < 0:
        raise ValueError(f"seed, index and stream must be non-negative, got {seed}, {index}, {stream}")
    return seed_from(seed, index, *([stream] if stream else []))


def sample_generator(seed: int, index: int, stream: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` for sample ``index`` of a dataset with ``seed`` (and one
    independent ``stream`` of that sample, see :func:`sample_seed`).

    Engines draw every random number on the CPU from this generator and move the (small) draws
    to their device, so the random numbers are identical on CPU and GPU workers.
    """
    generator = torch.Generator(device="cpu")
    generator.manual_seed(sample_seed(seed, index, stream))
    return generator
