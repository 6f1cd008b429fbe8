"""Decision 1 of DESIGN.md: every random draw of sample ``i`` comes from (dataset seed, i) only.

Every use of randomness has its own stream, listed here so that no two uses ever share one:

- sample streams, ``sample_generator(seed, index, stream)``: what an engine draws for one sample;
- named streams, ``named_generator(seed, stream, *key)``: other uses derived from a dataset or
  training seed (the online augmentation, a training run's weights and per-step draws), keyed by
  what they are a function of.

numpy's SeedSequence hashes its entropy as 32-bit words and treats fewer than 4 words as if
padded with zeros, so ``(seed, i)`` is sample ``i``'s stream 0, and any short tuple (even
``(seed, stream, 1, 0)``) can be some sample's stream. A named stream's entropy,
``(seed, NAMED_TAG, stream, len(key), *key)`` with a non-empty key, has at least 5 words and
more than any sample stream's ``(seed, index, stream)`` of the same seed (an index below 2**64
takes at most 2 words), so the two share a generator only by a 63-bit hash collision.
"""

from __future__ import annotations

import numpy as np
import torch

NAMED_TAG = 0x4E414D45  # "NAME": the word that makes a named stream's entropy longer than a sample's
LABEL_STREAM = 0  # sample stream: an engine's label map (random-shapes draws everything from it)
VIEW_STREAMS = (1, 2)  # sample streams: label-ensemble's appearance of view 1 and view 2
AUGMENT_STREAM = 3  # named stream: the online augmentation, keyed (epoch, *batch indices)
BUILD_STREAM = 4  # named stream: a training run's initial weights, keyed (0,)
GLOBAL_STREAM = 5  # named stream: a rank's global RNGs (torch, numpy, random), keyed (rank[, step])
STEP_STREAM = 6  # named stream: a recipe's draws in one training step, keyed (step, rank)
VALIDATION_STREAM = 7  # named stream: a recipe's draws in validation batch i, keyed (i, rank)
PATCH_STREAM = 8  # sample stream: ingest's patch position in its volume
MIX_STREAM = 9  # named stream: a mixed stream's interleaving of its sources, keyed (epoch,)
MIX_SOURCE_STREAM = 10  # named stream: a mixed source's crops, keyed (k,), and its r-th order, keyed (k, r)
PAIR_STREAM = 11  # named stream: a pair stream's partner permutation, keyed (epoch,)


def seed_from(*entropy: int) -> int:
    """A 63-bit integer hashed from non-negative integers by numpy's SeedSequence: neighbouring
    inputs give statistically independent streams (unlike ``seed + index``)."""
    state = np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


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


def named_seed(seed: int, stream: int, *key: int) -> int:
    """The seed of named stream ``stream`` (one of this module's ``*_STREAM`` constants other
    than the sample streams) of ``seed``, for ``key``: a pure function of
    ``(seed, stream, key)`` that never equals a sample stream's seed (see the module docstring).

    Raises:
        ValueError: an empty ``key`` or a negative number.
    """
    if not key:
        raise ValueError("a named stream needs a key (at least one integer)")
    if min(seed, stream, *key) < 0:
        raise ValueError(f"seed, stream and key must be non-negative, got {seed}, {stream}, {key}")
    return seed_from(seed, NAMED_TAG, stream, len(key), *key)


def named_generator(seed: int, stream: int, *key: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`named_seed` ``(seed, stream, *key)``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(named_seed(seed, stream, *key))
    return generator
