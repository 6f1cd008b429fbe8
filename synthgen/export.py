"""Export one sample as NIfTI files (one per field) plus a ``sample.json`` describing them.

Every file has the affine diag(spacing), or the sample's own voxel -> RAS mm affine where the
dataset stores one (an ``affine`` field, as ingested real volumes have; it is written into the
headers and ``sample.json``, not as a file of its own): array axes 0, 1, 2 (D, H, W) are the NIfTI i, j, k
axes, the voxel size in mm is in pixdim (``header.get_zooms()``), and qform and sform agree
(code 1, scanner). Images are written as float32 (float16 values are exact in float32),
labels in their stored integer dtype, and a displacement field (3, D, H, W) as a
(D, H, W, 3) float32 vector image (intent "vector") in voxels, component i along axis i:
the Learn2Reg file layout.

An export never mixes with other data by accident: an ``out_dir`` that is not empty is refused
unless ``overwrite``, which replaces only what an export writes (its NIfTI files and
``sample.json``, and the files an earlier export listed in its ``sample.json``); other files in
the folder are kept. Each file is written whole (partial file and rename) and ``sample.json``
last.
"""

from __future__ import annotations

import json
import os
from typing import Any

import nibabel as nib
import numpy as np

from synthgen.atomic_files import write_atomically
from synthgen.engines.base import FieldSpec
from synthgen.errors import SynthgenError
from synthgen.store.info import DatasetInfo
from synthgen.store.output_paths import check_output_path
from synthgen.store.reader import Dataset

MANIFEST = "sample.json"
NIFTI_SCANNER = 1


def export_sample(dataset: Dataset, index: int, out_dir: str, overwrite: bool = False) -> list[str]:
    """Write sample ``index`` of ``dataset`` to ``out_dir/<field>.nii.gz`` for every field and
    ``out_dir/sample.json``; returns the written paths (fields in schema order, then the JSON).

    Creates ``out_dir`` (and its parents) if needed. ``overwrite``: write into a folder that is
    not empty, replacing only what an export writes (module docstring).
    Raises SynthgenError if ``out_dir`` cannot be written (a file, under a file, in a folder that
    cannot be written), is not empty and ``overwrite`` is False, or if the sample cannot be read
    (index out of range, shard not committed); nothing is written then.
    """
    check_output_path(out_dir, "export", folder=True, example=".d")
    if not overwrite and os.path.isdir(out_dir) and os.listdir(out_dir):
        raise SynthgenError(f"--out {out_dir} is not empty (an earlier export?); pass --overwrite to replace "
                            f"the exported files there, or choose another --out")
    sample = dataset[index]
    _make_dir(out_dir)
    earlier = _exported_files(out_dir)
    info = dataset.info
    affine = _sample_affine(info, sample)
    paths = [_write_field(out_dir, name, spec, sample[name], affine)
             for name, spec in info.schema.items() if spec.kind != "affine"]
    for stale in earlier - {os.path.basename(path) for path in paths}:
        os.remove(os.path.join(out_dir, stale))
    paths.append(_write_manifest(out_dir, dataset, index, affine))
    return paths


def _sample_affine(info: DatasetInfo, sample: dict[str, np.ndarray]) -> np.ndarray:
    """(4, 4) voxel -> mm affine of a sample: its ``affine`` field, else diag(spacing)."""
    stored = [name for name, spec in info.schema.items() if spec.kind == "affine"]
    if stored:
        return np.asarray(sample[stored[0]], dtype=np.float64)
    return np.diag([*map(float, info.spacing), 1.0])


def to_nifti(array: np.ndarray, spec: FieldSpec, geometry: tuple[float, ...] | np.ndarray) -> nib.Nifti1Image:
    """One stored field of one sample -> a NIfTI image whose affine is ``geometry``: a (4, 4)
    affine, or 3 voxel sizes for diag(spacing).

    ``array``: the sample's field as stored, (D, H, W) for images and labels, (3, D, H, W) for a
    displacement field. Data: float32 (D, H, W) for images, the stored integer dtype for
    labels, float32 (D, H, W, 3) with intent "vector" for a displacement field.
    """
    geometry = np.asarray(geometry, dtype=np.float64)
    affine = geometry if geometry.shape == (4, 4) else np.diag([*geometry, 1.0])
    image = nib.Nifti1Image(_nifti_data(array, spec), affine)
    header = image.header
    header.set_xyzt_units(xyz="mm")
    image.set_qform(affine, code=NIFTI_SCANNER)
    image.set_sform(affine, code=NIFTI_SCANNER)
    if spec.kind == "displacement":
        header.set_intent("vector", name="disp_vox")
    return image


def _nifti_data(array: np.ndarray, spec: FieldSpec) -> np.ndarray:
    if spec.kind == "labels":
        return np.ascontiguousarray(array)
    if spec.kind == "displacement":
        return np.ascontiguousarray(np.moveaxis(array, 0, -1), dtype=np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


def _make_dir(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise SynthgenError(f"cannot create export directory {out_dir}: {err.strerror or err}") from err


def _exported_files(out_dir: str) -> set[str]:
    """The files an earlier export in ``out_dir`` wrote, as its ``sample.json`` lists them and
    still present (none without a readable ``sample.json``)."""
    try:
        with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as handle:
            fields = json.load(handle)["fields"]
        names = {entry["file"] for entry in fields.values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    return {name for name in names if os.path.basename(name) == name and
            os.path.isfile(os.path.join(out_dir, name))}


def _write_field(out_dir: str, name: str, spec: FieldSpec, array: np.ndarray, affine: np.ndarray) -> str:
    path = os.path.join(out_dir, f"{name}.nii.gz")
    image = to_nifti(array, spec, affine)
    write_atomically(path, lambda partial: nib.save(image, partial))  # the partial keeps .nii.gz
    return path


def _write_manifest(out_dir: str, dataset: Dataset, index: int, affine: np.ndarray) -> str:
    path = os.path.join(out_dir, MANIFEST)
    text = json.dumps({**manifest(dataset.path, dataset.info, index), "affine": affine.tolist()}, indent=2) + "\n"
    write_atomically(path, lambda partial: partial.write_text(text, encoding="utf-8"))
    return path


def manifest(dataset_path: str, info: DatasetInfo, index: int) -> dict[str, Any]:
    """What ``sample.json`` holds: where the sample came from and what each file means."""
    return {
        "dataset": dataset_path if "://" in dataset_path else os.path.abspath(dataset_path),
        "engine": info.engine,
        "seed": info.seed,
        "index": int(index),
        "shape": list(info.shape),
        "spacing_mm": list(info.spacing),
        "fields": {name: _field_entry(name, spec) for name, spec in info.schema.items() if spec.kind != "affine"},
    }


def _field_entry(name: str, spec: FieldSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": f"{name}.nii.gz", "kind": spec.kind, "meaning": spec.meaning,
                             "stored_dtype": spec.dtype}
    if spec.kind == "displacement":
        entry["layout"] = "(D, H, W, 3) float32 in voxels, component i along array axis i"
    return entry
