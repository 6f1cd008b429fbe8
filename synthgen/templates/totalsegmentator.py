"""Templates from a TotalSegmentator download: ``SRC/<subject>/segmentations/<organ>.nii.gz``.

As the anatomix preprocessing (step0 of the published code, App. B.1 of the paper) does: all
``rib_*`` masks of a subject are merged into one template ``all_ribs`` and all ``vertebrae_*``
masks into ``all_vertebrae`` (single-structure labels with many components); empty masks are
dropped. Other names are kept as they are (the TotalSegmentator-MR class ``vertebrae`` is
already one mask). Each template is cropped to its bounding box before resampling
(``synthgen.templates.masks``), so cost scales with the organ, not the CT volume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from synthgen.errors import SynthgenError
from synthgen.templates.masks import bounding_box, prepare
from synthgen.templates.nifti import nifti_stem, read_volume

MERGED = (("rib_", "all_ribs"), ("vertebrae_", "all_vertebrae"))
MASK_SUFFIXES = (".nii.gz", ".nii")


def template_name(organ: str) -> str:
    """The template a mask named ``organ`` contributes to (``rib_left_3`` -> ``all_ribs``)."""
    for prefix, merged in MERGED:
        if organ.startswith(prefix):
            return merged
    return organ


def find_subjects(src: str) -> dict[str, list[str]]:
    """Subject id -> its mask files, for every ``SRC/<subject>/segmentations/`` holding at least
    one ``.nii.gz``/``.nii``; subjects and files sorted by name.

    Raises:
        SynthgenError: ``src`` is not a folder, or no subject folder holds masks.
    """
    if not os.path.isdir(src):
        raise SynthgenError(f"source folder {src} does not exist; pass the folder that holds the "
                            f"TotalSegmentator subject folders (<subject>/segmentations/<organ>.nii.gz)")
    subjects = {}
    for subject in sorted(os.listdir(src)):
        folder = os.path.join(src, subject, "segmentations")
        if os.path.isdir(folder):
            files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(MASK_SUFFIXES))
            if files:
                subjects[subject] = files
    if not subjects:
        raise SynthgenError(f"{src} holds no TotalSegmentator masks (expected {src}/<subject>/segmentations/"
                            f"<organ>.nii.gz); pass the folder of the subject folders, or use --label-maps "
                            f"for multi-label maps")
    return subjects


def check_binary(data: np.ndarray, path: str) -> None:
    """Raise SynthgenError naming ``path`` and the offending values unless ``data`` is 0/1."""
    if data.dtype == bool:
        return
    other = (data != 0) & (data != 1)
    if other.any():
        values = np.unique(data[other])
        shown = ", ".join(f"{v:g}" for v in values[:5].tolist()) + (", ..." if values.size > 5 else "")
        raise SynthgenError(f"mask {path} is not binary (it holds {shown} besides 0 and 1); fix or remove "
                            f"it, or build multi-label maps with --label-maps instead")


def subject_templates(files: Sequence[str], target: float | None
                      ) -> tuple[list[tuple[str, np.ndarray]], tuple[float, float, float], dict[str, list[str]]]:
    """The templates of one subject, holding one mask file in memory at a time plus crops.

    Args:
        files: the subject's mask files (any integer or float dtype with values 0/1).
        target: isotropic voxel size in mm to resample to, or None to keep the native grid.

    Returns:
        ``(templates, spacing, dropped)``: ``(name, mask)`` pairs sorted by name, masks tight
        bool (d, h, w) crops; their (3,) voxel size in mm; and the names of masks that gave no
        template (``{"empty": [...], "vanished": [...]}``, see ``PartRecord``).

    Raises:
        SynthgenError: a file is unreadable or not binary, or the masks do not share one grid.
    """
    pieces: dict[str, list[tuple[tuple[slice, ...], np.ndarray]]] = {}
    grid, empty = None, []
    for path in files:
        data, spacing = read_volume(path)
        check_binary(data, path)
        if grid is None:
            grid = (data.shape, spacing, path)
        elif (data.shape, spacing) != grid[:2]:
            raise SynthgenError(f"masks {grid[2]} and {path} have different grids ({grid[0]} at {grid[1]} mm "
                                f"vs {data.shape} at {spacing} mm); all masks of a subject must share its "
                                f"image's grid")
        box = bounding_box(data)
        if box is None:
            empty.append(nifti_stem(path))
        else:
            pieces.setdefault(template_name(nifti_stem(path)), []).append((box, data[box] != 0))
    native = grid[1]  # type: ignore[index]  # files is never empty
    templates, vanished = [], []
    for name in sorted(pieces):
        mask = prepare(_union(pieces[name]), native, target)
        if mask is None:
            vanished.append(name)
        else:
            templates.append((name, mask))
    spacing = native if target is None else (float(target),) * 3
    return templates, spacing, {"empty": empty, "vanished": vanished}  # type: ignore[return-value]


def _union(pieces: list[tuple[tuple[slice, ...], np.ndarray]]) -> np.ndarray:
    """Paste cropped masks into one bool array spanning the union of their boxes."""
    if len(pieces) == 1:
        return pieces[0][1]
    start = [min(box[a].start for box, _ in pieces) for a in range(3)]
    stop = [max(box[a].stop for box, _ in pieces) for a in range(3)]
    union = np.zeros([b - a for a, b in zip(start, stop)], dtype=bool)
    for box, piece in pieces:
        union[tuple(slice(box[a].start - start[a], box[a].stop - start[a]) for a in range(3))] |= piece
    return union
