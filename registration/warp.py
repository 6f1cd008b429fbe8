"""Displacement fields for registration: warping, composition, coordinate/unit/file conversions.

Convention (the project's, which is Learn2Reg's): a displacement ``u`` is a (3, D, H, W) float
tensor (or a (B, 3, D, H, W) batch) on the fixed image's grid, in **voxels**, channel i along
array axis i, and ``warped(x) = moving(x + u(x))`` for every fixed voxel x. Learn2Reg files
hold the same field channel-last, (D, H, W, 3). Conversions to ``grid_sample``'s normalised
coordinates go through :mod:`synthgen.ops.grids` (``align_corners=True``), the only place that
does that arithmetic; warping is :mod:`synthgen.ops.warp` and composition
:mod:`synthgen.ops.svf`, re-exported or wrapped here so registration code has one import.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch

from synthgen.engines.base import FieldSpec
from synthgen.errors import SynthgenError
from synthgen.export import to_nifti
from synthgen.ops import grids, svf
from synthgen.ops.warp import warp_image, warp_labels

__all__ = ["warp_image", "warp_labels", "compose", "affine_displacement", "to_grid", "from_grid",
           "to_normalized", "from_normalized", "to_l2r", "from_l2r", "save_displacement",
           "load_displacement", "voxels_to_mm", "mm_to_voxels"]

Spacing = Sequence[float]


def _spatial(disp: torch.Tensor) -> tuple[int, int, int]:
    if disp.dim() not in (4, 5) or disp.shape[-4] != 3:
        raise ValueError(f"displacement must be (3, D, H, W) or (B, 3, D, H, W), got {tuple(disp.shape)}")
    return tuple(disp.shape[-3:])  # type: ignore[return-value]


def _single(disp: torch.Tensor) -> None:
    if disp.dim() != 4 or disp.shape[0] != 3:
        raise ValueError(f"expected one (3, D, H, W) displacement, got {tuple(disp.shape)}")


def compose(first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """The one displacement equal to warping by ``first`` and then warping the result by ``then``.

    ``warp_image(warp_image(m, first), then) ~= warp_image(m, compose(first, then))``; the result
    is ``then(x) + first(x + then(x))``, i.e. the map ``T_first o T_then`` (``then`` acts on the
    fixed grid first). Border padding where ``x + then(x)`` leaves the grid.

    Args:
        first, then: (3, D, H, W) or (B, 3, D, H, W) float displacements on the same grid.

    Returns:
        Tensor of the same shape and dtype.
    """
    return svf.compose(first, then)


def affine_displacement(matrix: np.ndarray | torch.Tensor, shape: Sequence[int], *,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The displacement of a voxel-space affine map ``x -> A x + t`` on a grid of ``shape``.

    Args:
        matrix: (4, 4) or (3, 4) homogeneous matrix from voxel indices of this grid to voxel
            indices of the sampled volume (which may have another shape).
        shape: spatial shape (D, H, W) of the grid the displacement lives on.
        dtype: output dtype; the product is formed in float64 first.

    Returns:
        (3, D, H, W) tensor ``u`` with ``x + u(x) = A x + t``.
    """
    m = torch.as_tensor(np.asarray(matrix, dtype=np.float64)[:3])
    x = grids.identity_grid(shape, dtype=torch.float64)
    moved = torch.einsum("ij,jdhw->idhw", m[:, :3], x) + m[:, 3].view(3, 1, 1, 1)
    return (moved - x).to(dtype)


def to_grid(disp: torch.Tensor) -> torch.Tensor:
    """The ``grid_sample`` grid (identity plus displacement) that warps by ``disp``.

    Args:
        disp: (3, D, H, W) or (B, 3, D, H, W) float displacement in voxels.

    Returns:
        (D, H, W, 3) or (B, D, H, W, 3) normalised coordinates, last dim ordered (x=W, y=H, z=D),
        for a moving volume with the same spatial shape as ``disp``.
    """
    shape = _spatial(disp)
    identity = grids.identity_grid(shape, device=disp.device, dtype=disp.dtype)
    return grids.voxel_to_normalized(identity + disp, shape)


