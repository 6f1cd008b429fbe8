"""Templates from multi-label maps (e.g. SynthSeg / FreeSurfer segmentations): every
``SRC/*.nii.gz`` or ``SRC/*.nii`` file is one subject (its file stem) and gives one template per
non-zero label, named by the label value."""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage

from synthgen.errors import SynthgenError
from synthgen.templates.masks import prepare
from synthgen.templates.nifti import nifti_stem, read_volume

MAP_SUFFIXES = (".nii.gz", ".nii")


def find_maps(src: str) -> dict[str, list[str]]:
    """Subject id (file stem) -> ``[path]`` for the label maps directly in ``src``, sorted.

    Raises:
        SynthgenError: ``src`` is not a folder, holds no label map, or two files share a stem.
    """
    if not os.path.isdir(src):
        raise SynthgenError(f"source folder {src} does not exist; pass the folder that holds the label "
                            f"maps (*.nii.gz or *.nii)")
    maps: dict[str, list[str]] = {}
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if name.endswith(MAP_SUFFIXES) and os.path.isfile(path):
            stem = nifti_stem(name)
            if stem in maps:
                raise SynthgenError(f"{maps[stem][0]} and {path} are both label map {stem!r}; keep one of them")
            maps[stem] = [path]
    if not maps:
        raise SynthgenError(f"{src} holds no label maps (*.nii.gz or *.nii); pass the folder that holds them, "
                            f"or use --totalsegmentator for a TotalSegmentator download")
    return maps


def map_templates(path: str, target: float | None
                  ) -> tuple[list[tuple[str, np.ndarray]], tuple[float, float, float], dict[str, list[str]]]:
    """One template per non-zero label of the label map at ``path``.

    Args:
        path: a 3-D NIfTI label map with non-negative integer values (any dtype).
        target: isotropic voxel size in mm to resample to, or None to keep the native grid.

    Returns:
        ``(templates, spacing, dropped)`` as ``totalsegmentator.subject_templates``; templates
        are named by label value (``"17"``) in increasing label order.

    Raises:
        SynthgenError: the file is unreadable, or holds values that are not integers in 0..2^31-1.
    """
    data, spacing = read_volume(path)
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        raise SynthgenError(f"label map {path} holds non-integer values; label maps must hold integer labels "
                            f"(0 = background)")
    low, high = (data.min(), data.max()) if data.size else (0, 0)
    if low < 0 or high > np.iinfo(np.int32).max:
        raise SynthgenError(f"label map {path} holds labels outside 0..{np.iinfo(np.int32).max} (minimum {low:g}, "
                            f"maximum {high:g}); label maps must hold non-negative integer labels (0 = background)")
    labels = data.astype(np.int32, copy=False)
    counts = np.bincount(labels.ravel(order="K"))  # NIfTI data is Fortran-ordered: no copy
    boxes = ndimage.find_objects(labels)
    templates, vanished = [], []
    for label in np.flatnonzero(counts[1:]) + 1:
        box = boxes[label - 1]
        mask = prepare(labels[box] == label, spacing, target)
        if mask is None:
            vanished.append(str(label))
        else:
            templates.append((str(label), mask))
    out_spacing = spacing if target is None else (float(target),) * 3
    return templates, out_spacing, {"empty": [], "vanished": vanished}  # type: ignore[return-value]
