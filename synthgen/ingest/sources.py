"""Finding the volumes to ingest: a folder, a glob or a CSV of images, with optional labels.

Every source file is recorded with its absolute path and SHA-256, so a dataset says exactly
what it was made from and a resumed ingest refuses source files that changed meanwhile.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import os
from typing import Any

from registration.datasets.volumes import VOLUME_SUFFIXES
from synthgen.errors import SynthgenError

CSV_COLUMNS = ("image", "labels", "name")
HASH_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class SourceVolume:
    """One volume to ingest.

    Attributes:
        name: unique name (file stem, or the CSV's name column).
        image: absolute path of the image file.
        labels: absolute path of its label file on the same grid, or None.
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
    """SHA-256 hex digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def find_sources(images: str, labels: str | None = None) -> list[SourceVolume]:
    """The volumes named by ``images`` (and ``labels``), in a fixed order.

    Args:
        images: a folder (its volume files, sorted by name), a glob pattern (sorted), or a
            ``.csv`` file with an ``image`` column and optional ``labels`` and ``name`` columns
            (paths relative to the CSV's folder; rows in file order).
        labels: with a folder or glob of images, a folder or glob of label files matched to
            the images by file stem (every image needs one). Not allowed with a CSV.

    Raises:
        SynthgenError: no volumes, a missing file or column, duplicate names, an image without
            labels, ``labels`` given with a CSV.
    """
    if images.lower().endswith(".csv"):
        if labels is not None:
            raise SynthgenError(f"--labels cannot be combined with the CSV {images}; put the label files "
                                f"in its labels column")
        rows = _csv_rows(images)
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


def _check_unique(rows: list[tuple[str, str, str | None]]) -> None:
    seen: dict[str, str] = {}
    for name, image, _ in rows:
        if name in seen:
            raise SynthgenError(f"{seen[name]} and {image} are both volume {name!r}; give each a unique name "
                                f"(rename a file, or use a CSV with a name column)")
        seen[name] = image
