"""Pair files: :class:`PairSpec` and :func:`read_pairs` (a pairs CSV or a Learn2Reg ``dataset.json``).

Learn2Reg ``dataset.json``: the pairs are ``registration_val`` (``split="val"``),
``registration_test`` (``"test"``) or ``training_paired_images`` (``"train"``), each
``{"fixed": ..., "moving": ...}`` with paths relative to the JSON's folder. A pair's labels,
keypoints and masks come from the ``training``/``test`` entry of the same image (``label``,
``keypoints`` or ``landmarks``, ``mask``), else from the sibling folders of ``imagesTr``/
``imagesTs`` (``labelsTr/NAME.nii.gz``, ``keypointsTr/NAME.csv``, ``masksTr/NAME.nii.gz``) when
those files exist. Label names come from ``labels["0"]``, and only the listed non-zero ids are
scored (Learn2Reg's evaluation config lists the same ids). Pairs are named
``{fixed case}_{moving case}`` as Learn2Reg's ``disp_{fix}_{mov}`` (with the modality indices
added when the short names collide).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.errors import SynthgenError
from synthgen.templates.nifti import nifti_stem

ALIGNMENTS = ("centre", "world")
SPLITS = {"val": "registration_val", "test": "registration_test", "train": "training_paired_images"}
PATH_COLUMNS = ("fixed", "moving", "fixed_labels", "moving_labels", "fixed_landmarks",
                "moving_landmarks", "fixed_mask", "moving_mask")
OPTION_COLUMNS = ("name", "align", "labels", "landmark_labels", "fixed_spacing", "moving_spacing",
                  "moving_shift")
Spacing = tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class PairSpec:
    """One pair as a pair file describes it: absolute paths and per-pair options.

    Attributes:
        name: unique name of the pair.
        fixed, moving: image files.
        fixed_labels, moving_labels: label files or mask directories (both or neither).
        fixed_landmarks, moving_landmarks: landmark files (both or neither).
        fixed_mask, moving_mask: binary mask files, each optional.
        align: "centre" or "world" (see :mod:`registration.datasets.grids`).
        labels: label ids to evaluate; None evaluates every non-zero id present in either map.
        landmark_labels: label ids whose region centroids become landmarks.
        label_names: names of label ids (from a dataset.json), or None.
        fixed_spacing, moving_spacing: voxel sizes (mm) overriding or supplying the files'.
        moving_shift: a translation (mm, along the fixed image's array axes) added to the
            alignment: fixed position x reads the moving image where ``align`` puts x + shift.
    """

    name: str
    fixed: Path
    moving: Path
    fixed_labels: Path | None = None
    moving_labels: Path | None = None
    fixed_landmarks: Path | None = None
    moving_landmarks: Path | None = None
    fixed_mask: Path | None = None
    moving_mask: Path | None = None
    align: str = "centre"
    labels: tuple[int, ...] | None = None
    landmark_labels: tuple[int, ...] = ()
    label_names: Mapping[int, str] | None = None
    fixed_spacing: Spacing | None = None
    moving_spacing: Spacing | None = None
    moving_shift: Spacing | None = None

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON values (paths as strings, tuples as lists); ``from_json`` inverts it."""
        data = dataclasses.asdict(self)
        for key in PATH_COLUMNS:
            data[key] = None if data[key] is None else str(data[key])
        if data["label_names"] is not None:
            data["label_names"] = {str(k): v for k, v in data["label_names"].items()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PairSpec":
        values = dict(data)
        for key in PATH_COLUMNS:
            values[key] = None if values[key] is None else Path(values[key])
        for key in ("labels", "fixed_spacing", "moving_spacing", "moving_shift"):
            values[key] = None if values[key] is None else tuple(values[key])
        values["landmark_labels"] = tuple(values["landmark_labels"])
        if values["label_names"] is not None:
            values["label_names"] = {int(k): v for k, v in values["label_names"].items()}
        return cls(**values)

    @property
    def where(self) -> str:
        """How error messages name the pair: "pair NAME"."""
        return f"pair {self.name}"


def read_pairs(path: str | os.PathLike, *, split: str = "val") -> list[PairSpec]:
    """The pairs of a pairs CSV or of a Learn2Reg ``dataset.json`` (chosen by the suffix).

    CSV columns: ``fixed, moving`` (required), ``fixed_labels, moving_labels, fixed_landmarks,
    moving_landmarks, fixed_mask, moving_mask`` (paths relative to the CSV's folder), and the
    options ``name`` (default ``{fixed stem}_{moving stem}``), ``align`` (centre | world),
    ``labels`` and ``landmark_labels`` (integer ids separated by spaces), ``fixed_spacing`` and
    ``moving_spacing`` (three mm values separated by spaces), ``moving_shift`` (three mm values, see
    :class:`PairSpec`). Empty cells mean "not given".

    Args:
        path: the pair file.
        split: for a dataset.json, "val", "test" or "train" (see the module docstring).

    Raises:
        SynthgenError: missing or malformed file, unknown column, bad option value, duplicate
        pair names.
    """
    path = Path(path)
    if not path.is_file():
        raise SynthgenError(f"pair file {path} does not exist; give a pairs CSV or a Learn2Reg "
                            f"dataset.json")
    specs = _read_json(path, split) if path.suffix.lower() == ".json" else _read_csv(path)
    seen: dict[str, int] = {}
    for k, spec in enumerate(specs):
        if spec.name in seen:
            raise SynthgenError(f"pair file {path}: pairs {seen[spec.name] + 1} and {k + 1} are both "
                                f"named {spec.name!r}; give every pair a unique name (name column)")
        seen[spec.name] = k
    return specs


def _stem(path: Path) -> str:
    stem = nifti_stem(path.name)
    return stem[:-4] if stem.endswith((".npy", ".npz")) else stem


def _read_csv(path: Path) -> list[PairSpec]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, skipinitialspace=True))
            columns = [c.strip() for c in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SynthgenError(f"cannot read pair file {path} ({err}); give a UTF-8 CSV file") from err
    if not rows:
        raise SynthgenError(f"pair file {path} has no pairs; add a header line and one row per pair")
    unknown = [c for c in columns if c not in PATH_COLUMNS + OPTION_COLUMNS]
    missing = [c for c in ("fixed", "moving") if c not in columns]
    if unknown or missing:
        problem = f"unknown column(s) {', '.join(unknown)}" if unknown else f"no {' or '.join(missing)} column"
        raise SynthgenError(f"pair file {path}: {problem}; the columns are {', '.join(PATH_COLUMNS)} "
                            f"and the options {', '.join(OPTION_COLUMNS)}")
    return [_csv_spec(path, k + 1, {key.strip(): (value or "").strip() for key, value in row.items()
                                    if key is not None})
            for k, row in enumerate(rows)]


def _csv_spec(path: Path, row: int, cells: dict[str, str]) -> PairSpec:
    where = f"pair file {path}, row {row}"
    paths = {c: (path.parent / cells[c]).resolve() if cells.get(c) else None for c in PATH_COLUMNS}
    if paths["fixed"] is None or paths["moving"] is None:
        raise SynthgenError(f"{where}: the fixed and moving cells must both be filled")
    name = cells.get("name") or f"{_stem(paths['fixed'])}_{_stem(paths['moving'])}"
    align = cells.get("align") or "centre"
    if align not in ALIGNMENTS:
        raise SynthgenError(f"{where}: align {align!r} is not one of {', '.join(ALIGNMENTS)}")
    labels = _ints(cells.get("labels", ""), where, "labels")
    return PairSpec(name=name, align=align, labels=labels or None,
                    landmark_labels=_ints(cells.get("landmark_labels", ""), where, "landmark_labels"),
                    fixed_spacing=_spacing(cells.get("fixed_spacing", ""), where, "fixed_spacing"),
                    moving_spacing=_spacing(cells.get("moving_spacing", ""), where, "moving_spacing"),
                    moving_shift=_vector(cells.get("moving_shift", ""), where, "moving_shift"),
                    **paths)


def _ints(text: str, where: str, column: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split())
    except ValueError:
        raise SynthgenError(f"{where}: {column} {text!r} must be integer label ids separated by "
                            f"spaces") from None


def _vector(text: str, where: str, column: str, positive: bool = False) -> Spacing | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split())
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and (v > 0 or not positive) for v in values):
        kind = "positive voxel sizes" if positive else "finite values"
        raise SynthgenError(f"{where}: {column} {text!r} must be three {kind} in mm separated by spaces")
    return values  # type: ignore[return-value]


