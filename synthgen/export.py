"""Export one sample as NIfTI files (one per field) plus a ``sample.json`` describing them.

Every file has the affine diag(spacing): array axes 0, 1, 2 (D, H, W) are the NIfTI i, j, k
axes, the voxel size in mm is in pixdim (``header.get_zooms()``), and qform and sform agree
(code 1, scanner). Images are written as float32 (float16 values are exact in float32),
labels in their stored integer dtype, and a displacement field (3, D, H, W) as a
(D, H, W, 3) float32 vector image (intent "vector") in voxels, component i along axis i:
the Learn2Reg file layout.
"""

from __future__ import annotations

import json
import os
from typing import Any

import nibabel as nib
import numpy as np

from synthgen.engines.base import FieldSpec
from synthgen.errors import SynthgenError
from synthgen.store.info import DatasetInfo
from synthgen.store.reader import Dataset

MANIFEST = "sample.json"
NIFTI_SCANNER = 1


def export_sample(dataset: Dataset, index: int, out_dir: str) -> list[str]:
    """Write sample ``index`` of ``dataset`` to ``out_dir/<field>.nii.gz`` for every field and
    ``out_dir/sample.json``; returns the written paths (fields in schema order, then the JSON).

    Creates ``out_dir`` (and its parents) if needed and overwrites files of the same names.
    Raises SynthgenError if ``out_dir`` is an existing file or cannot be created, or if the
    sample cannot be read (index out of range, shard not committed); nothing is written then.
    """
    _check_out_dir(out_dir)
    sample = dataset[index]
    _make_dir(out_dir)
    info = dataset.info
    paths = [_write_field(out_dir, name, spec, sample[name], info.spacing)
             for name, spec in info.schema.items()]
    paths.append(_write_manifest(out_dir, dataset, index))
    return paths


def to_nifti(array: np.ndarray, spec: FieldSpec, spacing: tuple[float, ...]) -> nib.Nifti1Image:
    """One stored field of one sample -> a NIfTI image with affine diag(spacing).

    ``array``: the sample's field as stored, (D, H, W) for images and labels, (3, D, H, W) for a
    displacement field. Data: float32 (D, H, W) for images, the stored integer dtype for
    labels, float32 (D, H, W, 3) with intent "vector" for a displacement field.
    """
    affine = np.diag([*map(float, spacing), 1.0])
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


def _check_out_dir(out_dir: str) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SynthgenError(f"--out {out_dir} is an existing file; give a directory path such as {out_dir}.d")


def _make_dir(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise SynthgenError(f"cannot create export directory {out_dir}: {err.strerror or err}") from err


def _write_field(out_dir: str, name: str, spec: FieldSpec, array: np.ndarray,
                 spacing: tuple[float, ...]) -> str:
    path = os.path.join(out_dir, f"{name}.nii.gz")
    nib.save(to_nifti(array, spec, spacing), path)
    return path


def _write_manifest(out_dir: str, dataset: Dataset, index: int) -> str:
    path = os.path.join(out_dir, MANIFEST)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(manifest(dataset.path, dataset.info, index), handle, indent=2)
        handle.write("\n")
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
        "fields": {name: _field_entry(name, spec) for name, spec in info.schema.items()},
    }


def _field_entry(name: str, spec: FieldSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"file": f"{name}.nii.gz", "kind": spec.kind, "meaning": spec.meaning,
                             "stored_dtype": spec.dtype}
    if spec.kind == "displacement":
        entry["layout"] = "(D, H, W, 3) float32 in voxels, component i along array axis i"
    return entry
