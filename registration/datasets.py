"""Registration pairs: pair files (CSV or a Learn2Reg ``dataset.json``) and loading one pair.

:func:`read_pairs` only parses the pair file (cheap; a malformed file fails as a whole).
:func:`load_pair` does every read for one pair, so a bad pair fails alone with a one-line
:class:`SynthgenError` naming the pair, the file and the fix.

Axes and units. Arrays keep the axis order nibabel returns for the file (NIfTI i, j, k become
the project's D, H, W; nothing is reoriented), and the spacing is the header's voxel size
(``get_zooms()``) along those axes in mm. ``.npy``/``.npz`` files carry no geometry: their
spacing comes from the ``fixed_spacing``/``moving_spacing`` options, else it is unknown (taken as
1 mm when the two images have one shape and no other spacing is known).

One grid. The moving image, labels, mask and landmarks are brought onto the fixed image's grid
when the two grids differ (image trilinear, labels and mask nearest, zero outside the moving
volume; landmarks mapped exactly). The fixed-voxel -> moving-voxel map comes from the pair's
``align`` option:

- ``centre`` (default): each image keeps its orientation and voxel size (the affine's rotation
  and zooms) but not its origin; the two grids' centres coincide. For data whose origins are
  not meaningful (the prostate MR/US pairs).
- ``world``: the NIfTI affines as stored (scanner/world coordinates).

An optional ``moving_shift`` (mm) translates the alignment: a known pre-alignment. When the
map is the identity (same shape, and the same spacing and orientation under
``centre``, or the same affine under ``world``) nothing is resampled.

Labels. A label file lies on its own image's grid: its shape must equal the image's and its
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
keep the other channels' labels). Landmark files, if also given, come first. Landmark files
are CSV (Learn2Reg ``keypointsTr``: N rows "i,j,k" in voxel coordinates of their image, an
optional header line) or ``.npy`` (N, 3).

Learn2Reg ``dataset.json``: the pairs are ``registration_val`` (``split="val"``),
``registration_test`` (``"test"``) or ``training_paired_images`` (``"train"``), each
``{"fixed": ..., "moving": ...}`` with paths relative to the JSON's folder. A pair's labels,
keypoints and masks come from the ``training``/``test`` entry of the same image (``label``,
``keypoints`` or ``landmarks``, ``mask``), else from the sibling folders of ``imagesTr``/
``imagesTs`` (``labelsTr/NAME.nii.gz``, ``keypointsTr/NAME.csv``, ``masksTr/NAME.nii.gz``) when
those files exist. Label names come from ``labels["0"]``. Pairs are named
``{fixed case}_{moving case}`` as Learn2Reg's ``disp_{fix}_{mov}`` (with the modality indices
added when the short names collide).

Intensities are returned as stored (as float32); normalisation belongs to the feature
extractors.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from registration.warp import affine_displacement, warp_image, warp_labels
from synthgen.errors import SynthgenError
from synthgen.templates.nifti import nifti_stem

ALIGNMENTS = ("centre", "world")
SPLITS = {"val": "registration_val", "test": "registration_test", "train": "training_paired_images"}
PATH_COLUMNS = ("fixed", "moving", "fixed_labels", "moving_labels", "fixed_landmarks",
                "moving_landmarks", "fixed_mask", "moving_mask")
OPTION_COLUMNS = ("name", "align", "labels", "landmark_labels", "fixed_spacing", "moving_spacing",
                  "moving_shift")
NIFTI = (".nii", ".nii.gz")
# Nearest-neighbour resampling rounds half to even; grids whose centres are half a voxel apart
# would then take alternately the lower and the upper voxel (duplicated and dropped planes).
# Nudging label coordinates by this much (voxels) resolves every exact tie upwards instead.
TIE_BREAK = 1e-3
Spacing = tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class PairSpec:
    """One pair as a pair file describes it: absolute paths and per-pair options.

    Attributes:
        name: unique name of the pair.
        fixed, moving: image files.
        fixed_labels, moving_labels: label files or mask directories (both or neither).
        fixed_landmarks, moving_landmarks: landmark files (both or neither).
        fixed_mask, moving_mask: binary mask files, each optional.
        align: "centre" or "world" (see the module docstring).
        labels: label ids to evaluate; None evaluates every non-zero id present in either map.
        landmark_labels: label ids whose region centroids become landmarks.
        label_names: names of label ids (from a dataset.json), or None.
        fixed_spacing, moving_spacing: voxel sizes (mm) overriding or supplying the files'.
        moving_shift: a translation (mm, along the fixed image's array axes) added to the
            alignment: fixed position x reads the moving image where ``align`` puts x + shift.
    """

    name: str
    fixed: Path
    moving: Path
    fixed_labels: Path | None = None
    moving_labels: Path | None = None
    fixed_landmarks: Path | None = None
    moving_landmarks: Path | None = None
    fixed_mask: Path | None = None
    moving_mask: Path | None = None
    align: str = "centre"
    labels: tuple[int, ...] | None = None
    landmark_labels: tuple[int, ...] = ()
    label_names: Mapping[int, str] | None = None
    fixed_spacing: Spacing | None = None
    moving_spacing: Spacing | None = None
    moving_shift: Spacing | None = None


@dataclasses.dataclass
class RegistrationPair:
    """A loaded pair, everything on the fixed image's grid.

    Attributes:
        name: the pair's name.
        fixed, moving: (D, H, W) float32 tensors (moving resampled onto the fixed grid).
        spacing: voxel size of the fixed grid, 3 floats in mm.
        fixed_labels, moving_labels: (D, H, W) int64 tensors, or None.
        label_ids: label ids to evaluate.
        label_names: {label id: name}, or None.
        fixed_landmarks, moving_landmarks: (N, 3) float64 voxel coordinates in the fixed grid
            (corresponding rows), or None.
        fixed_mask, moving_mask: (D, H, W) bool tensors, or None.
    """

    name: str
    fixed: torch.Tensor
    moving: torch.Tensor
    spacing: Spacing
    fixed_labels: torch.Tensor | None = None
    moving_labels: torch.Tensor | None = None
    label_ids: Sequence[int] = ()
    label_names: dict[int, str] | None = None
    fixed_landmarks: np.ndarray | None = None
    moving_landmarks: np.ndarray | None = None
    fixed_mask: torch.Tensor | None = None
    moving_mask: torch.Tensor | None = None


# ---------------------------------------------------------------- pair files


def read_pairs(path: str | os.PathLike, *, split: str = "val") -> list[PairSpec]:
    """The pairs of a pairs CSV or of a Learn2Reg ``dataset.json`` (chosen by the suffix).

    CSV columns: ``fixed, moving`` (required), ``fixed_labels, moving_labels, fixed_landmarks,
    moving_landmarks, fixed_mask, moving_mask`` (paths relative to the CSV's folder), and the
    options ``name`` (default ``{fixed stem}_{moving stem}``), ``align`` (centre | world),
    ``labels`` and ``landmark_labels`` (integer ids separated by spaces), ``fixed_spacing`` and
    ``moving_spacing`` (three mm values separated by spaces), ``moving_shift`` (three mm values, see
    :class:`PairSpec`). Empty cells mean "not given".

    Args:
        path: the pair file.
        split: for a dataset.json, "val", "test" or "train" (see the module docstring).

    Raises:
        SynthgenError: missing or malformed file, unknown column, bad option value, duplicate
        pair names.
    """
    path = Path(path)
    if not path.is_file():
        raise SynthgenError(f"pair file {path} does not exist; give a pairs CSV or a Learn2Reg "
                            f"dataset.json")
    specs = _read_json(path, split) if path.suffix.lower() == ".json" else _read_csv(path)
    seen: dict[str, int] = {}
    for k, spec in enumerate(specs):
        if spec.name in seen:
            raise SynthgenError(f"pair file {path}: pairs {seen[spec.name] + 1} and {k + 1} are both "
                                f"named {spec.name!r}; give every pair a unique name (name column)")
        seen[spec.name] = k
    return specs


def _stem(path: Path) -> str:
    stem = nifti_stem(path.name)
    return stem[:-4] if stem.endswith((".npy", ".npz")) else stem


def _read_csv(path: Path) -> list[PairSpec]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, skipinitialspace=True))
            columns = [c.strip() for c in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SynthgenError(f"cannot read pair file {path} ({err}); give a UTF-8 CSV file") from err
    if not rows:
        raise SynthgenError(f"pair file {path} has no pairs; add a header line and one row per pair")
    unknown = [c for c in columns if c not in PATH_COLUMNS + OPTION_COLUMNS]
    missing = [c for c in ("fixed", "moving") if c not in columns]
    if unknown or missing:
        problem = f"unknown column(s) {', '.join(unknown)}" if unknown else f"no {' or '.join(missing)} column"
        raise SynthgenError(f"pair file {path}: {problem}; the columns are {', '.join(PATH_COLUMNS)} "
                            f"and the options {', '.join(OPTION_COLUMNS)}")
    return [_csv_spec(path, k + 1, {key.strip(): (value or "").strip() for key, value in row.items()
                                    if key is not None})
            for k, row in enumerate(rows)]


def _csv_spec(path: Path, row: int, cells: dict[str, str]) -> PairSpec:
    where = f"pair file {path}, row {row}"
    paths = {c: (path.parent / cells[c]).resolve() if cells.get(c) else None for c in PATH_COLUMNS}
    if paths["fixed"] is None or paths["moving"] is None:
        raise SynthgenError(f"{where}: the fixed and moving cells must both be filled")
    name = cells.get("name") or f"{_stem(paths['fixed'])}_{_stem(paths['moving'])}"
    align = cells.get("align") or "centre"
    if align not in ALIGNMENTS:
        raise SynthgenError(f"{where}: align {align!r} is not one of {', '.join(ALIGNMENTS)}")
    labels = _ints(cells.get("labels", ""), where, "labels")
    return PairSpec(name=name, align=align, labels=labels or None,
                    landmark_labels=_ints(cells.get("landmark_labels", ""), where, "landmark_labels"),
                    fixed_spacing=_spacing(cells.get("fixed_spacing", ""), where, "fixed_spacing"),
                    moving_spacing=_spacing(cells.get("moving_spacing", ""), where, "moving_spacing"),
                    moving_shift=_vector(cells.get("moving_shift", ""), where, "moving_shift"),
                    **paths)


def _ints(text: str, where: str, column: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split())
    except ValueError:
        raise SynthgenError(f"{where}: {column} {text!r} must be integer label ids separated by "
                            f"spaces") from None


def _vector(text: str, where: str, column: str, positive: bool = False) -> Spacing | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split())
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and (v > 0 or not positive) for v in values):
        kind = "positive voxel sizes" if positive else "finite values"
        raise SynthgenError(f"{where}: {column} {text!r} must be three {kind} in mm separated by spaces")
    return values  # type: ignore[return-value]


def _spacing(text: str, where: str, column: str) -> Spacing | None:
    return _vector(text, where, column, positive=True)


def _read_json(path: Path, split: str) -> list[PairSpec]:
    if split not in SPLITS:
        raise SynthgenError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SynthgenError(f"cannot read {path} ({err}); give a Learn2Reg dataset.json") from err
    key = SPLITS[split]
    pairs = data.get(key) if isinstance(data, dict) else None
    if not pairs or not all(isinstance(p, dict) and "fixed" in p and "moving" in p for p in pairs):
        raise SynthgenError(f"{path} has no {key} list of {{fixed, moving}} pairs; choose another "
                            f"split ({', '.join(SPLITS)}) or give a Learn2Reg dataset.json")
    root = path.parent
    entries = {os.path.normpath(e["image"]): e for e in data.get("training", []) + data.get("test", [])
               if isinstance(e, dict) and "image" in e}
    names = _label_names(data)
    specs = []
    for pair in pairs:
        fixed, moving = (_l2r_files(root, pair[side], entries) for side in ("fixed", "moving"))
        both = {field: (fixed[field], moving[field]) if fixed[field] and moving[field] else (None, None)
                for field in ("labels", "landmarks")}
        specs.append(PairSpec(
            name="", fixed=fixed["image"], moving=moving["image"],
            fixed_labels=both["labels"][0], moving_labels=both["labels"][1],
            fixed_landmarks=both["landmarks"][0], moving_landmarks=both["landmarks"][1],
            fixed_mask=fixed["mask"], moving_mask=moving["mask"], label_names=names))
    return _l2r_names(specs)


def _label_names(data: dict) -> dict[int, str] | None:
    table = data.get("labels", {})
    table = table.get("0", table) if isinstance(table, dict) else {}
    try:
        names = {int(k): str(v) for k, v in table.items() if int(k) != 0}
    except (ValueError, AttributeError):
        return None
    return names or None


def _l2r_files(root: Path, image: str, entries: dict[str, dict]) -> dict[str, Path | None]:
    """The image of a dataset.json pair and its label, keypoint and mask files (or None)."""
    entry = entries.get(os.path.normpath(image), {})
    image_path = (root / image).resolve()
    files: dict[str, Path | None] = {"image": image_path}
    for field, keys, folder, suffix in (("labels", ("label",), "labels", ".nii.gz"),
                                        ("landmarks", ("keypoints", "landmarks"), "keypoints", ".csv"),
                                        ("mask", ("mask",), "masks", ".nii.gz")):
        given = next((entry[k] for k in keys if entry.get(k)), None)
        if given:
            files[field] = (root / given).resolve()
            continue
        parent = image_path.parent.name
        sibling = (image_path.parent.parent / parent.replace("images", folder, 1)
                   / (_stem(image_path) + suffix)) if parent.startswith("images") else None
        files[field] = sibling if sibling is not None and sibling.exists() else None
    return files


def _l2r_names(specs: list[PairSpec]) -> list[PairSpec]:
    def parts(path: Path) -> tuple[str, str]:
        tokens = _stem(path).split("_")
        return (tokens[-2], tokens[-1]) if len(tokens) >= 3 else (_stem(path), "")

    short = [f"{parts(s.fixed)[0]}_{parts(s.moving)[0]}" for s in specs]
    if len(set(short)) < len(short):
        short = ["_".join(p for p in (*parts(s.fixed), *parts(s.moving)) if p) for s in specs]
    return [dataclasses.replace(s, name=n) for s, n in zip(specs, short)]


# ---------------------------------------------------------------- reading files


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
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _error(pair, what, path, f"cannot be read ({reason}); re-export it as one 3-D "
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


# ---------------------------------------------------------------- geometry


@dataclasses.dataclass
class _Grid:
    shape: tuple[int, int, int]
    spacing: Spacing | None
    affine: np.ndarray | None  # voxel -> world mm, with spacing overrides applied


def _grid(volume: _Volume, shape: tuple[int, ...], override: Spacing | None) -> _Grid:
    spacing = override or volume.zooms
    affine = None
    if volume.affine is not None and spacing is not None:
        linear = volume.affine[:3, :3]
        norms = np.linalg.norm(linear, axis=0)
        direction = linear / np.where(norms > 0, norms, 1.0)
        affine = volume.affine.copy()
        affine[:3, :3] = direction * np.asarray(spacing)
    elif spacing is not None:
        affine = np.diag([*spacing, 1.0])
    return _Grid(tuple(int(n) for n in shape), spacing, affine)  # type: ignore[arg-type]


def _centred(grid: _Grid) -> np.ndarray:
    affine = grid.affine.copy()
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(grid.shape) - 1) / 2.0)
    return affine


def _fixed_to_moving(fixed: _Grid, moving: _Grid, spec: PairSpec, has_affines: bool) -> np.ndarray | None:
    """4x4 map from fixed voxel indices to moving voxel indices; None when it is the identity."""
    if fixed.spacing is None or moving.spacing is None:
        if fixed.shape == moving.shape:
            unit = _Grid(fixed.shape, (1.0, 1.0, 1.0), np.eye(4))
            fixed, moving = unit, unit
        else:
            raise SynthgenError(f"pair {spec.name}: fixed image {fixed.shape} and moving image "
                                f"{moving.shape} differ in shape and the "
                                f"{'fixed' if fixed.spacing is None else 'moving'} one has no spacing "
                                f"(.npy/.npz); give fixed_spacing and moving_spacing, or resample both "
                                f"images to one shape")
    if spec.align == "world":
        if not has_affines:
            raise SynthgenError(f"pair {spec.name}: align=world needs NIfTI affines on both images; use "
                                f"align=centre for .npy/.npz images")
        matrix = np.linalg.solve(moving.affine, fixed.affine)
    else:
        matrix = np.linalg.solve(_centred(moving), _centred(fixed))
    if spec.moving_shift is not None:
        shift = np.eye(4)
        shift[:3, 3] = np.asarray(spec.moving_shift) / np.asarray(fixed.spacing)
        matrix = matrix @ shift
    if fixed.shape == moving.shape and np.allclose(matrix, np.eye(4), atol=1e-5):
        return None
    return matrix


def _to_fixed_points(points: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    if matrix is None:
        return points
    inverse = np.linalg.inv(matrix)
    return points @ inverse[:3, :3].T + inverse[:3, 3]


# ---------------------------------------------------------------- labels


@dataclasses.dataclass
class _Labels:
    volume: np.ndarray  # (D, H, W) int64
    landmarks: np.ndarray  # (K, 3) float64 centroids of the landmark labels, in order


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    coords = np.argwhere(mask)
    return coords.mean(axis=0) if len(coords) else None


def _label_file(path: Path, what: str, pair: str, shape: tuple[int, ...],
                landmark_labels: tuple[int, ...]) -> _Labels:
    volume = _read(path, what, pair)
    data = _squeezed(volume, what, path, pair, ndims=(3, 4))
    _check_shape(data, shape, what, path, pair)
    if data.ndim == 4:
        channels = data.shape[3]
        regions = {label: data[..., label - 1] > 0.5 if 1 <= label <= channels else None
                   for label in landmark_labels}
        painted = np.zeros(shape, dtype=np.int64)
        for c in range(channels):
            if c + 1 not in landmark_labels:
                painted[data[..., c] > 0.5] = c + 1
        return _with_landmarks(painted, regions, what, path, pair)
    if data.dtype.kind not in "biuf":
        raise _error(pair, what, path, f"has dtype {data.dtype}; give an integer label map")
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        raise _error(pair, what, path, "holds non-integer values; give an integer label map or a 4-D "
                                       "file with one channel per label")
    return _map_with_landmarks(data.astype(np.int64), landmark_labels, what, path, pair)


def _map_with_landmarks(labels: np.ndarray, landmark_labels: tuple[int, ...], what: str, path: Path,
                        pair: str) -> _Labels:
    regions = {label: labels == label for label in landmark_labels}
    if landmark_labels:
        labels = np.where(np.isin(labels, landmark_labels), 0, labels)
    return _with_landmarks(labels, regions, what, path, pair)


def _with_landmarks(labels: np.ndarray, regions: dict[int, np.ndarray | None], what: str, path: Path,
                    pair: str) -> _Labels:
    centroids = []
    for label, region in regions.items():
        centre = None if region is None else _centroid(region)
        if centre is None:
            raise _error(pair, what, path, f"has no label {label} (landmark_labels); remove it from "
                                           f"this pair's landmark_labels")
        centroids.append(centre)
    return _Labels(labels, np.asarray(centroids, dtype=np.float64).reshape(-1, 3))


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
            data = _squeezed(_read(side[organ], "label mask", spec.name), "label mask", side[organ],
                             spec.name)
            _check_shape(data, shape, "label mask", side[organ], spec.name)
            masks.append(data != 0)
        if masks[0].any() and masks[1].any():
            names[len(names) + 1] = organ
            for volume, mask in zip(painted, masks):
                volume[mask] = len(names)
    if not names:
        raise SynthgenError(f"pair {spec.name}: label folders {folders[0]} and {folders[1]} share no "
                            f"organ that is non-empty in both; check the folders")
    fixed, moving = (_map_with_landmarks(volume, spec.landmark_labels, "labels", folder, spec.name)
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
    fixed = _label_file(paths[0], "fixed labels", spec.name, shapes[0], spec.landmark_labels)
    moving = _label_file(paths[1], "moving labels", spec.name, shapes[1], spec.landmark_labels)
    names = dict(spec.label_names) if spec.label_names else None
    return fixed, moving, names


def _label_ids(spec: PairSpec, fixed: np.ndarray, moving: np.ndarray) -> tuple[int, ...]:
    present = np.union1d(np.unique(fixed), np.unique(moving))
    present = present[present != 0]
    if spec.labels is None:
        return tuple(int(v) for v in present)
    absent = sorted(set(spec.labels) - {int(v) for v in present})
    if absent:
        raise SynthgenError(f"pair {spec.name}: label(s) {', '.join(map(str, absent))} are in neither "
                            f"label map; remove them from the pair's labels (present: "
                            f"{' '.join(map(str, present.tolist())) or 'none'})")
    return spec.labels


# ---------------------------------------------------------------- one pair


def _mask(path: Path | None, what: str, pair: str, shape: tuple[int, ...]) -> np.ndarray | None:
    if path is None:
        return None
    data = _squeezed(_read(path, what, pair), what, path, pair)
    _check_shape(data, shape, what, path, pair)
    return data != 0


def load_pair(spec: PairSpec) -> RegistrationPair:
    """Read one pair and bring its moving side onto the fixed grid (module docstring).

    Returns:
        A :class:`RegistrationPair`: images float32 (D, H, W), labels int64, masks bool,
        landmarks (N, 3) float64 fixed-grid voxel coordinates.

    Raises:
        SynthgenError: one line naming the pair and the file: missing or unreadable file, a
        non-3-D image, NaN/inf intensities, labels or masks off their image's grid, requested
        labels that do not exist, different shapes without spacing information.
    """
    fixed, fixed_vol = _image(spec.fixed, "fixed image", spec.name)
    moving, moving_vol = _image(spec.moving, "moving image", spec.name)
    shapes = (fixed.shape, moving.shape)
    fixed_grid = _grid(fixed_vol, fixed.shape, spec.fixed_spacing)
    moving_grid = _grid(moving_vol, moving.shape, spec.moving_spacing)
    matrix = _fixed_to_moving(fixed_grid, moving_grid, spec,
                              fixed_vol.affine is not None and moving_vol.affine is not None)
    labels = _labels(spec, shapes)
    masks = (_mask(spec.fixed_mask, "fixed mask", spec.name, shapes[0]),
             _mask(spec.moving_mask, "moving mask", spec.name, shapes[1]))
    landmarks = _landmarks(spec, labels)

    displacement = None if matrix is None else affine_displacement(matrix, fixed.shape)

    def onto_fixed(array: np.ndarray, labels_like: bool) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if displacement is None:
            return tensor
        if labels_like:
            return warp_labels(tensor, displacement + TIE_BREAK, padding="zeros")
        return warp_image(tensor, displacement, padding="zeros")

    spacing = fixed_grid.spacing or moving_grid.spacing or (1.0, 1.0, 1.0)
    pair = RegistrationPair(name=spec.name, fixed=torch.from_numpy(fixed),
                            moving=onto_fixed(moving, False), spacing=tuple(spacing))  # type: ignore[arg-type]
    if labels is not None:
        fixed_labels, moving_labels, names = labels
        pair.fixed_labels = torch.from_numpy(fixed_labels.volume)
        pair.moving_labels = onto_fixed(moving_labels.volume, True)
        pair.label_ids = _label_ids(spec, fixed_labels.volume, moving_labels.volume)
        pair.label_names = names
    if masks[0] is not None:
        pair.fixed_mask = torch.from_numpy(masks[0])
    if masks[1] is not None:
        pair.moving_mask = onto_fixed(masks[1].astype(np.uint8), True).bool()
    if landmarks is not None:
        pair.fixed_landmarks = landmarks[0]
        pair.moving_landmarks = _to_fixed_points(landmarks[1], matrix)
    return pair


def _landmarks(spec: PairSpec, labels: tuple[_Labels, _Labels, dict[int, str] | None] | None
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """(fixed, moving) landmarks in their own images' voxel coordinates, or None."""
    paths = _both(spec, "landmarks")
    sides = [[], []]
    if paths is not None:
        sides = [[_points(paths[0], "fixed landmarks", spec.name)],
                 [_points(paths[1], "moving landmarks", spec.name)]]
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
