"""Reading NIfTI volumes for the template builders, with one-line errors that name the file."""

from __future__ import annotations

import numpy as np
import nibabel as nib

from synthgen.errors import SynthgenError, first_line


def read_volume(path: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The data array of a 3-D NIfTI file and its voxel size.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.

    Returns:
        ``(data, spacing)``: data is the (D, H, W) array in nibabel's array axes (no
        reorientation), in the file's stored dtype (scaled to float if the header has a
        scale slope); a trailing singleton 4th axis is dropped. ``spacing`` is the header's
        voxel size (zooms, the lengths of the affine's columns) along those axes in mm.

    Raises:
        SynthgenError: the file cannot be read or decompressed, is not 3-D, or has a
        non-positive voxel size.
    """
    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
        zooms = image.header.get_zooms()
    except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, zlib.error, OSError)
        raise SynthgenError(f"cannot read NIfTI file {path} ({first_line(err)}); re-download it or remove it "
                            f"from the source folder") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SynthgenError(f"NIfTI file {path} has shape {data.shape}, not a 3-D volume; templates "
                            f"are built from 3-D masks or label maps only")
    spacing = tuple(float(z) for z in zooms[:3])
    if not all(s > 0 for s in spacing):
        raise SynthgenError(f"NIfTI file {path} has voxel size {spacing} mm; fix the header's pixdim "
                            f"(all three must be > 0)")
    return data, spacing  # type: ignore[return-value]


def nifti_stem(path: str) -> str:
    """The file name without its directory and ``.nii.gz`` / ``.nii`` suffix."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
