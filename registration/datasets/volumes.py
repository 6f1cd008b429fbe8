"""Reading one file of a pair: image, label and mask volumes, and landmark point files.

Volumes are NIfTI (``.nii``, ``.nii.gz``, with their affine and voxel size), ``.npy`` or ``.npz``
(one array, no geometry). Landmark files are CSV (Learn2Reg ``keypointsTr``: N rows "i,j,k" in
voxel coordinates of their image, an optional header line) or ``.npy`` (N, 3). Every failure is a
one-line :class:`SynthgenError` naming the pair and the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np

from registration.datasets.pair_files import Spacing
from synthgen.errors import SynthgenError, first_line

NIFTI = (".nii", ".nii.gz")


@dataclasses.dataclass
class _Volume:
    """An array as read, with the file's geometry when it has one."""

    data: np.ndarray
    affine: np.ndarray | None
    zooms: Spacing | None


def _error(pair: str, what: str, path: Path, text: str) -> SynthgenError:
    return SynthgenError(f"pair {pair}: {what} {path} {text}")


def _read(path: Path, what: str, pair: str) -> _Volume:
    if not path.exists():
        raise _error(pair, what, path, "does not exist; fix the path in the pair file (relative paths "
                                       "start at the pair file's folder)")
    name = path.name.lower()
    if not name.endswith(NIFTI + (".npy", ".npz")):
        raise _error(pair, what, path, "is not a NIfTI (.nii, .nii.gz), .npy or .npz file; convert it")
    try:
        if name.endswith(NIFTI):
            image = nib.load(path)
            zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
            return _Volume(np.asanyarray(image.dataobj), np.asarray(image.affine, dtype=np.float64),
                           zooms)  # type: ignore[arg-type]
        if name.endswith(".npy"):
            return _Volume(np.load(path), None, None)
        with np.load(path) as archive:
            if len(archive.files) != 1 and "arr_0" not in archive.files:
                raise ValueError(f"it holds {len(archive.files)} arrays ({', '.join(archive.files)})")
            return _Volume(archive["arr_0" if "arr_0" in archive.files else archive.files[0]], None, None)
    except Exception as err:  # nibabel/numpy/zlib/zipfile raise many unrelated types
        raise _error(pair, what, path, f"cannot be read ({first_line(err)}); re-export it as one 3-D "
                                       f"volume per file") from err


def _squeezed(volume: _Volume, what: str, path: Path, pair: str, ndims: tuple[int, ...] = (3,)
              ) -> np.ndarray:
    data = volume.data
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in ndims:
        raise _error(pair, what, path, f"has shape {data.shape}; expected a 3-D volume")
    return data


def _image(path: Path, what: str, pair: str) -> tuple[np.ndarray, _Volume]:
    volume = _read(path, what, pair)
    data = _squeezed(volume, what, path, pair)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise _error(pair, what, path, f"has dtype {data.dtype}; give a real-valued image")
    data = data.astype(np.float32)
    if not np.isfinite(data).all():
        raise _error(pair, what, path, "contains NaN or infinite values; replace them (e.g. by the "
                                       "image minimum) before registering")
    return data, volume


def _check_shape(data: np.ndarray, shape: tuple[int, ...], what: str, path: Path, pair: str) -> None:
    if tuple(data.shape[:3]) != tuple(shape):
        raise _error(pair, what, path, f"has shape {tuple(data.shape[:3])} but its image has "
                                       f"{tuple(shape)}; labels, masks and images of one side must "
                                       f"share one grid")


def _points(path: Path, what: str, pair: str) -> np.ndarray:
    if not path.exists():
        raise _error(pair, what, path, "does not exist; fix the path in the pair file")
    try:
        if path.suffix.lower() == ".npy":
            points = np.load(path)
        else:
            lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            rows = [ln.replace(",", " ").split() for ln in lines]
            if rows and not _is_number(rows[0][0]):
                rows = rows[1:]
            points = np.array(rows, dtype=np.float64)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise _error(pair, what, path, f"cannot be read ({err}); give N lines 'i,j,k' of voxel "
                                       f"coordinates") from err
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise _error(pair, what, path, f"holds an array of shape {points.shape}; landmarks are N "
                                       f"rows of 3 voxel coordinates")
    return points


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _mask(path: Path | None, what: str, pair: str, shape: tuple[int, ...]) -> np.ndarray | None:
    if path is None:
        return None
    data = _squeezed(_read(path, what, pair), what, path, pair)
    _check_shape(data, shape, what, path, pair)
    return data != 0