def _spacing(text: str, where: str, column: str) -> Spacing | None:
    return _vector(text, where, column, positive=True)


def _read_json(path: Path, split: str) -> list[PairSpec]:
    if split not in SPLITS:
        raise SynthgenError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SynthgenError(f"cannot read {path} ({err}); give a Learn2Reg dataset.json") from err
    key = SPLITS[split]
    pairs = data.get(key) if isinstance(data, dict) else None
    if not pairs or not all(isinstance(p, dict) and "fixed" in p and "moving" in p for p in pairs):
        raise SynthgenError(f"{path} has no {key} list of {{fixed, moving}} pairs; choose another "
                            f"split ({', '.join(SPLITS)}) or give a Learn2Reg dataset.json")
    root = path.parent
    entries = {os.path.normpath(e["image"]): e for e in data.get("training", []) + data.get("test", [])
               if isinstance(e, dict) and "image" in e}
    names = _label_names(data)
    specs = []
    for pair in pairs:
        fixed, moving = (_l2r_files(root, pair[side], entries) for side in ("fixed", "moving"))
        both = {field: (fixed[field], moving[field]) if fixed[field] and moving[field] else (None, None)
                for field in ("labels", "landmarks")}
        specs.append(PairSpec(
            name="", fixed=fixed["image"], moving=moving["image"],
            fixed_labels=both["labels"][0], moving_labels=both["labels"][1],
            fixed_landmarks=both["landmarks"][0], moving_landmarks=both["landmarks"][1],
            fixed_mask=fixed["mask"], moving_mask=moving["mask"], label_names=names))
    return _l2r_names(specs)


