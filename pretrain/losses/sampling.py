"""Voxel locations for spatial contrastive losses: drawn once per sample and layer, shared by
the views, and the label at each location on the layer's grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

DENSE_FRACTION = 8
"""Draws of more than 1/8 of a grid rank random keys instead of redrawing repeats."""


def sample_locations(batch: int, grid: Sequence[int], count: int, generator: torch.Generator) -> torch.Tensor:
    """``min(count, prod(grid))`` distinct flat voxel indices of ``grid`` per sample, a uniformly
    random subset, drawn from ``generator`` (on its device).

    Sparse draws (the usual case: 512 of 128^3) take ``count`` uniform indices and redraw
    repeats until all are distinct (O(count), cheap on a CPU generator); dense draws rank random
    keys of every voxel.

    Returns:
        (batch, count) int64 on ``generator.device``.
    """
    size = math.prod(grid)
    count = min(count, size)
    device = generator.device
    if count * DENSE_FRACTION > size:
        keys = torch.rand((batch, size), generator=generator, device=device)
        return keys.topk(count, dim=1, sorted=False).indices
    picks = torch.randint(size, (batch, count), generator=generator, device=device)
    while True:
        ordered, order = picks.sort(dim=1)
        repeats = torch.zeros_like(picks, dtype=torch.bool)
        repeats.scatter_(1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
        redraws = int(repeats.sum())
        if not redraws:
            return picks
        picks[repeats] = torch.randint(size, (redraws,), generator=generator, device=device)


def gather_locations(features: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """The feature vectors of each view at its sample's locations.

    Args:
        features: (V * B, C, *grid), V views of a batch of B stacked view-major (all samples of
            view 1, then of view 2, ...).
        locations: (B, K) int64 flat indices into ``grid``, shared by the views.

    Returns:
        (V, B, K, C), the dtype of ``features``.
    """
    batch, count = locations.shape
    channels = features.shape[1]
    flat = features.reshape(-1, batch, channels, math.prod(features.shape[2:]))
    index = locations.to(features.device)[None, :, None, :].expand(flat.shape[0], -1, channels, -1)
    return flat.gather(3, index).permute(0, 1, 3, 2)


def labels_at(labels: torch.Tensor, grid: Sequence[int], locations: torch.Tensor) -> torch.Tensor:
    """The labels at ``locations`` of ``grid``, from the label map nearest-resized to ``grid``
    (integer factors: voxel ``i`` of the grid takes label ``i * factor``, as
    ``F.interpolate(mode="nearest")``).

    Args:
        labels: (B, 1, *S) integer label map, each of S an integer multiple of ``grid``.
        grid: the layer's spatial size.
        locations: (B, K) int64 flat indices into ``grid``.

    Returns:
        (B, K), the dtype of ``labels``.
    """
    spatial = labels.shape[2:]
    if len(spatial) != len(grid) or any(s % g for s, g in zip(spatial, grid)):
        raise ValueError(f"label map size {tuple(spatial)} is not an integer multiple of the grid {tuple(grid)}")
    steps = tuple(slice(None, None, s // g) for s, g in zip(spatial, grid))
    resized = labels[(slice(None), 0, *steps)].reshape(labels.shape[0], -1)
    return resized.gather(1, locations.to(labels.device))
