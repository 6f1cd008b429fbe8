"""``--save-fields``: each pair's displacement as a Learn2Reg displacement file.

A file holds the field the harness scored, (D, H, W, 3) float32 in voxels of the fixed grid,
channel i along array axis i, ``warped(x) = moving(x + u(x))`` (Learn2Reg's format, read by its
``evaluation.py`` as ``map_coordinates(moving, identity + disp.transpose(3, 0, 1, 2))``), with the
fixed grid's affine as the harness loaded it (``RegistrationPair.affine``: the fixed image's
voxel -> RAS mm map with any ``fixed_spacing``; ``diag(spacing)`` where the image has none). Where the harness
resampled the moving image onto the fixed grid (grids that differ, ``align``, ``moving_shift``),
the field points into that resampled image, not into the moving file's own voxels; Learn2Reg
pairs share one grid, so there the two are the same.

Names follow the Learn2Reg evaluation (MDL-UzL/L2R ``evaluation/evaluation.py``, 2025): when
both images are named as in a Learn2Reg dataset (``..._CASE_MODALITY.nii.gz``, four digits
each), ``disp_FIX_MOV.nii.gz`` if the fixed modality is 0000 and the moving one 0001 (the only
pairs whose short name it accepts), else ``disp_FIX_FIXMOD_MOV_MOVMOD.nii.gz`` (the long name it
always accepts); any other pair is ``disp_NAME.nii.gz`` with its pair name (characters other
than letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``). The older grand-challenge
container (``evaluation/L2RTest``) wants the short name for same-modality pairs instead: rename
``disp_FIX_0000_MOV_0000.nii.gz`` to ``disp_FIX_MOV.nii.gz`` for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from registration.warp import save_displacement
from synthgen.atomic_files import write_atomically
from synthgen.errors import SynthgenError

L2R_IMAGE = re.compile(r"_(\d{4})_(\d{4})\.nii\.gz$")


def safe_name(name: str) -> str:
    """``name`` with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def field_name(name: str, images: tuple[Path, Path] | None = None) -> str:
    """The displacement file name of a pair (see the module docstring).

    Args:
        name: the pair's name.
        images: its (fixed, moving) image files, or None for pairs without files.
    """
    found = [L2R_IMAGE.search(path.name) for path in images] if images else []
    if len(found) == 2 and all(found):
        (fix, fix_mod), (mov, mov_mod) = (match.groups() for match in found)  # type: ignore[union-attr]
        if (fix_mod, mov_mod) == ("0000", "0001"):
            return f"disp_{fix}_{mov}.nii.gz"
        return f"disp_{fix}_{fix_mod}_{mov}_{mov_mod}.nii.gz"
    return f"disp_{safe_name(name)}.nii.gz"


def check_unique(names: dict[str, str]) -> None:
    """Refuse (one-line SynthgenError) two pairs whose fields would share a file.

    Args:
        names: {pair name: field file name}.
    """
    seen: dict[str, str] = {}
    for pair, file in names.items():
        if file in seen:
            raise SynthgenError(f"--save-fields: pairs {seen[file]} and {pair} would both be saved as "
                                f"{file}; give every pair its own images or name, or drop --save-fields")
        seen[file] = pair


def write_field(path: str | os.PathLike, displacement: torch.Tensor, spacing: Sequence[float],
                affine: np.ndarray | None) -> None:
    """Write a (3, D, H, W) displacement (voxels) as a (D, H, W, 3) float32 NIfTI with ``affine``
    (``diag(spacing)`` when None) by :func:`registration.warp.save_displacement`; the file
    appears whole or not at all (:func:`synthgen.atomic_files.write_atomically`)."""
    write_atomically(path, lambda partial: save_displacement(partial, displacement, spacing, affine=affine))
