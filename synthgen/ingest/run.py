"""``synthgen ingest``: find the source volumes, fix the dataset's config, write it like
``synthgen generate`` (Ray or local, shards with commit records, resumable)."""

from __future__ import annotations

from registration.datasets.labels import read_label_map
from registration.datasets.volumes import header_geometry
from synthgen.engines.ingest import Ingest
from synthgen.errors import SynthgenError
from synthgen.ingest.sources import SourceVolume, find_sources
from synthgen.ingest.volume import check_orientation, covering_shape
from synthgen.ops.label_ensemble import label_dtype
from synthgen.runner.generate import GenerateReport, generate


def ingest(images: str, out: str, labels: str | None = None, size: int | tuple[int, int, int] = 128,
           spacing: float = 1.5, intensity: str = "percentile:1,99", orientation: str = "RAS",
           per_volume: int = 0, min_foreground: float = 0.7, seed: int = 0, backend: str = "ray",
           workers: int | None = None, shard_size: int | None = None, overwrite: bool = False,
           progress: bool = True) -> GenerateReport:
    """Ingest the volumes ``images`` (and ``labels``) into the dataset ``out``, or finish it.

    Args:
        images, labels: see ``synthgen.ingest.sources.find_sources``.
        size, spacing, intensity, orientation, per_volume, min_foreground: the output grid,
            intensities and patches (``synthgen.engines.ingest.IngestConfig``).
        seed: the dataset seed (patch positions; whole volumes do not use it).
        backend, workers, shard_size, overwrite, progress: as ``synthgen.runner.generate``.

    Raises:
        SynthgenError: bad sources or options (before anything is written), or a volume that
            cannot be read (its shard is not committed; the others stay, a rerun resumes).
    """
    sources = find_sources(images, labels)
    engine = Ingest(sources=tuple(s.to_json() for s in sources), size=size, spacing=spacing,
                    intensity=intensity, orientation=orientation, per_volume=per_volume,
                    min_foreground=min_foreground, label_dtype=_label_dtype(sources))
    if per_volume:
        _check_patches_fit(engine, sources)
    return generate(engine, out, engine.num_samples, seed=seed, shard_size=shard_size, backend=backend,
                    workers=workers, overwrite=overwrite, progress=progress)


def _check_patches_fit(engine: Ingest, sources: list[SourceVolume]) -> None:
    """Refuse a source whose whole-volume grid is smaller than the patches (headers only)."""
    spacing, orientation = float(engine.config.spacing), check_orientation(engine.config.orientation)
    for source in sources:
        where = f"volume {source.name}"
        geometry = header_geometry(source.image, where)
        if geometry is None:
            continue
        grid = covering_shape(geometry[1], geometry[0], spacing, orientation)
        if any(g < p for g, p in zip(grid, engine.shape)):
            raise SynthgenError(f"{where}: {source.image} spans {grid} voxels at {spacing:g} mm, smaller than the "
                                f"{engine.shape} patches; give smaller --patches or a finer --spacing")


def _label_dtype(sources: list[SourceVolume]) -> str | None:
    """uint8 or uint16 for the sources' largest label, None without labels. Reads each label
    file once and checks it against its image's header, so bad labels fail before anything is
    written."""
    if not sources[0].labels:
        return None
    largest = 0
    for source in sources:
        assert source.labels is not None
        where = f"volume {source.name}"
        geometry = header_geometry(source.image, where)
        labels = read_label_map(source.labels, where, geometry[0] if geometry else None)
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
            raise SynthgenError(f"{where}: {source.labels} holds labels outside 0..65535; "
                                f"renumber them")
        largest = max(largest, int(labels.max(initial=0)))
    return str(label_dtype(largest)).removeprefix("torch.")
