"""Where label-ensemble templates land: spatial statistics of label maps by distance from the
volume centre, the figures issue 13 compares with the published anatomix code.

For each label map (the engine's own draws and rendering, ``LabelEnsemble.label_draws`` and
``render_labels``):

- per band of distance from the volume centre (0-16 / 16-32 / 32-48 / 48-64 / >64 voxels at
  128^3; scaled by ``size / 128``): the share of voxels carrying a template's label (not
  background, not the foreground mask's own label 1, not the envelope), and the share of voxels
  on a label boundary (a face neighbour inside the volume has another label in the map as
  stored);
- the distance of each surviving template label's centroid from the centre (128^3 voxels);
- how many template labels survive of those placed.

``--published`` measures label maps of the published step 1 instead
(:func:`benchmarks.published_anatomix.published_label_map`: corner transform, grid-wrap, corner
ROI, template k painted k) from the same bank's masks, at 128^3.

    python -m benchmarks.label_placement --n 300 --size 128
    python -m benchmarks.label_placement --n 100 --published
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from benchmarks.published_anatomix import published_label_map
from synthgen.engines import get_engine
from synthgen.engines.label_ensemble import DEFAULT_BANK_NAME, REFERENCE_SIZE, load_bank

BANDS = (0.0, 16.0, 32.0, 48.0, 64.0, float("inf"))
BAND_NAMES = ("0-16", "16-32", "32-48", "48-64", ">64")


def template_mask(labels: torch.Tensor, n_templates: int, masked: bool) -> torch.Tensor:
    """(D, H, W) bool: voxels holding a template's label (1..N, or 2..N+1 in a masked map)."""
    first = 2 if masked else 1
    return (labels >= first) & (labels < first + n_templates)


def boundary_mask(labels: torch.Tensor) -> torch.Tensor:
    """(D, H, W) bool: voxels with a face neighbour (inside the volume) of another label."""
    edge = torch.zeros_like(labels, dtype=torch.bool)
    for dim in range(3):
        n = labels.shape[dim]
        differs = labels.narrow(dim, 1, n - 1) != labels.narrow(dim, 0, n - 1)
        edge.narrow(dim, 1, n - 1).logical_or_(differs)
        edge.narrow(dim, 0, n - 1).logical_or_(differs)
    return edge


def distance_bands(size: int) -> torch.Tensor:
    """(size, size, size) int64: each voxel's band (index into BAND_NAMES) by its distance from
    the volume centre, in voxels at 128^3."""
    axis = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0) * (REFERENCE_SIZE / size)
    distance = torch.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)
    return torch.bucketize(distance, torch.tensor(BANDS[1:-1], dtype=torch.float64), right=True)


def map_statistics(labels: torch.Tensor, n_templates: int, masked: bool, band: torch.Tensor) -> dict[str, Any]:
    """One map's sums per band and its label centroids' distances (see the module docstring).

    Args:
        labels: (S, S, S) integer label map.
        n_templates: templates placed.
        masked: whether the foreground mask was applied (template labels start at 2).
        band: :func:`distance_bands` of the map's size.
    """
    labelled = template_mask(labels, n_templates, masked)
    edge = boundary_mask(labels)
    labelled_band = torch.bincount(band[labelled], minlength=len(BAND_NAMES)).double()
    edge_band = torch.bincount(band[edge], minlength=len(BAND_NAMES)).double()
    values = labels[labelled].long()
    flat = labelled.nonzero().double()
    sums = torch.zeros((int(values.max()) + 1 if values.numel() else 1, 3), dtype=torch.float64)
    sums.index_add_(0, values, flat)
    counts = torch.bincount(values, minlength=sums.shape[0]).double()
    present = (counts > 0).nonzero().squeeze(1)
    centroids = sums[present] / counts[present, None]
    size = labels.shape[0]
    offsets = (centroids - (size - 1) / 2.0) * (REFERENCE_SIZE / size)
    return {"labelled": labelled_band, "boundary": edge_band,
            "centroid_distances": offsets.norm(dim=1).tolist(), "surviving": int(present.numel()),
            "placed": n_templates}


