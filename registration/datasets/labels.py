"""Labels and landmarks of one pair: label maps, mask folders, label ids, landmarks.

A label file lies on its own image's grid: its shape must equal the image's and its
header geometry is ignored (one OASIS label header disagrees with its image in spacing and
origin; the arrays coincide voxel for voxel). Accepted forms:

- a 3-D integer label map (float files holding integers are fine);
- a 4-D (D, H, W, C) one-hot / multi-channel file: channel c (value > 0.5) becomes label
  c + 1; where channels overlap, the later channel wins;
- a directory of binary masks ``<organ>.nii.gz`` (TotalSegmentator ``segmentations/``; both
  sides must be directories): organs are matched by file name, those non-empty in both images
  are kept, numbered 1..K in sorted name order (a later name wins where masks overlap), and
  their names go to ``label_names``.

``landmark_labels`` turns labels into landmarks: each listed id (for a 4-D file, channel id - 1)
contributes the centroid of its region, in voxel coordinates, to the landmarks and is removed
from the label maps (a 4-D file's landmark channels are never painted, so regions under them
keep the other channels' labels). Landmark files, if also given, come first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from registration.datasets.pair_files import PairSpec
from registration.datasets.volumes import NIFTI, _check_shape, _error, _mask, _points, _read, _squeezed
from synthgen.errors import SynthgenError
from synthgen.templates.nifti import nifti_stem


@dataclasses.dataclass
class _Labels:
    volume: np.ndarray  # (D, H, W) int64
    landmarks: np.ndarray  # (K, 3) float64 centroids of the landmark labels, in order


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    coords = np.argwhere(mask)
    return coords.mean(axis=0) if len(coords) else None


def _label_file(path: Path, what: str, where: str, shape: tuple[int, ...] | None,
                landmark_labels: tuple[int, ...]) -> _Labels:
    volume = _read(path, what, where)
    data = _squeezed(volume, what, path, where, ndims=(3, 4))
    if shape is None:
        shape = data.shape[:3]
    _check_shape(data, shape, what, path, where)
    if data.ndim == 4:
        channels = data.shape[3]
        regions = {label: data[..., label - 1] > 0.5 if 1 <= label <= channels else None
                   for label in landmark_labels}
        painted = np.zeros(shape, dtype=np.int64)
        for c in range(channels):
            if c + 1 not in landmark_labels:
                painted[data[..., c] > 0.5] = c + 1
        return _with_landmarks(painted, regions, what, path, where)
    if data.dtype.kind not in "biuf":
        raise _error(where, what, path, f"has dtype {data.dtype}; give an integer label map")
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        raise _error(where, what, path, "holds non-integer values; give an integer label map or a 4-D "
                                       "file with one channel per label")
    return _map_with_landmarks(data.astype(np.int64), landmark_labels, what, path, where)


def read_label_map(path: str | Path, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One label file as the harness reads it (module docstring: a 3-D integer map, or a 4-D
    one-hot file painted as labels 1..C), on its image's grid.

    Args:
        path: the label file.
        where: whose file it is, for error messages (e.g. "volume s0001").
        shape: its image's (D, H, W); a label file of another shape is refused. None: any.

    Returns:
        (D, H, W) int64 label map.
    """
    return _label_file(Path(path), "labels", where, shape, ()).volume


def _map_with_landmarks(labels: np.ndarray, landmark_labels: tuple[int, ...], what: str, path: Path,
                        where: str) -> _Labels:
    regions = {label: labels == label for label in landmark_labels}
    if landmark_labels:
        labels = np.where(np.isin(labels, landmark_labels), 0, labels)
    return _with_landmarks(labels, regions, what, path, where)


def _with_landmarks(labels: np.ndarray, regions: dict[int, np.ndarray | None], what: str, path: Path,
                    where: str) -> _Labels:
    centroids = []
    for label, region in regions.items():
        centre = None if region is None else _centroid(region)
        if centre is None:
            raise _error(where, what, path, f"has no label {label} (landmark_labels); remove it from "
                                           f"this pair's landmark_labels")
        centroids.append(centre)
    return _Labels(labels, np.asarray(centroids, dtype=np.float64).reshape(-1, 3))


def read_mask_folder(folder: str | Path, names: Sequence[str], where: str, shape: tuple[int, ...]) -> np.ndarray:
    """A folder of binary masks ``<name>.nii.gz`` (TotalSegmentator ``segmentations/``) painted
    as one label map: ``names[i]`` becomes label i + 1 (a later name wins where masks overlap);
    names without a file stay unlabelled, files not in ``names`` are ignored.

    Returns:
        (D, H, W) int64 label map on the image's grid ``shape``.
    """
    files = _mask_files(Path(folder))
    painted = np.zeros(shape, dtype=np.int64)
    for label, name in enumerate(names, start=1):
        if name in files:
            painted[_mask(files[name], "label mask", where, shape)] = label
    return painted


