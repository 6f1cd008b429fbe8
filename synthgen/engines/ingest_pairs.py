"""ingest-pairs: real registration pairs as a synthgen dataset (``synthgen ingest --pairs``).

Sample ``index`` is pair ``index`` of a pair file (the harness's CSV or a Learn2Reg
``dataset.json``), loaded exactly as the registration harness loads it
(``registration.datasets.load_pair``: the moving side brought onto the fixed grid by the pair's
``align`` option, one implementation of alignment), then both sides moved onto the dataset's
grid as single volumes are (``synthgen.ingest.volume``: each image normalised, the fixed grid
reoriented, resampled and cropped or padded about its centre). The moving side is therefore
interpolated twice (onto the fixed grid, then onto the dataset's). Every file's SHA-256 is in
the config and checked when the sample is made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from synthgen.engines.base import FieldSpec
from synthgen.engines.ingest import Ingest, check_grid
from synthgen.errors import SynthgenError


@dataclasses.dataclass(frozen=True)
class IngestPairsConfig:
    """What an ingested pair dataset is made of and how.

    Attributes:
        pairs: one ``{"spec": PairSpec.to_json(), "sha256": {column: digest}}`` per sample.
        size, spacing, intensity, orientation, label_dtype: as ``IngestConfig``.
    """

    pairs: tuple[dict[str, Any], ...] = ()
    size: int | tuple[int, int, int] = 128
    spacing: float = 1.5
    intensity: str = "percentile:1,99"
    orientation: str = "RAS"
    label_dtype: str | None = None


class IngestPairs(Ingest):
    """Real pairs on one grid; fields ``fixed``, ``moving`` (float16), ``fixed_labels``,
    ``moving_labels`` where the pairs have labels, and ``affine`` (the sample's voxel -> RAS mm
    map, the fixed image's scanner space)."""

    name = "ingest-pairs"
    Config = IngestPairsConfig

    def validate(self) -> None:
        c = self.config
        if not c.pairs:
            raise SynthgenError("ingest --pairs needs at least one pair")
        check_grid(c, with_labels={bool(p["spec"]["fixed_labels"]) for p in c.pairs})

    @property
    def num_samples(self) -> int:
        return len(self.config.pairs)

    @property
    def schema(self) -> dict[str, FieldSpec]:
        c = self.config
        overlay = {side: f"{side}_labels" if c.label_dtype else None for side in ("fixed", "moving")}
        schema = {side: FieldSpec("float16", self.shape, "image", f"the pair's {side} image on the dataset's grid, "
                                  f"intensities {c.intensity}", overlay=overlay[side])
                  for side in ("fixed", "moving")}
        if c.label_dtype:
            for side in ("fixed", "moving"):
                schema[f"{side}_labels"] = FieldSpec(c.label_dtype, self.shape, "labels",
                                                     f"the pair's {side} label map on the dataset's grid (nearest)")
        schema["affine"] = FieldSpec("float64", (4, 4), "affine", "voxel (i, j, k) -> RAS mm of this sample")
        return schema

    def sample(self, seed: int, index: int, device: torch.device | str | None = None
               ) -> dict[str, torch.Tensor]:
        from registration.datasets import PairSpec, load_pair
        from synthgen.ingest.sources import check_unchanged
        from synthgen.ingest.volume import check_orientation, normalise, output_affine, resample

        c = self.config
        entry = c.pairs[index]
        spec = PairSpec.from_json(entry["spec"])
        check_unchanged(spec.where, {entry["spec"][column]: digest for column, digest in entry["sha256"].items()})
        pair = load_pair(spec)
        if pair.affine is None:
            raise SynthgenError(f"{spec.where}: the fixed image has no geometry; give fixed_spacing in the pair file")
        grid = tuple(pair.fixed.shape)
        target = output_affine(pair.affine, grid, self.shape, float(c.spacing), check_orientation(c.orientation))
        out: dict[str, torch.Tensor] = {}
        for side in ("fixed", "moving"):
            image = normalise(getattr(pair, side).numpy(), c.intensity, f"{spec.where}: {side} image")
            out[side] = resample(image, pair.affine, target, self.shape, labels=False).to(torch.float16)
        if c.label_dtype:
            for side in ("fixed", "moving"):
                labels = getattr(pair, f"{side}_labels").numpy()
                out[f"{side}_labels"] = resample(labels, pair.affine, target, self.shape, labels=True).to(
                    getattr(torch, c.label_dtype))
        out["affine"] = torch.from_numpy(np.array(target))
        return {name: value.to(device) for name, value in out.items()}