def synthgen_maps(n: int, size: int, seed: int, templates: str | None) -> Iterator[tuple[torch.Tensor, int, bool]]:
    """Label maps ``0..n-1`` of the ``label-ensemble`` engine with their template count and mask
    flag."""
    engine = get_engine("label-ensemble", size=size, **({"templates": templates} if templates else {}))
    for index in range(n):
        ids, params = engine.label_draws(seed, index)
        yield engine.render_labels(ids, params), params.n_templates, params.foreground.masked


def published_maps(n: int, seed: int, templates: str | None) -> Iterator[tuple[torch.Tensor, int, bool]]:
    """``n`` label maps of the published step 1 at 128^3 from the same bank's masks (template 0 is
    background there, so ``n_templates - 1`` carry labels)."""
    bank = load_bank(templates or DEFAULT_BANK_NAME)
    masks = bank.masks(list(range(len(bank))))
    rng = np.random.RandomState(seed)
    for _ in range(n):
        draws: dict[str, Any] = {}
        labels = published_label_map(masks, rng, draws=draws)
        yield torch.from_numpy(labels), draws["n_templates"] - 1, draws["masked"]


def placement_statistics(n: int, size: int = REFERENCE_SIZE, seed: int = 0, templates: str | None = None,
                         published: bool = False) -> dict[str, Any]:
    """Statistics of ``n`` label maps at ``size`` (see the module docstring): per band the
    labelled and boundary shares (pooled over maps), the median centroid distance, and the mean
    surviving and placed template counts. ``published``: maps of the published step 1 (128^3)."""
    size = REFERENCE_SIZE if published else size
    maps = published_maps(n, seed, templates) if published else synthgen_maps(n, size, seed, templates)
    band = distance_bands(size)
    per_band = torch.bincount(band.flatten(), minlength=len(BAND_NAMES)).double()
    totals = {key: torch.zeros(len(BAND_NAMES), dtype=torch.float64) for key in ("voxels", "labelled", "boundary")}
    centroids: list[float] = []
    surviving, placed = [], []
    for labels, n_templates, masked in maps:
        stats = map_statistics(labels, n_templates, masked, band)
        totals["voxels"] += per_band
        for key in ("labelled", "boundary"):
            totals[key] += stats[key]
        centroids += stats["centroid_distances"]
        surviving.append(stats["surviving"])
        placed.append(stats["placed"])
    return {"size": size, "maps": n, "published": published,
            "labelled_share": dict(zip(BAND_NAMES, (totals["labelled"] / totals["voxels"]).tolist())),
            "boundary_share": dict(zip(BAND_NAMES, (totals["boundary"] / totals["voxels"]).tolist())),
            "median_centroid_distance": float(np.median(centroids)),
            "surviving_per_map": float(np.mean(surviving)), "placed_per_map": float(np.mean(placed))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="label maps (default 300)")
    parser.add_argument("--size", type=int, default=REFERENCE_SIZE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--templates", help="template bank (default: the engine's default bank)")
    parser.add_argument("--published", action="store_true",
                        help="the published step 1's label maps (128^3) from the same bank")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    figures = placement_statistics(args.n, args.size, args.seed, args.templates, args.published)
    line = " / ".join
    print(f"{'published step 1: ' if figures['published'] else ''}{figures['maps']} maps at {figures['size']}^3, bands {line(BAND_NAMES)} voxels from the centre (at 128^3)")
    print(f"labelled share: {line(f'{v:.2f}' for v in figures['labelled_share'].values())}")
    print(f"boundary share: {line(f'{v:.2f}' for v in figures['boundary_share'].values())}")
    print(f"median label centroid distance: {figures['median_centroid_distance']:.1f} voxels")
    print(f"template labels surviving per map: {figures['surviving_per_map']:.1f} of {figures['placed_per_map']:.1f} placed")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
