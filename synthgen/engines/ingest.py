"""ingest: real volumes as a synthgen dataset (``synthgen ingest``).

Each source volume is read (NIfTI with nibabel, NRRD and MetaImage with SimpleITK, labels as the
registration harness reads them), its intensities normalised and resampled onto the dataset's
grid (``synthgen.ingest.volume``). Without ``per_volume`` sample ``index`` is source ``index``,
cropped or padded to ``size`` about its centre, and the seed plays no part. With
``per_volume`` = K, samples ``K i .. K i + K - 1`` are K patches of ``size`` from source i,
resampled whole, at positions with enough foreground drawn from (seed, index)
(``synthgen.ingest.patches``). Either way a sample is a pure function of the source files, the
config and (seed, index), so the store's resume and byte-identity guarantees hold as for the
generating engines. Every source
file's SHA-256 is in the config and checked when the sample is made, so a source file changed
between a run and its resume is refused instead of mixed in.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import numpy as np
import torch

from synthgen.engines.base import Engine, FieldSpec
from synthgen.errors import SynthgenError


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """What an ingested dataset is made of and how.

    Attributes:
        sources: one ``synthgen.ingest.sources.SourceVolume.to_json()`` dict per sample.
        size: output shape, one side for a cube or (D, H, W).
        spacing: output voxel size in mm (isotropic).
        intensity: ``percentile:LO,HI``, ``ct:LO,HI`` or ``none`` (``synthgen.ingest.volume``).
        orientation: output axis codes (``RAS``, ``LPS``, ...) or ``none`` (the source's axes).
        label_dtype: ``uint8`` or ``uint16`` when the sources have labels (set by
            ``synthgen.ingest.run`` from the largest label), else None.
        label_names: for sources whose labels are folders of masks (TotalSegmentator), the
            mask names in label order: label i + 1 is ``label_names[i]``; else None.
        per_volume: 0 (one sample per source, cropped/padded to ``size``) or K >= 1 patches
            of ``size`` per source.
        min_foreground: with ``per_volume``, the foreground fraction a patch position should
            reach (the best of 100 draws otherwise).
    """

    sources: tuple[dict[str, Any], ...] = ()
    size: int | tuple[int, int, int] = 128
    spacing: float = 1.5
    intensity: str = "percentile:1,99"
    orientation: str = "RAS"
    label_dtype: str | None = None
    label_names: tuple[str, ...] | None = None
    per_volume: int = 0
    min_foreground: float = 0.7


class Ingest(Engine):
    """Real volumes on one grid; fields ``image`` (float16), ``labels`` where the sources have
    them, and ``affine`` (the sample's voxel -> RAS mm map, to put it back in its scanner space)."""

    name = "ingest"
    Config = IngestConfig

    def validate(self) -> None:
        c = self.config
        if not c.sources:
            raise SynthgenError("ingest needs at least one source volume")
        check_grid(c, with_labels={bool(s.get("labels")) for s in c.sources})
        if not (isinstance(c.per_volume, int) and c.per_volume >= 0):
            raise SynthgenError(f"ingest per_volume must be 0 (whole volumes) or a number of patches >= 1, got "
                                f"{c.per_volume!r}")
        if not (isinstance(c.min_foreground, (int, float)) and 0 <= c.min_foreground <= 1):
            raise SynthgenError(f"ingest min_foreground must be a fraction in [0, 1], got {c.min_foreground!r}")

    @property
    def num_samples(self) -> int:
        """Samples this config makes: one per source, or ``per_volume`` per source."""
        return len(self.config.sources) * max(1, self.config.per_volume)

    @property
    def shape(self) -> tuple[int, int, int]:
        size = self.config.size
        return (size,) * 3 if isinstance(size, int) else tuple(size)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (float(self.config.spacing),) * 3  # type: ignore[return-value]

    @property
    def schema(self) -> dict[str, FieldSpec]:
        schema = {"image": FieldSpec("float16", self.shape, "image", "the source image on the dataset's grid, "
                                     f"intensities {self.config.intensity}",
                                     overlay="labels" if self.config.label_dtype else None)}
        if self.config.label_dtype:
            schema["labels"] = FieldSpec(self.config.label_dtype, self.shape, "labels",
                                         "the source's label map on the dataset's grid (nearest)")
        schema["affine"] = FieldSpec("float64", (4, 4), "affine", "voxel (i, j, k) -> RAS mm of this sample")
        return schema

    def sample(self, seed: int, index: int, device: torch.device | str | None = None
               ) -> dict[str, torch.Tensor]:
        from synthgen.ingest.patches import choose_patch
        from synthgen.seeding import PATCH_STREAM, sample_generator

        c = self.config
        if not c.per_volume:
            image, labels, affine, _ = on_grid(c, index, self.shape)
        else:
            image, labels, affine, (mask, table) = on_grid(c, index // c.per_volume, None)
            start, _ = choose_patch(mask, self.shape, float(c.min_foreground),
                                    sample_generator(seed, index, PATCH_STREAM), table=table)
            box = tuple(slice(s, s + n) for s, n in zip(start, self.shape))
            image, labels = image[box], None if labels is None else labels[box]
            affine = affine @ translation(start)
        out = {"image": image.to(torch.float16)}
        if labels is not None:
            out["labels"] = labels.to(getattr(torch, str(c.label_dtype)))
        out["affine"] = torch.from_numpy(np.array(affine))  # a copy: the cached grid's stays intact
        return {name: value.to(device) for name, value in out.items()}


def check_grid(config: Any, with_labels: set[bool]) -> None:
    """Validate the output grid, intensity and label options shared by the ingest engines
    (``size``, ``spacing``, ``intensity``, ``orientation``, ``label_dtype``); ``with_labels``:
    whether each source has labels (all or none must)."""
    from synthgen.ingest.volume import check_orientation, parse_intensity

    c = config
    size = [c.size] * 3 if isinstance(c.size, int) else list(c.size)
    if len(size) != 3 or not all(isinstance(n, int) and 8 <= n <= 1024 for n in size):
        raise SynthgenError(f"ingest size must be one side or three sides of 8..1024 voxels, got {c.size!r}")
    if not (isinstance(c.spacing, (int, float)) and 0 < c.spacing <= 100):
        raise SynthgenError(f"ingest spacing must be a voxel size in mm in (0, 100], got {c.spacing!r}")
    parse_intensity(c.intensity)
    check_orientation(c.orientation)
    if len(with_labels) > 1:
        raise SynthgenError("ingest sources must all have labels or all have none")
    if with_labels == {True} and c.label_dtype not in ("uint8", "uint16"):
        raise SynthgenError(f"ingest label_dtype must be uint8 or uint16, got {c.label_dtype!r}")


def translation(offset: tuple[int, int, int]) -> np.ndarray:
    """(4, 4) voxel translation by ``offset``."""
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def on_grid(config: IngestConfig, source: int, shape: tuple[int, int, int] | None
            ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray, tuple[torch.Tensor, torch.Tensor] | None]:
    """Source volume ``source`` of an ingest ``config`` on its output grid: cropped/padded to
    ``shape``, or (None) the grid covering the whole volume, with its foreground. The last
    volume is cached, so the patches of one volume read and resample it once.

    Returns:
        ``(image, labels, affine, foreground)``: float32 (D, H, W); int64 (D, H, W) or None;
        (4, 4) voxel -> RAS mm; without ``shape`` the bool (D, H, W) foreground mask and its
        summed-volume table (``synthgen.ingest.patches``), else None.
    """
    key = (json.dumps(config.sources[source], sort_keys=True), config.spacing, config.orientation,
           config.intensity, bool(config.label_dtype), tuple(config.label_names or ()), shape)
    return _on_grid_cached(key)


@functools.lru_cache(maxsize=1)
def _on_grid_cached(key: tuple) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray,
                                         tuple[torch.Tensor, torch.Tensor] | None]:
    from registration.datasets.labels import read_label_map, read_mask_folder
    from registration.datasets.volumes import read_image
    from synthgen.ingest.patches import foreground_mask, summed_volume
    from synthgen.ingest.sources import check_unchanged
    from synthgen.ingest.volume import check_orientation, covering_shape, normalise, output_affine, resample

    source_json, spacing, orientation, intensity, with_labels, label_names, shape = key
    source = json.loads(source_json)
    where = f"volume {source['name']}"
    check_unchanged(where, {source[name]: source[f"{name}_sha256"] for name in ("image", "labels")
                            if source.get(name)})
    image, affine, _ = read_image(source["image"], where)
    if affine is None:
        raise SynthgenError(f"{where}: {source['image']} has no geometry (.npy/.npz); ingest NIfTI, NRRD "
                            f"or MetaImage files")
    orientation = check_orientation(orientation)
    grid = shape or covering_shape(affine, image.shape, float(spacing), orientation)
    target = output_affine(affine, image.shape, grid, float(spacing), orientation)
    out_image = resample(normalise(image, intensity, where), affine, target, grid, labels=False)
    out_labels = None
    if with_labels:
        labels = (read_mask_folder(source["labels"], label_names, where, image.shape) if label_names
                  else read_label_map(source["labels"], where, image.shape))
        out_labels = resample(labels, affine, target, grid, labels=True)
    if shape:
        return out_image, out_labels, target, None
    mask = foreground_mask(out_image)
    return out_image, out_labels, target, (mask, summed_volume(mask))
