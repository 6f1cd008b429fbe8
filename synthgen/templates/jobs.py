"""One build job: read one subject's source files, make its templates, write its part.

Runs in a worker process (spawned, so it imports only numpy, scipy, nibabel and zarr, not
torch) with one subject in memory at a time.
"""

from __future__ import annotations

import dataclasses

from synthgen.templates import labelmaps, totalsegmentator
from synthgen.templates.parts import PartRecord, write_part

EXTRACTORS = {"totalsegmentator": totalsegmentator.subject_templates,
              "label-maps": lambda files, target: labelmaps.map_templates(files[0], target)}


@dataclasses.dataclass(frozen=True)
class PartJob:
    """Make the part of ``subject`` of ``bank`` from ``files`` (source kind ``source``),
    resampled to ``spacing`` mm (None: native grid)."""

    source: str
    bank: str
    subject: str
    files: tuple[str, ...]
    spacing: float | None


def run_job(job: PartJob) -> PartRecord:
    """Do ``job``; the returned record commits the part once the caller puts it in the manifest.
    Raises SynthgenError for bad source files (nothing is written then)."""
    templates, spacing, dropped = EXTRACTORS[job.source](job.files, job.spacing)
    return write_part(job.bank, job.subject, templates, spacing, dropped)
