"""Building a template bank from a TotalSegmentator download, a folder of label maps, or both.

Streaming and parallel: one job per subject (``synthgen.templates.jobs``) in a pool of spawned
worker processes, each holding one subject in memory; a job writes its own part and returns its
record. This process commits records into the manifest (``synthgen.templates.manifest``) every
COMMIT_INTERVAL_S seconds and at the end, so the bank readers see only ever holds whole,
checked parts. A rerun skips subjects already committed; an interrupted build loses at most its
uncommitted subjects, whose leftover parts the next build deletes. One build at a time per bank.
A build that fails before committing anything removes the bank it created; one that fails later
keeps what it committed (a consistent bank a rerun completes).

Workers are spawned, not forked (safe beside torch, zarr and tqdm threads, and the default on
macOS and from Python 3.14): each starts a fresh interpreter (about a second, more if the calling
script imports torch at the top), and a calling script needs the usual
``if __name__ == "__main__":`` guard. ``workers=1`` runs in this process.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tqdm import tqdm

from synthgen.errors import SynthgenError
from synthgen.store.objects import ObjectStore, foreign_output_error
from synthgen.templates import labelmaps, totalsegmentator
from synthgen.templates.jobs import PartJob, run_job
from synthgen.templates.layout import PARTS_DIR
from synthgen.templates.manifest import Manifest, create_bank, read_manifest, write_manifest
from synthgen.templates.parts import PartRecord

COMMIT_INTERVAL_S = 2.0
SOURCE_KINDS = {"totalsegmentator": totalsegmentator.find_subjects, "label-maps": labelmaps.find_maps}
AXES = "array axes of the source files as nibabel reads them (i, j, k), not reoriented"
RESAMPLING = "crop to bounding box, linear interpolation to the spacing, threshold 0.5, crop again"


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """What a build did. ``str(report)`` is a one-paragraph summary for the CLI."""

    path: str
    source: str
    subjects_built: int
    subjects_skipped: int
    templates_added: int
    templates_total: int
    masks_empty: int
    masks_vanished: int
    seconds: float
    fingerprint: str

    def __str__(self) -> str:
        return (f"{self.path}: built {self.subjects_built} subjects ({self.subjects_skipped} already in the "
                f"bank were skipped), {self.templates_added} new templates, {self.templates_total} in all; "
                f"dropped {self.masks_empty} empty masks and {self.masks_vanished} that vanished when "
                f"resampled; {self.seconds:.1f} s; fingerprint {self.fingerprint[:12]}")


def build_from_totalsegmentator(src_dir: str, out: str, spacing: float | None = 1.5,
                                workers: int | None = None, progress: bool = True) -> BuildReport:
    """Build (or extend) the bank ``out`` from ``src_dir/<subject>/segmentations/*.nii.gz``.

    Per subject: masks are read with nibabel (any dtype holding 0/1), ``rib_*`` are merged into
    ``all_ribs`` and ``vertebrae_*`` into ``all_vertebrae``, empty masks are dropped, each
    template is cropped to its bounding box and resampled to ``spacing`` mm isotropic (see
    ``synthgen.templates.masks`` for the method and the axis convention).

    Args:
        src_dir: the TotalSegmentator download (the folder holding the subject folders).
        out: bank folder (or fsspec URL); created, or extended if it is a bank built with the
            same options (committed subjects are skipped).
        spacing: isotropic voxel size in mm, or None to keep each subject's native grid.
        workers: worker processes (default: CPU count); 1 builds in this process.
        progress: show a progress bar on stderr.

    Raises:
        SynthgenError: bad arguments or source files, with nothing half-written (see module doc).
    """
    return build_from_sources(out, {"totalsegmentator": src_dir}, spacing, workers, progress)


def build_from_label_maps(src_dir: str, out: str, spacing: float | None = None,
                          workers: int | None = None, progress: bool = True) -> BuildReport:
    """Build (or extend) the bank ``out`` from the multi-label maps ``src_dir/*.nii.gz|*.nii``:
    one template per non-zero label per map, named by the label value, subject = file stem.
    Arguments, cropping and resampling as ``build_from_totalsegmentator`` (default: native grid).
    """
    return build_from_sources(out, {"label-maps": src_dir}, spacing, workers, progress)


def build_from_sources(out: str, sources: dict[str, str], spacing: float | None = 1.5,
                       workers: int | None = None, progress: bool = True) -> BuildReport:
    """Build (or extend) one bank ``out`` from one or more sources, e.g. a TotalSegmentator
    download and a folder of label maps together (a combined bank of source
    "totalsegmentator+label-maps", its templates those of both, subjects in one sorted order).

    Args:
        out, spacing, workers, progress: see ``build_from_totalsegmentator``.
        sources: source kind ("totalsegmentator", "label-maps") -> its folder.

    Raises:
        SynthgenError: an unknown or missing source, a subject id found in two sources, or the
            errors of ``build_from_totalsegmentator``.
    """
    check_spacing(spacing)
    unknown = sorted(set(sources) - set(SOURCE_KINDS))
    if unknown or not sources:
        raise SynthgenError(f"template sources must be some of {', '.join(SOURCE_KINDS)}, got "
                            f"{', '.join(unknown) or 'none'}")
    kinds = [kind for kind in SOURCE_KINDS if kind in sources]
    subjects: dict[str, tuple[str, list[str]]] = {}
    for kind in kinds:
        for subject, files in SOURCE_KINDS[kind](str(sources[kind])).items():
            if subject in subjects:
                raise SynthgenError(f"subject {subject!r} is in both the {subjects[subject][0]} source and the "
                                    f"{kind} source; rename one of them, or build two banks")
            subjects[subject] = (kind, files)
    options = {kind: source_options(kind, spacing) for kind in kinds}
    return build_bank("+".join(kinds), subjects, str(out), spacing,
                      options[kinds[0]] if len(kinds) == 1 else options, workers, progress)


def source_options(kind: str, spacing: float | None) -> dict[str, Any]:
    """The build options of source ``kind`` that decide its templates' content."""
    common = {"spacing": spacing, "resampling": RESAMPLING if spacing else "none (native grid)"}
    if kind == "totalsegmentator":
        return {**common, "merge": {f"{prefix}*": name for prefix, name in totalsegmentator.MERGED},
                "drop_empty": True, "axes": AXES}
    return {**common, "templates": "one per non-zero label, named by its value", "axes": AXES}


def check_spacing(spacing: float | None) -> None:
    """Raise SynthgenError unless ``spacing`` is None or a finite number > 0."""
    if spacing is not None and not (math.isfinite(spacing) and spacing > 0):
        raise SynthgenError(f"spacing must be a number of mm > 0, got {spacing}; e.g. 1.5, or none to keep "
                            f"the native grid")


def build_bank(source: str, subjects: dict[str, tuple[str, list[str]]], out: str, spacing: float | None,
               options: dict[str, Any], workers: int | None, progress: bool) -> BuildReport:
    """Make the parts of the subjects not yet in bank ``out`` and commit them (module doc).

    Args:
        source: the bank's source, source kinds joined by "+".
        subjects: subject id -> (its source kind, a key of ``jobs.EXTRACTORS``; its source files).
        out, spacing, options, workers, progress: see ``build_from_totalsegmentator``.
    """
    if workers is not None and workers < 1:
        raise SynthgenError(f"workers must be at least 1, got {workers}")
    started = time.monotonic()
    objects, manifest, created = prepare_bank(out, source, spacing, options)
    remove_leftover_parts(objects, manifest)
    done = {r.subject for r in manifest.records}
    jobs = [PartJob(kind, out, s, tuple(files), spacing) for s, (kind, files) in subjects.items() if s not in done]
    added: list[PartRecord] = []
    pending: list[PartRecord] = []
    last_commit = time.monotonic()
    try:
        with tqdm(total=len(jobs), desc="templates", unit="subject", disable=not progress) as bar:
            for record in run_jobs(jobs, workers):
                added.append(record)
                pending.append(record)
                bar.update()
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    manifest = commit(objects, manifest, pending)
                    last_commit = time.monotonic()
    except BaseException:
        if pending:
            commit(objects, manifest, pending)
        elif created is not None and not manifest.records:
            discard_bank(objects, keep_folder=created == "folder")
        raise
    if pending:
        manifest = commit(objects, manifest, pending)
    return BuildReport(
        path=out, source=source, subjects_built=len(added), subjects_skipped=len(subjects) - len(jobs),
        templates_added=sum(len(r.names) for r in added),
        templates_total=sum(len(r.names) for r in manifest.records),
        masks_empty=sum(len(r.dropped.get("empty", ())) for r in added),
        masks_vanished=sum(len(r.dropped.get("vanished", ())) for r in added),
        seconds=time.monotonic() - started, fingerprint=manifest.fingerprint)


def prepare_bank(out: str, source: str, spacing: float | None,
                 options: dict[str, Any]) -> tuple[ObjectStore, Manifest, str | None]:
    """Open the bank at ``out`` for extending, or create an empty one.

    Returns:
        ``(objects, manifest, created)``: ``created`` is None for an existing bank, "folder"
        if the bank was created in an existing empty folder, "path" if the path was new.

    Raises:
        SynthgenError (nothing touched): ``out`` is a file, a non-empty folder that is not a
        template bank, or a bank of another source or other options.
    """
    objects = ObjectStore(out)
    if objects.existing_output("template bank"):
        manifest = read_manifest(objects)
        if manifest is None:
            raise foreign_output_error(out, "template bank")
        if manifest.source != source or manifest.options != options:
            raise SynthgenError(f"{out} is a {manifest.source} bank built with other options "
                                f"({_differences(manifest, source, options)}); rerun with its options to "
                                f"extend it, or choose another --out")
        created = None
    else:
        created = "folder" if objects.exists() else "path"
        manifest = Manifest(source=source, spacing=spacing, options=options, records=())
    create_bank(objects, manifest)
    return objects, manifest, created


def _differences(manifest: Manifest, source: str, options: dict[str, Any]) -> str:
    found = [f"source {manifest.source}, not {source}"] if manifest.source != source else []
    for key in sorted(set(manifest.options) | set(options)):
        if manifest.options.get(key) != options.get(key):
            found.append(f"{key} {manifest.options.get(key)}, not {options.get(key)}")
    return "; ".join(found)


def discard_bank(objects: ObjectStore, keep_folder: bool) -> None:
    """Remove a bank this build created and committed nothing to (keeping the folder itself if
    it existed before)."""
    if keep_folder:
        for name in objects.list_names(""):
            objects.fs.rm(objects.path(name), recursive=True)
    else:
        objects.remove_all()


def remove_leftover_parts(objects: ObjectStore, manifest: Manifest) -> None:
    """Delete parts that no committed record names (written by an interrupted build)."""
    committed = {r.part for r in manifest.records}
    for name in objects.list_names(PARTS_DIR):
        if name != "zarr.json" and name not in committed:
            objects.fs.rm(objects.path(f"{PARTS_DIR}/{name}"), recursive=True)


def commit(objects: ObjectStore, manifest: Manifest, pending: list[PartRecord]) -> Manifest:
    """Write ``manifest`` plus ``pending`` records atomically, clear ``pending``, return it."""
    manifest = manifest.with_records(pending)
    write_manifest(objects, manifest)
    pending.clear()
    return manifest


def run_jobs(jobs: list[PartJob], workers: int | None) -> Iterator[PartRecord]:
    """The records of ``jobs`` as they complete: in this process if one worker (or job) is
    enough, else in spawned processes (pending jobs are cancelled when one fails)."""
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        yield from (run_job(job) for job in jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool as err:
            raise SynthgenError("a template build worker process died (out of memory, or killed); rerun the "
                                "same command to resume, with fewer workers if memory is short") from err
        finally:
            for future in futures:
                future.cancel()