def from_grid(grid: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_grid`: (D, H, W, 3) or (B, D, H, W, 3) -> displacement in voxels."""
    shape = tuple(grid.shape[-4:-1])
    voxels = grids.normalized_to_voxel(grid, shape)
    return voxels - grids.identity_grid(shape, device=grid.device, dtype=grid.dtype)


def to_normalized(disp: torch.Tensor) -> torch.Tensor:
    """A displacement in ``grid_sample`` normalised units (no identity added).

    Args:
        disp: (3, D, H, W) or (B, 3, D, H, W) float displacement in voxels.

    Returns:
        (D, H, W, 3) or (B, D, H, W, 3), last dim ordered (x=W, y=H, z=D); ``to_grid(disp)``
        minus the identity grid.
    """
    shape = _spatial(disp)
    identity = grids.identity_grid(shape, device=disp.device, dtype=disp.dtype)
    return (grids.voxel_to_normalized(identity + disp, shape)
            - grids.voxel_to_normalized(identity, shape))


def from_normalized(norm: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_normalized`: (D, H, W, 3) or (B, D, H, W, 3) -> voxels."""
    shape = tuple(norm.shape[-4:-1])
    identity = grids.identity_grid(shape, device=norm.device, dtype=norm.dtype)
    return from_grid(norm + grids.voxel_to_normalized(identity, shape))


def to_l2r(disp: torch.Tensor) -> np.ndarray:
    """(3, D, H, W) displacement -> the Learn2Reg array layout, (D, H, W, 3) float32 numpy."""
    _single(disp)
    return np.ascontiguousarray(disp.detach().cpu().float().permute(1, 2, 3, 0).numpy())


def from_l2r(array: np.ndarray) -> torch.Tensor:
    """Learn2Reg (D, H, W, 3) array -> (3, D, H, W) float32 tensor."""
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"a Learn2Reg displacement is (D, H, W, 3), got {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 0), dtype=np.float32))


def save_displacement(path: str | os.PathLike, disp: torch.Tensor,
                      spacing: Spacing = (1.0, 1.0, 1.0), *, affine: np.ndarray | None = None) -> None:
    """Write a (3, D, H, W) displacement in voxels as Learn2Reg does.

    ``.nii.gz``/``.nii``: a (D, H, W, 3) float32 vector image with affine diag(spacing)
    (:func:`synthgen.export.to_nifti`), or ``affine`` ((4, 4), e.g. the fixed image's) when
    given. ``.npz``: the (D, H, W, 3) float32 array under the key ``arr_0``, compressed.
    """
    path = os.fspath(path)
    _single(disp)
    array = disp.detach().cpu().float().numpy()
    if path.endswith((".nii", ".nii.gz")):
        spec = FieldSpec("float32", tuple(array.shape), "displacement", "displacement in voxels")
        nib.save(to_nifti(array, spec, tuple(spacing) if affine is None else affine), path)
    elif path.endswith(".npz"):
        np.savez_compressed(path, to_l2r(disp))
    else:
        raise SynthgenError(f"cannot save a displacement as {path}; use a .nii.gz or .npz file name")


def load_displacement(path: str | os.PathLike, shape: Sequence[int] | None = None) -> torch.Tensor:
    """Read a Learn2Reg displacement file (.nii/.nii.gz, or .npz with one array or ``arr_0``).

    Args:
        path: the file; it holds a (D, H, W, 3) field in voxels.
        shape: the expected spatial shape (D, H, W), checked when given.

    Returns:
        (3, D, H, W) float32 tensor.

    Raises:
        SynthgenError: unreadable file, wrong layout or unexpected shape.
    """
    path = os.fspath(path)
    try:
        if path.endswith(".npz"):
            with np.load(path) as archive:
                key = "arr_0" if "arr_0" in archive.files else archive.files[0]
                array = archive[key]
        else:
            array = np.asanyarray(nib.load(path).dataobj)
    except Exception as err:  # nibabel/numpy/zlib/zipfile raise many unrelated types
        raise SynthgenError(f"cannot read displacement {path} ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}); give a Learn2Reg "
                            f".nii.gz or .npz field") from err
    if array.ndim == 5 and array.shape[3] == 1:
        array = array[:, :, :, 0]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise SynthgenError(f"displacement {path} has shape {array.shape}; Learn2Reg fields are "
                            f"(D, H, W, 3) in voxels")
    if shape is not None and tuple(array.shape[:3]) != tuple(shape):
        raise SynthgenError(f"displacement {path} is {array.shape[:3]} but the fixed image is "
                            f"{tuple(shape)}; write the field at the fixed image's full resolution")
    return from_l2r(np.asarray(array, dtype=np.float32))


def _per_axis(disp: torch.Tensor, spacing: Spacing) -> torch.Tensor:
    _spatial(disp)
    return torch.as_tensor(tuple(spacing), dtype=disp.dtype, device=disp.device).view(3, 1, 1, 1)


def voxels_to_mm(disp: torch.Tensor, spacing: Spacing) -> torch.Tensor:
    """A displacement in voxels -> in mm (channel i times ``spacing[i]``); same shape."""
    return disp * _per_axis(disp, spacing)


def mm_to_voxels(disp: torch.Tensor, spacing: Spacing) -> torch.Tensor:
    """A displacement in mm -> in voxels (channel i divided by ``spacing[i]``); same shape."""
    return disp / _per_axis(disp, spacing)
