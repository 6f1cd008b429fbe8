"""Finding the volumes to ingest, with optional labels: a folder, a glob or a CSV of images, a
TotalSegmentator download (``sNNNN/ct.nii.gz`` or ``mr.nii.gz`` with ``sNNNN/segmentations/``,
whose masks become one label map), or a Learn2Reg ``dataset.json`` (its ``training`` images and
labels).

Every source file is recorded with its absolute path and SHA-256 (a folder of masks: the
SHA-256 of its files' names and digests), so a dataset says exactly what it was made from and a
resumed ingest refuses source files that changed meanwhile.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import json
import os
from typing import Any

from registration.datasets.volumes import VOLUME_SUFFIXES
from synthgen.errors import SynthgenError, first_line

CSV_COLUMNS = ("image", "labels", "name")
HASH_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class SourceVolume:
    """One volume to ingest.

    Attributes:
        name: unique name (file stem, or the CSV's name column).
        image: absolute path of the image file.
        labels: absolute path of its label file on the same grid, or of its folder of masks
            (TotalSegmentator ``segmentations/``), or None.
        image_sha256, labels_sha256: SHA-256 hex digests of the files ("" without labels).
    """

    name: str
    image: str
    labels: str | None
    image_sha256: str
    labels_sha256: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def volume_stem(path: str) -> str:
    """The file name without its folder and volume suffix (``.nii.gz``, ``.nrrd``, ...)."""
    name = os.path.basename(path)
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def sha256_file(path: str) -> str:
    """SHA-256 hex digest of the file at ``path``; of a folder, the digest of its volume files'
    names and digests (sorted)."""
    if os.path.isdir(path):
        lines = "".join(f"{name} {sha256_file(os.path.join(path, name))}\n" for name in sorted(os.listdir(path))
                        if name.lower().endswith(VOLUME_SUFFIXES))
        return hashlib.sha256(lines.encode()).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def check_unchanged(where: str, digests: dict[str, str]) -> None:
    """Raise SynthgenError naming ``where`` unless every file (or folder) path of ``digests``
    still has its recorded SHA-256."""
    for path, digest in digests.items():
        if sha256_file(path) != digest:
            raise SynthgenError(f"{where}: {path} changed since this dataset was started (SHA-256 differs); "
                                f"restore the file, or ingest into a new --out")


def find_sources(images: str, labels: str | None = None) -> list[SourceVolume]:
    """The volumes named by ``images`` (and ``labels``), in a fixed order.

    Args:
        images: a folder (its volume files, sorted by name), a glob pattern (sorted), a
            ``.csv`` file with an ``image`` column and optional ``labels`` and ``name`` columns
            (paths relative to the CSV's folder; rows in file order), a TotalSegmentator folder
            (subjects sorted; labels: each subject's ``segmentations/``), or a Learn2Reg
            ``dataset.json`` (its ``training`` entries, in order; labels: their ``label``).
        labels: with a folder or glob of images, a folder or glob of label files matched to
            the images by file stem (every image needs one). Not allowed with the other forms.

    Raises:
        SynthgenError: no volumes, a missing file or column, duplicate names, an image without
            labels, ``labels`` given with a CSV.
    """
    listed = images.lower().endswith((".csv", ".json")) or _is_totalsegmentator(images)
    if listed and labels is not None:
        raise SynthgenError(f"--labels cannot be combined with {images}: it names its own labels")
    if images.lower().endswith(".csv"):
        rows = _csv_rows(images)
    elif images.lower().endswith(".json"):
        rows = _learn2reg_rows(images)
    elif _is_totalsegmentator(images):
        rows = _totalsegmentator_rows(images)
    else:
        files = _volume_files(images, "--images")
        label_files = {volume_stem(f): f for f in _volume_files(labels, "--labels")} if labels else None
        rows = []
        for image in files:
            name = volume_stem(image)
            if label_files is not None and name not in label_files:
                raise SynthgenError(f"image {image} has no label file named {name}.* in {labels}; add it, "
                                    f"or ingest without --labels")
            rows.append((name, image, label_files[name] if label_files is not None else None))
    _check_unique(rows)
    return [SourceVolume(name, os.path.abspath(image), os.path.abspath(label) if label else None,
                         sha256_file(image), sha256_file(label) if label else "")
            for name, image, label in rows]


def _volume_files(where: str, option: str) -> list[str]:
    if os.path.isdir(where):
        files = [os.path.join(where, n) for n in sorted(os.listdir(where))]
    else:
        files = sorted(glob.glob(where))
    files = [f for f in files if os.path.isfile(f) and f.lower().endswith(VOLUME_SUFFIXES)]
    if not files:
        raise SynthgenError(f"{option} {where} names no volume files ({', '.join(VOLUME_SUFFIXES)}); give a "
                            f"folder, a glob such as 'data/*.nii.gz', or a CSV with an image column")
    return files


def _csv_rows(path: str) -> list[tuple[str, str, str | None]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or ()]
            records = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SynthgenError(f"cannot read the CSV {path} ({err}); give a UTF-8 CSV with an image column") from err
    if "image" not in columns:
        raise SynthgenError(f"CSV {path} has no image column (columns: {', '.join(columns) or 'none'}); its "
                            f"header needs image and optionally labels, name")
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        raise SynthgenError(f"CSV {path} has unknown column(s) {', '.join(unknown)}; valid: "
                            f"{', '.join(CSV_COLUMNS)}")
    if not records:
        raise SynthgenError(f"CSV {path} lists no volumes; add one row per image")
    folder = os.path.dirname(os.path.abspath(path))
    rows = []
    for k, record in enumerate(records, start=2):
        image = record.get("image", "")
        if not image:
            raise SynthgenError(f"CSV {path} line {k} has an empty image cell; give the image's path")
        image = os.path.join(folder, image)
        label = os.path.join(folder, record["labels"]) if record.get("labels") else None
        if "labels" in columns and label is None:
            raise SynthgenError(f"CSV {path} line {k} has no labels but others have; give every image its "
                                f"labels, or drop the column")
        for file in (image, label):
            if file is not None and not os.path.isfile(file):
                raise SynthgenError(f"CSV {path} line {k}: {file} does not exist; fix the path (relative "
                                    f"paths start at the CSV's folder)")
        rows.append((record.get("name") or volume_stem(image), image, label))
    return rows


def _is_totalsegmentator(folder: str) -> bool:
    """A folder whose sub-folders hold ``segmentations/`` (the TotalSegmentator layout)."""
    return os.path.isdir(folder) and any(os.path.isdir(os.path.join(folder, name, "segmentations"))
                                         for name in os.listdir(folder))


def _totalsegmentator_rows(folder: str) -> list[tuple[str, str, str | None]]:
    rows = []
    for subject in sorted(os.listdir(folder)):
        masks = os.path.join(folder, subject, "segmentations")
        if not os.path.isdir(masks):
            continue
        images = [os.path.join(folder, subject, f"{m}.nii.gz") for m in ("ct", "mr")]
        found = [image for image in images if os.path.isfile(image)]
        if len(found) != 1:
            raise SynthgenError(f"TotalSegmentator subject {os.path.join(folder, subject)} has "
                                f"{'both ct.nii.gz and mr.nii.gz' if found else 'no ct.nii.gz or mr.nii.gz'}; "
                                f"keep exactly one image per subject")
        rows.append((subject, found[0], masks))
    return rows


def _learn2reg_rows(path: str) -> list[tuple[str, str, str | None]]:
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)["training"]
        pairs = [(entry["image"], entry.get("label")) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise SynthgenError(f"cannot read the training list of the Learn2Reg file {path} ({first_line(err)}); "
                            f"give a dataset.json with a 'training' list of {{image, label}} entries") from err
    if not pairs:
        raise SynthgenError(f"{path} lists no training images; ingest another split with a CSV")
    folder = os.path.dirname(os.path.abspath(path))
    labelled = {label is not None for _, label in pairs}
    rows = []
    for image, label in pairs:
        image = os.path.normpath(os.path.join(folder, image))
        label = os.path.normpath(os.path.join(folder, label)) if label and labelled == {True} else None
        for file in (image, label):
            if file is not None and not os.path.isfile(file):
                raise SynthgenError(f"{path} names {file}, which does not exist; fix the entry or the folder")
        rows.append((volume_stem(image), image, label))
    return rows


def _check_unique(rows: list[tuple[str, str, str | None]]) -> None:
    seen: dict[str, str] = {}
    for name, image, _ in rows:
        if name in seen:
            raise SynthgenError(f"{seen[name]} and {image} are both volume {name!r}; give each a unique name "
                                f"(rename a file, or use a CSV with a name column)")
        seen[name] = image