def _label_names(data: dict) -> dict[int, str] | None:
    table = data.get("labels", {})
    table = table.get("0", table) if isinstance(table, dict) else {}
    try:
        names = {int(k): str(v) for k, v in table.items() if int(k) != 0}
    except (ValueError, AttributeError):
        return None
    return names or None


def _l2r_files(root: Path, image: str, entries: dict[str, dict]) -> dict[str, Path | None]:
    """The image of a dataset.json pair and its label, keypoint and mask files (or None)."""
    entry = entries.get(os.path.normpath(image), {})
    image_path = (root / image).resolve()
    files: dict[str, Path | None] = {"image": image_path}
    for field, keys, folder, suffix in (("labels", ("label",), "labels", ".nii.gz"),
                                        ("landmarks", ("keypoints", "landmarks"), "keypoints", ".csv"),
                                        ("mask", ("mask",), "masks", ".nii.gz")):
        given = next((entry[k] for k in keys if entry.get(k)), None)
        if given:
            files[field] = (root / given).resolve()
            continue
        parent = image_path.parent.name
        sibling = (image_path.parent.parent / parent.replace("images", folder, 1)
                   / (_stem(image_path) + suffix)) if parent.startswith("images") else None
        files[field] = sibling if sibling is not None and sibling.exists() else None
    return files


def _l2r_names(specs: list[PairSpec]) -> list[PairSpec]:
    def parts(path: Path) -> tuple[str, str]:
        tokens = _stem(path).split("_")
        return (tokens[-2], tokens[-1]) if len(tokens) >= 3 else (_stem(path), "")

    short = [f"{parts(s.fixed)[0]}_{parts(s.moving)[0]}" for s in specs]
    if len(set(short)) < len(short):
        short = ["_".join(p for p in (*parts(s.fixed), *parts(s.moving)) if p) for s in specs]
    return [dataclasses.replace(s, name=n) for s, n in zip(specs, short)]
