"""``synthgen ingest``: find the source volumes, check each one, fix the dataset's config, write
it like ``synthgen generate`` (Ray or local, shards with commit records, resumable)."""

from __future__ import annotations

import dataclasses
import os

from registration.datasets import PATH_COLUMNS, load_pair, read_pairs
from registration.datasets.labels import mask_names, read_label_map
from registration.datasets.volumes import header_geometry, read_image
from synthgen.engines.ingest import Ingest
from synthgen.engines.ingest_pairs import IngestPairs
from synthgen.errors import SynthgenError
from synthgen.ingest.sources import SourceVolume, find_sources, sha256_file
from synthgen.ingest.volume import check_orientation, covering_shape
from synthgen.ops.label_ensemble import label_dtype
from synthgen.runner.generate import GenerateReport, generate


@dataclasses.dataclass(frozen=True)
class IngestReport:
    """What an ingest wrote, and the volumes ``skip_bad`` left out (one line each, why)."""

    written: GenerateReport
    skipped: tuple[str, ...]

    def __str__(self) -> str:
        return str(self.written) + (f"; skipped {len(self.skipped)} bad volume(s)" if self.skipped else "")


def ingest(images: str, out: str, labels: str | None = None, size: int | tuple[int, int, int] = 128,
           spacing: float = 1.5, intensity: str = "percentile:1,99", orientation: str = "RAS",
           per_volume: int = 0, min_foreground: float = 0.7, seed: int = 0, skip_bad: bool = False,
           backend: str = "ray", workers: int | None = None, shard_size: int | None = None,
           overwrite: bool = False, progress: bool = True) -> IngestReport:
    """Ingest the volumes ``images`` (and ``labels``) into the dataset ``out``, or finish it.

    Every source is checked before anything is written: its image header, its label file
    against the image's grid (read whole), and with patches that the volume holds one. With
    ``skip_bad`` the images are also read whole, and a volume failing any check is left out
    (listed in the report) instead of stopping the ingest.

    Args:
        images, labels: see ``synthgen.ingest.sources.find_sources``.
        size, spacing, intensity, orientation, per_volume, min_foreground: the output grid,
            intensities and patches (``synthgen.engines.ingest.IngestConfig``).
        seed: the dataset seed (patch positions; whole volumes do not use it).
        skip_bad: leave out the volumes that fail their checks.
        backend, workers, shard_size, overwrite, progress: as ``synthgen.runner.generate``.

    Raises:
        SynthgenError: bad sources or options (before anything is written; with ``skip_bad``
            only when no volume is left), or a volume whose voxels cannot be read when the
            shard holding it is made (that shard is not committed; a rerun resumes).
    """
    sources = find_sources(images, labels)
    names = _mask_names(sources)
    orientation = check_orientation(orientation)
    probe = Ingest(sources=tuple(s.to_json() for s in sources), size=size, spacing=spacing, intensity=intensity,
                   orientation=orientation, per_volume=per_volume, min_foreground=min_foreground,
                   label_names=names, label_dtype="uint16" if sources[0].labels else None)
    kept, skipped, largest = [], [], len(names or ())
    for source in sources:
        try:
            largest = max(largest, _check(source, probe, full=skip_bad))
        except SynthgenError as err:
            if not skip_bad:
                raise
            skipped.append(str(err))
            continue
        kept.append(source)
    if not kept:
        raise SynthgenError(f"all {len(sources)} volumes failed their checks (first: {skipped[0]})")
    config = {**probe.config_dict(), "sources": tuple(s.to_json() for s in kept),
              "label_dtype": str(label_dtype(largest)).removeprefix("torch.") if sources[0].labels else None}
    engine = Ingest(**config)
    written = generate(engine, out, engine.num_samples, seed=seed, shard_size=shard_size, backend=backend,
                       workers=workers, overwrite=overwrite, progress=progress)
    return IngestReport(written, tuple(skipped))


def ingest_pairs(pairs: str, out: str, split: str = "train", size: int | tuple[int, int, int] = 128,
                 spacing: float = 1.5, intensity: str = "percentile:1,99", orientation: str = "RAS",
                 skip_bad: bool = False, backend: str = "ray", workers: int | None = None,
                 shard_size: int | None = None, overwrite: bool = False, progress: bool = True) -> IngestReport:
    """Ingest the registration pairs of ``pairs`` (a pairs CSV or a Learn2Reg ``dataset.json``,
    its ``split``, as ``registration.datasets.read_pairs``) into the dataset ``out``.

    Every pair is loaded whole before anything is written (a bad pair stops the ingest, or
    with ``skip_bad`` is left out and listed). Other arguments as ``ingest``.
    """
    specs = read_pairs(pairs, split=split)
    entries, skipped, largest, labelled = [], [], 0, None
    for spec in specs:
        try:
            pair = load_pair(spec)
        except SynthgenError as err:
            if not skip_bad:
                raise
            skipped.append(str(err))
            continue
        labelled = pair.fixed_labels is not None
        if labelled:
            largest = max(largest, int(pair.fixed_labels.max()), int(pair.moving_labels.max()))
        files = {column: str(getattr(spec, column)) for column in PATH_COLUMNS if getattr(spec, column)}
        entries.append({"spec": spec.to_json(), "sha256": {c: sha256_file(p) for c, p in files.items()}})
    if not entries:
        raise SynthgenError(f"all {len(specs)} pairs failed to load (first: {skipped[0]})")
    engine = IngestPairs(pairs=tuple(entries), size=size, spacing=spacing, intensity=intensity,
                         orientation=check_orientation(orientation),
                         label_dtype=str(label_dtype(largest)).removeprefix("torch.") if labelled else None)
    written = generate(engine, out, engine.num_samples, seed=0, shard_size=shard_size, backend=backend,
                       workers=workers, overwrite=overwrite, progress=progress)
    return IngestReport(written, tuple(skipped))


def _check(source: SourceVolume, engine: Ingest, full: bool) -> int:
    """Check one source for ``engine`` (``ingest``'s doc); returns its largest label (0
    without label files). Raises SynthgenError naming the volume and the file."""
    where = f"volume {source.name}"
    geometry = header_geometry(source.image, where)
    if full:
        read_image(source.image, where)
    if engine.config.per_volume and geometry is not None:
        spacing = float(engine.config.spacing)
        grid = covering_shape(geometry[1], geometry[0], spacing, engine.config.orientation)
        if any(g < p for g, p in zip(grid, engine.shape)):
            raise SynthgenError(f"{where}: {source.image} spans {grid} voxels at {spacing:g} mm, smaller than the "
                                f"{engine.shape} patches; give smaller --patches or a finer --spacing")
    if not source.labels or os.path.isdir(source.labels):
        return 0
    labels = read_label_map(source.labels, where, geometry[0] if geometry else None)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
        raise SynthgenError(f"{where}: {source.labels} holds labels outside 0..65535; renumber them")
    return int(labels.max(initial=0))


def _mask_names(sources: list[SourceVolume]) -> tuple[str, ...] | None:
    """For labels given as folders of masks: every mask name of every folder, sorted (label
    i + 1 is name i in every sample); None for label files."""
    folders = [s.labels for s in sources if s.labels and os.path.isdir(s.labels)]
    if not folders:
        return None
    return tuple(sorted({name for folder in folders for name in mask_names(folder)}))
