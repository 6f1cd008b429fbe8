"""ingest: real volumes as a synthgen dataset (``synthgen ingest``).

Sample ``index`` is source volume ``index`` of the config's list, read (NIfTI with nibabel,
NRRD and MetaImage with SimpleITK, labels as the registration harness reads them), its
intensities normalised and resampled onto the dataset's grid (``synthgen.ingest.volume``). The
seed plays no part: a sample is a pure function of the source files and the config, so the
store's resume and byte-identity guarantees hold as for the generating engines. Every source
file's SHA-256 is in the config and checked when the sample is made, so a source file changed
between a run and its resume is refused instead of mixed in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

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
    """

    sources: tuple[dict[str, Any], ...] = ()
    size: int | tuple[int, int, int] = 128
    spacing: float = 1.5
    intensity: str = "percentile:1,99"
    orientation: str = "RAS"
    label_dtype: str | None = None


class Ingest(Engine):
    """Real volumes on one grid; fields ``image`` (float16), ``labels`` where the sources have
    them, and ``affine`` (the sample's voxel -> RAS mm map, to put it back in its scanner space)."""

    name = "ingest"
    Config = IngestConfig

    def validate(self) -> None:
        from synthgen.ingest.volume import check_orientation, parse_intensity

        c = self.config
        if not c.sources:
            raise SynthgenError("ingest needs at least one source volume")
        size = [c.size] * 3 if isinstance(c.size, int) else list(c.size)
        if len(size) != 3 or not all(isinstance(n, int) and 8 <= n <= 1024 for n in size):
            raise SynthgenError(f"ingest size must be one side or three sides of 8..1024 voxels, got {c.size!r}")
        if not (isinstance(c.spacing, (int, float)) and 0 < c.spacing <= 100):
            raise SynthgenError(f"ingest spacing must be a voxel size in mm in (0, 100], got {c.spacing!r}")
        parse_intensity(c.intensity)
        check_orientation(c.orientation)
        with_labels = {bool(s.get("labels")) for s in c.sources}
        if len(with_labels) > 1:
            raise SynthgenError("ingest sources must all have labels or all have none")
        if with_labels == {True} and c.label_dtype not in ("uint8", "uint16"):
            raise SynthgenError(f"ingest label_dtype must be uint8 or uint16, got {c.label_dtype!r}")

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
        from registration.datasets.labels import read_label_map
        from registration.datasets.volumes import read_image
        from synthgen.ingest.sources import sha256_file
        from synthgen.ingest.volume import check_orientation, normalise, output_affine, resample

        source = self.config.sources[index]
        where = f"volume {source['name']}"
        for key in ("image", "labels"):
            if source.get(key) and sha256_file(source[key]) != source[f"{key}_sha256"]:
                raise SynthgenError(f"{where}: {source[key]} changed since this dataset was started (SHA-256 "
                                    f"differs); restore the file, or ingest into a new --out")
        image, affine, _ = read_image(source["image"], where)
        if affine is None:
            raise SynthgenError(f"{where}: {source['image']} has no geometry (.npy/.npz); ingest NIfTI, NRRD "
                                f"or MetaImage files")
        target = output_affine(affine, image.shape, self.shape, float(self.config.spacing),
                               check_orientation(self.config.orientation))
        out = {"image": resample(normalise(image, self.config.intensity, where), affine, target, self.shape,
                                 labels=False).to(torch.float16)}
        if self.config.label_dtype:
            labels = read_label_map(source["labels"], where, image.shape)
            dtype = getattr(torch, self.config.label_dtype)
            out["labels"] = resample(labels, affine, target, self.shape, labels=True).to(dtype)
        out["affine"] = torch.from_numpy(target)
        return {name: value.to(device) for name, value in out.items()}