def mask_names(folder: str | Path) -> list[str]:
    """The mask names (file stems) of a folder of NIfTI masks, sorted."""
    return sorted(_mask_files(Path(folder)))


def _mask_files(folder: Path) -> dict[str, Path]:
    return {nifti_stem(p.name): p for p in sorted(folder.iterdir()) if p.name.endswith(NIFTI)}


def _organ_labels(spec: PairSpec, shapes: tuple[tuple[int, ...], tuple[int, ...]]
                  ) -> tuple[_Labels, _Labels, dict[int, str]]:
    folders = (spec.fixed_labels, spec.moving_labels)
    files = [_mask_files(folder) for folder in folders]
    painted = [np.zeros(shape, dtype=np.int64) for shape in shapes]
    names: dict[int, str] = {}
    for organ in sorted(set(files[0]) & set(files[1])):
        masks = []
        for side, shape in zip(files, shapes):
            data = _squeezed(_read(side[organ], "label mask", spec.where), "label mask", side[organ],
                             spec.where)
            _check_shape(data, shape, "label mask", side[organ], spec.where)
            masks.append(data != 0)
        if masks[0].any() and masks[1].any():
            names[len(names) + 1] = organ
            for volume, mask in zip(painted, masks):
                volume[mask] = len(names)
    if not names:
        raise SynthgenError(f"pair {spec.name}: label folders {folders[0]} and {folders[1]} share no "
                            f"organ that is non-empty in both; check the folders")
    fixed, moving = (_map_with_landmarks(volume, spec.landmark_labels, "labels", folder, spec.where)
                     for volume, folder in zip(painted, folders))
    return fixed, moving, names


def _both(spec: PairSpec, field: str) -> tuple[Path, Path] | None:
    fixed, moving = getattr(spec, f"fixed_{field}"), getattr(spec, f"moving_{field}")
    if (fixed is None) != (moving is None):
        raise SynthgenError(f"pair {spec.name}: only one of fixed_{field} and moving_{field} is given; "
                            f"give both or neither")
    return None if fixed is None else (fixed, moving)


def _labels(spec: PairSpec, shapes: tuple[tuple[int, ...], tuple[int, ...]]
            ) -> tuple[_Labels, _Labels, dict[int, str] | None] | None:
    paths = _both(spec, "labels")
    if paths is None:
        if spec.landmark_labels:
            raise SynthgenError(f"pair {spec.name}: landmark_labels needs fixed_labels and "
                                f"moving_labels; add them or clear landmark_labels")
        return None
    folders = [p.is_dir() for p in paths]
    if all(folders):
        return _organ_labels(spec, shapes)
    if any(folders):
        raise SynthgenError(f"pair {spec.name}: one of {paths[0]} and {paths[1]} is a folder of masks "
                            f"and the other is not; give two label files or two mask folders")
    fixed = _label_file(paths[0], "fixed labels", spec.where, shapes[0], spec.landmark_labels)
    moving = _label_file(paths[1], "moving labels", spec.where, shapes[1], spec.landmark_labels)
    names = dict(spec.label_names) if spec.label_names else None
    return fixed, moving, names


def _label_ids(spec: PairSpec, fixed: np.ndarray, moving: np.ndarray) -> tuple[int, ...]:
    present = np.union1d(np.unique(fixed), np.unique(moving))
    present = present[present != 0]
    if spec.labels is None:
        if spec.label_names is not None:  # a dataset.json's list: what Learn2Reg's config scores
            present = present[np.isin(present, list(spec.label_names))]
        return tuple(int(v) for v in present)
    absent = sorted(set(spec.labels) - {int(v) for v in present})
    if absent:
        raise SynthgenError(f"pair {spec.name}: label(s) {', '.join(map(str, absent))} are in neither "
                            f"label map; remove them from the pair's labels (present: "
                            f"{' '.join(map(str, present.tolist())) or 'none'})")
    return spec.labels


def _landmarks(spec: PairSpec, labels: tuple[_Labels, _Labels, dict[int, str] | None] | None
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """(fixed, moving) landmarks in their own images' voxel coordinates, or None."""
    paths = _both(spec, "landmarks")
    sides = [[], []]
    if paths is not None:
        sides = [[_points(paths[0], "fixed landmarks", spec.where)],
                 [_points(paths[1], "moving landmarks", spec.where)]]
    if labels is not None and spec.landmark_labels:
        sides[0].append(labels[0].landmarks)
        sides[1].append(labels[1].landmarks)
    if not sides[0]:
        return None
    fixed, moving = np.concatenate(sides[0]), np.concatenate(sides[1])
    if fixed.shape != moving.shape:
        raise SynthgenError(f"pair {spec.name}: {len(fixed)} fixed landmarks but {len(moving)} moving "
                            f"ones; landmark files must list corresponding points row by row")
    return fixed, moving
