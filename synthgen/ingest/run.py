"""``synthgen ingest``: find the source volumes, fix the dataset's config, write it like
``synthgen generate`` (Ray or local, shards with commit records, resumable)."""

from __future__ import annotations

from registration.datasets.labels import read_label_map
from registration.datasets.volumes import header_shape
from synthgen.engines.ingest import Ingest
from synthgen.errors import SynthgenError
from synthgen.ingest.sources import SourceVolume, find_sources
from synthgen.ops.label_ensemble import label_dtype
from synthgen.runner.generate import GenerateReport, generate


def ingest(images: str, out: str, labels: str | None = None, size: int | tuple[int, int, int] = 128,
           spacing: float = 1.5, intensity: str = "percentile:1,99", orientation: str = "RAS",
           backend: str = "ray", workers: int | None = None, shard_size: int | None = None,
           overwrite: bool = False, progress: bool = True) -> GenerateReport:
    """Ingest the volumes ``images`` (and ``labels``) into the dataset ``out``, or finish it.

    Args:
        images, labels: see ``synthgen.ingest.sources.find_sources``.
        size, spacing, intensity, orientation: the output grid and intensities
            (``synthgen.engines.ingest.IngestConfig``).
        backend, workers, shard_size, overwrite, progress: as ``synthgen.runner.generate``.

    Raises:
        SynthgenError: bad sources or options (before anything is written), or a volume that
            cannot be read (its shard is not committed; the others stay, a rerun resumes).
    """
    sources = find_sources(images, labels)
    engine = Ingest(sources=tuple(s.to_json() for s in sources), size=size, spacing=spacing,
                    intensity=intensity, orientation=orientation, label_dtype=_label_dtype(sources))
    return generate(engine, out, len(sources), seed=0, shard_size=shard_size, backend=backend,
                    workers=workers, overwrite=overwrite, progress=progress)


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
        labels = read_label_map(source.labels, where, header_shape(source.image, where))
        if labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
            raise SynthgenError(f"{where}: {source.labels} holds labels outside 0..65535; "
                                f"renumber them")
        largest = max(largest, int(labels.max(initial=0)))
    return str(label_dtype(largest)).removeprefix("torch.")
