"""Reading one file of a pair: image, label and mask volumes, and landmark point files.

Volumes are NIfTI (``.nii``, ``.nii.gz``, read with nibabel, with their affine and voxel size),
NRRD (``.nrrd``, ``.nhdr``) or MetaImage (``.mha``, ``.mhd``) (read with SimpleITK, their LPS
geometry turned into the NIfTI convention: array axes i, j, k and a voxel -> RAS mm affine, as
nibabel gives for NIfTI), ``.npy`` or ``.npz`` (one array, no geometry). Landmark files are CSV (Learn2Reg ``keypointsTr``: N rows "i,j,k" in
voxel coordinates of their image, an optional header line) or ``.npy`` (N, 3). Every failure is a
one-line :class:`SynthgenError` naming the pair and the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from registration.datasets.pair_files import Spacing
from synthgen.errors import SynthgenError, first_line

NIFTI = (".nii", ".nii.gz")
ITK_FORMATS = (".nrrd", ".nhdr", ".mha", ".mhd")
VOLUME_SUFFIXES = NIFTI + ITK_FORMATS + (".npy", ".npz")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclasses.dataclass
class _Volume:
    """An array as read, with the file's geometry when it has one."""

    data: np.ndarray
    affine: np.ndarray | None
    zooms: Spacing | None


def _error(where: str, what: str, path: Path, text: str) -> SynthgenError:
    """``where``: whose file it is, e.g. "pair p1" or "volume v3"."""
    return SynthgenError(f"{where}: {what} {path} {text}")


def _read(path: Path, what: str, where: str) -> _Volume:
    if not path.exists():
        raise _error(where, what, path, "does not exist; fix the path in the pair file (relative paths "
                                       "start at the pair file's folder)")
    name = path.name.lower()
    if not name.endswith(VOLUME_SUFFIXES):
        raise _error(where, what, path, "is not a NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage "
                                        "(.mha, .mhd), .npy or .npz file; convert it")
    try:
        if name.endswith(ITK_FORMATS):
            return _read_itk(path)
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
        raise _error(where, what, path, f"cannot be read ({first_line(err)}); re-export it as one 3-D "
                                       f"volume per file") from err


def _read_itk(path: Path) -> _Volume:
    """A NRRD or MetaImage file through SimpleITK, in nibabel's convention (module docstring)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayViewFromImage(image)  # (..., k, j, i) for scalars, (k, j, i, c) for vectors
    vector = image.GetNumberOfComponentsPerPixel() > 1
    spatial = image.GetDimension()
    order = tuple(reversed(range(spatial))) + ((spatial,) if vector else ())
    data = np.ascontiguousarray(array.transpose(order))
    if spatial < 3:
        raise ValueError(f"it is a {spatial}-D image")
    zooms = tuple(float(z) for z in image.GetSpacing()[:3])
    return _Volume(data, _ras_affine(image), zooms)  # type: ignore[arg-type]


def _ras_affine(image: Any) -> np.ndarray:
    """The voxel -> RAS mm affine of a SimpleITK image or file reader (ITK's geometry is LPS)."""
    spatial = len(image.GetSpacing())
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(spatial, spatial)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(image.GetSpacing()[:3])
    lps[:3, 3] = image.GetOrigin()[:3]
    return LPS_TO_RAS @ lps


def _squeezed(volume: _Volume, what: str, path: Path, where: str, ndims: tuple[int, ...] = (3,)
              ) -> np.ndarray:
    data = volume.data
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim not in ndims:
        raise _error(where, what, path, f"has shape {data.shape}; expected a 3-D volume")
    return data


def _image(path: Path, what: str, where: str) -> tuple[np.ndarray, _Volume]:
    volume = _read(path, what, where)
    data = _squeezed(volume, what, path, where)
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise _error(where, what, path, f"has dtype {data.dtype}; give a real-valued image")
    data = data.astype(np.float32)
    if not np.isfinite(data).all():
        raise _error(where, what, path, "contains NaN or infinite values; replace them (e.g. by the "
                                       "image minimum) before registering")
    return data, volume


def read_image(path: str | Path, where: str) -> tuple[np.ndarray, np.ndarray | None, Spacing | None]:
    """One image volume as the harness reads it.

    Args:
        path: a NIfTI, NRRD, MetaImage, .npy or .npz file.
        where: whose file it is, for error messages (e.g. "volume s0001").

    Returns:
        ``(data, affine, zooms)``: data float32 (D, H, W) in the file's array axes; the (4, 4)
        voxel -> RAS mm affine and the voxel size in mm, both None for .npy/.npz.

    Raises:
        SynthgenError: one line naming ``where`` and the file (missing, unreadable, not 3-D,
        not real-valued, NaN or infinite values).
    """
    data, volume = _image(Path(path), "image", where)
    return data, volume.affine, volume.zooms


def header_geometry(path: str | Path, where: str) -> tuple[tuple[int, int, int], np.ndarray] | None:
    """The (D, H, W) and (4, 4) voxel -> RAS mm affine of a NIfTI, NRRD or MetaImage image
    from its header alone (no voxels are read); None for other files. Raises SynthgenError
    (one line naming ``where`` and the file) for a missing or unreadable header."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(NIFTI + ITK_FORMATS):
        return None
    if not path.exists():
        raise _error(where, "image", path, "does not exist; fix its path")
    try:
        if name.endswith(NIFTI):
            image = nib.load(path)
            return tuple(int(n) for n in image.shape[:3]), np.asarray(image.affine, dtype=np.float64)  # type: ignore[return-value]
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return tuple(int(n) for n in reader.GetSize()[:3]), _ras_affine(reader)  # type: ignore[return-value]
    except Exception as err:  # nibabel and ITK raise many unrelated types
        raise _error(where, "image", path, f"cannot be read ({first_line(err)}); re-export it as one 3-D "
                                           f"volume per file") from err


def _check_shape(data: np.ndarray, shape: tuple[int, ...], what: str, path: Path, where: str) -> None:
    if tuple(data.shape[:3]) != tuple(shape):
        raise _error(where, what, path, f"has shape {tuple(data.shape[:3])} but its image has "
                                       f"{tuple(shape)}; labels, masks and images of one side must "
                                       f"share one grid")


def _points(path: Path, what: str, where: str) -> np.ndarray:
    if not path.exists():
        raise _error(where, what, path, "does not exist; fix the path in the pair file")
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
        raise _error(where, what, path, f"cannot be read ({err}); give N lines 'i,j,k' of voxel "
                                       f"coordinates") from err
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise _error(where, what, path, f"holds an array of shape {points.shape}; landmarks are N "
                                       f"rows of 3 voxel coordinates")
    return points


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _mask(path: Path | None, what: str, where: str, shape: tuple[int, ...]) -> np.ndarray | None:
    if path is None:
        return None
    data = _squeezed(_read(path, what, where), what, path, where)
    _check_shape(data, shape, what, path, where)
    return data != 0
