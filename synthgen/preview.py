"""Tri-planar PNG montage of a range of samples, for a person to look at.

Layout: a two-line title (dataset, engine, seed, shape, spacing), then one row per sample and,
for every displayed field in schema order, three columns: the axial, coronal and sagittal
mid-slices. Displayed fields are the image fields (grey, with the labels field named by their
``overlay`` drawn as a semi-transparent colour fill plus a thin opaque contour) or, for a
dataset without images, the labels fields (opaque colours on black).

Planes follow the NIfTI file written by ``synthgen.export`` (affine diag(spacing), array axes
0, 1, 2 = i, j, k) shown the way a neurological-convention viewer shows them: axial holds axis
2 fixed and shows axis 0 left-to-right and axis 1 bottom-to-top; coronal holds axis 1 fixed
(axis 0 across, axis 2 up); sagittal holds axis 0 fixed (axis 1 across, axis 2 up).

Every cell is a square of ``cell_size(shape, spacing)`` pixels; all planes share one scale in
pixels per mm, so physical aspect ratios (anisotropic spacing) are kept, and slices are
enlarged with nearest-neighbour sampling (never fewer than one pixel per voxel, never less
than ``CELL_MIN_PX`` per cell). The part of a cell outside the volume is ``BACKGROUND``.
Intensities are shown on the fixed window [0, 1] so fixed and moving compare directly.
"""

from __future__ import annotations

import dataclasses

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synthgen.atomic_files import write_atomically
from synthgen.engines.base import FieldSpec
from synthgen.errors import SynthgenError
from synthgen.store.info import DatasetInfo
from synthgen.store.output_paths import check_output_path
from synthgen.store.reader import Dataset

MAX_SAMPLES = 32
CELL_MIN_PX = 128
CELL_MAX_PX = 512
GAP_PX = 4
ROW_HEADER_PX = 56
COLUMN_HEADER_PX = 36
TITLE_PX = 44
OVERLAY_ALPHA = 0.4
BACKGROUND = (32, 36, 48)
TEXT_COLOUR = (230, 230, 230)
FONT_PX = 13

# (name, array axis held fixed, horizontal axis, vertical axis)
PLANES = (("axial", 2, 0, 1), ("coronal", 1, 0, 2), ("sagittal", 0, 1, 2))
AXIS_NAMES = ("D", "H", "W")

# Distinct, saturated colours for labels 1..len; higher labels get golden-ratio hues.
_PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 99, 71),
], dtype=np.uint8)


def render_preview(dataset: Dataset, start: int, stop: int, out: str, *,
                   contours: bool = True) -> str:
    """Write a PNG montage of samples ``[start, stop)`` of ``dataset`` to ``out``; returns ``out``.

    The PNG is RGB, ``ROW_HEADER_PX + 3 * F * (cell + GAP_PX)`` wide and
    ``TITLE_PX + COLUMN_HEADER_PX + (stop - start) * (cell + GAP_PX)`` high, where F is the
    number of displayed fields and ``cell = cell_size(info.shape, info.spacing)``.
    Raises SynthgenError for a range outside ``0..len(dataset)``, more than MAX_SAMPLES
    samples, a dataset with neither image nor labels fields, or an ``out`` that cannot be
    written (a directory, under a file, in a folder that cannot be written), before rendering.
    """
    check_output_path(out, "PNG", folder=False, example="preview.png")
    check_range(start, stop, len(dataset))
    info = dataset.info
    fields = display_fields(dataset.full_schema)
    side = cell_size(info.shape, info.spacing)
    schema = plain_when_shown(dataset.full_schema, fields)
    rows = [_render_row(dataset.sample_with_derived(index), fields, schema, info, side, contours)
            for index in range(start, stop)]
    montage = _assemble(rows, side)
    image = Image.fromarray(montage, mode="RGB")
    _draw_text(image, dataset, fields, range(start, stop), side)
    return save_png(image, out)


def check_range(start: int, stop: int, total: int) -> None:
    """Raise SynthgenError unless ``0 <= start < stop <= total`` and at most MAX_SAMPLES samples."""
    if not 0 <= start < stop <= total:
        raise SynthgenError(
            f"samples {start}:{stop} are out of range; this dataset has samples 0..{total - 1} "
            f"(ask for A:B with 0 <= A < B <= {total})")
    if stop - start > MAX_SAMPLES:
        raise SynthgenError(
            f"samples {start}:{stop} is {stop - start} samples; a preview shows at most "
            f"{MAX_SAMPLES} (e.g. {start}:{start + MAX_SAMPLES})")


def display_fields(schema: dict[str, FieldSpec]) -> list[str]:
    """The columns to draw, in schema order: every image field, plus every labels field that
    is overlaid on several images (a label map shared by two views) or on none."""
    images = [name for name, spec in schema.items() if spec.kind == "image"]
    labels = [name for name, spec in schema.items() if spec.kind == "labels"]
    if not images and not labels:
        raise SynthgenError("this dataset has no image or labels fields, so there is nothing to preview")
    overlays = [schema[name].overlay for name in images]
    return [name for name in schema
            if name in images or (name in labels and overlays.count(name) != 1)]


def plain_when_shown(schema: dict[str, FieldSpec], fields: list[str]) -> dict[str, FieldSpec]:
    """Drop an image's overlay when its labels field has a column of its own, so the image's
    appearance stays visible (a label map shared by two views is drawn once, beside them)."""
    return {name: dataclasses.replace(spec, overlay=None) if spec.overlay in fields else spec
            for name, spec in schema.items()}


def pixels_per_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """One display scale for all planes: at least one pixel per voxel and CELL_MIN_PX per cell,
    at most CELL_MAX_PX per cell."""
    extent = max(n * s for n, s in zip(shape, spacing))
    wanted = max(CELL_MIN_PX / extent, 1.0 / min(spacing))
    return min(wanted, CELL_MAX_PX / extent)


def cell_size(shape: Sequence[int], spacing: Sequence[float]) -> int:
    """Side in pixels of the square cell that holds any plane of a (D, H, W) volume."""
    extent = max(n * s for n, s in zip(shape, spacing))
    return max(1, round(pixels_per_mm(shape, spacing) * extent))


def plane_size(shape: Sequence[int], spacing: Sequence[float], across: int, up: int) -> tuple[int, int]:
    """(height, width) in pixels of the plane spanned by array axes ``across`` and ``up``."""
    scale = pixels_per_mm(shape, spacing)
    return (max(1, round(scale * shape[up] * spacing[up])),
            max(1, round(scale * shape[across] * spacing[across])))


def mid_slice(volume: np.ndarray, fixed: int, across: int, up: int) -> np.ndarray:
    """The middle slice of a (D, H, W) volume along axis ``fixed``, oriented for display:
    (len(up), len(across)) with axis ``up`` increasing towards the top row."""
    plane = np.take(volume, volume.shape[fixed] // 2, axis=fixed)
    if across > up:
        plane = plane.T
    return plane.T[::-1]


def resize_nearest(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resampling of a 2D array (any dtype) to (height, width)."""
    rows = np.minimum(((np.arange(height) + 0.5) * plane.shape[0] / height).astype(np.intp),
                      plane.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * plane.shape[1] / width).astype(np.intp),
                      plane.shape[1] - 1)
    return plane[rows[:, None], cols[None, :]]


def label_colours(count: int) -> np.ndarray:
    """(count, 3) uint8 RGB colour table indexed by label value; row 0 (background) is black.
    Fixed for all datasets, so a label value always has the same colour."""
    table = np.zeros((max(count, 1), 3), dtype=np.uint8)
    known = min(count - 1, len(_PALETTE))
    table[1:1 + known] = _PALETTE[:known]
    extra = np.arange(1 + len(_PALETTE), count)
    table[extra] = _golden_hues(extra)
    return table


def _golden_hues(labels: np.ndarray) -> np.ndarray:
    """(n,) label values -> (n, 3) uint8 saturated colours, hues spaced by the golden ratio and
    brightness alternating between neighbouring labels."""
    hue = (labels * 0.618033988749895) % 1.0
    value = np.where(labels % 2 == 1, 1.0, 0.75)
    saturation = 0.85
    sector = np.floor(hue * 6).astype(np.intp) % 6
    frac = hue * 6 - np.floor(hue * 6)
    p = value * (1 - saturation)
    q = value * (1 - saturation * frac)
    t = value * (1 - saturation * (1 - frac))
    choices = np.stack([np.stack(c, axis=-1) for c in (
        (value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q))])
    rgb = choices[sector, np.arange(len(labels))]
    return np.round(rgb * 255).astype(np.uint8)


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) integer labels -> (H, W, 3) uint8 colours, label 0 black."""
    return label_colours(int(labels.max()) + 1)[labels]


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W) intensities in [0, 1] -> (H, W, 3) uint8 grey."""
    values = np.round(np.clip(image.astype(np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    return np.repeat(values[..., None], 3, axis=-1)


def inner_contour(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: non-zero pixels with a 4-neighbour of another label (1 px wide)."""
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = ((padded[:-2, 1:-1] != centre) | (padded[2:, 1:-1] != centre)
               | (padded[1:-1, :-2] != centre) | (padded[1:-1, 2:] != centre))
    return differs & (centre != 0)


def overlay(rgb: np.ndarray, labels: np.ndarray, contours: bool) -> np.ndarray:
    """Blend label colours over (H, W, 3) uint8 ``rgb`` with OVERLAY_ALPHA where labels != 0, and
    draw their inner contours opaque if ``contours``; returns a new (H, W, 3) uint8 array."""
    colours = colour_labels(labels).astype(np.float32)
    blended = (1.0 - OVERLAY_ALPHA) * rgb.astype(np.float32) + OVERLAY_ALPHA * colours
    result = np.where((labels != 0)[..., None], np.round(blended), rgb).astype(np.uint8)
    if contours:
        edge = inner_contour(labels)
        result[edge] = colours[edge].astype(np.uint8)
    return result


def render_plane(sample: dict[str, np.ndarray], field: str, spec: FieldSpec, info: DatasetInfo,
                 plane: tuple[str, int, int, int], contours: bool) -> np.ndarray:
    """One plane of one field of one sample at display size: (h, w, 3) uint8."""
    _, fixed, across, up = plane
    height, width = plane_size(info.shape, info.spacing, across, up)

    def displayed(name: str) -> np.ndarray:
        return resize_nearest(mid_slice(sample[name], fixed, across, up), height, width)

    if spec.kind == "labels":
        return colour_labels(displayed(field))
    rgb = grey(displayed(field))
    if spec.overlay in sample:
        rgb = overlay(rgb, displayed(spec.overlay), contours)
    return rgb


def _render_row(sample: dict[str, np.ndarray], fields: list[str], schema: dict[str, FieldSpec],
                info: DatasetInfo, side: int, contours: bool) -> list[np.ndarray]:
    return [_in_cell(render_plane(sample, field, schema[field], info, plane, contours), side)
            for field in fields for plane in PLANES]


def _in_cell(rgb: np.ndarray, side: int) -> np.ndarray:
    """Centre an (h, w, 3) plane in a (side, side, 3) cell filled with BACKGROUND."""
    cell = np.empty((side, side, 3), dtype=np.uint8)
    cell[:] = BACKGROUND
    top, left = (side - rgb.shape[0]) // 2, (side - rgb.shape[1]) // 2
    cell[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
    return cell


def _assemble(rows: list[list[np.ndarray]], side: int) -> np.ndarray:
    """Place cells on the montage canvas (black, leaving room for title and headers)."""
    pitch = side + GAP_PX
    width = ROW_HEADER_PX + len(rows[0]) * pitch
    height = TITLE_PX + COLUMN_HEADER_PX + len(rows) * pitch
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for r, cells in enumerate(rows):
        y = TITLE_PX + COLUMN_HEADER_PX + r * pitch
        for c, cell in enumerate(cells):
            x = ROW_HEADER_PX + c * pitch
            canvas[y:y + side, x:x + side] = cell
    return canvas


def _draw_text(image: Image.Image, dataset: Dataset, fields: list[str], indices: range,
               side: int) -> None:
    info = dataset.info
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=FONT_PX)
    for line, text in enumerate(_title_lines(dataset, indices)):
        draw.text((6, 4 + line * (FONT_PX + 6)), text, fill=TEXT_COLOUR, font=font)
    pitch = side + GAP_PX
    columns = [(field, plane) for field in fields for plane in PLANES]
    for c, (field, (name, fixed, _, _)) in enumerate(columns):
        x = ROW_HEADER_PX + c * pitch + 2
        draw.text((x, TITLE_PX), field, fill=TEXT_COLOUR, font=font)
        slice_text = f"{name} {AXIS_NAMES[fixed]}={info.shape[fixed] // 2}"
        draw.text((x, TITLE_PX + FONT_PX + 4), slice_text, fill=TEXT_COLOUR, font=font)
    for r, index in enumerate(indices):
        y = TITLE_PX + COLUMN_HEADER_PX + r * pitch + side // 2 - FONT_PX // 2
        draw.text((6, y), f"#{index}", fill=TEXT_COLOUR, font=font)


def _title_lines(dataset: Dataset, indices: range) -> list[str]:
    info = dataset.info
    shape = "x".join(str(n) for n in info.shape)
    spacing = "x".join(f"{s:g}" for s in info.spacing)
    name = os.path.basename(dataset.path.rstrip("/")) or dataset.path
    return [f"{name}: engine {info.engine}, seed {info.seed}",
            f"samples {indices.start}:{indices.stop} of {len(dataset)}, {shape} voxels (DxHxW), "
            f"{spacing} mm"]


def save_png(image: Image.Image, out: str) -> str:
    """Write ``image`` to the PNG file ``out`` whole (partial file and rename; parent folders are
    created); returns ``out``. Raises SynthgenError (one line) if it cannot be written."""
    try:
        write_atomically(out, lambda partial: image.save(partial, format="PNG"))
    except OSError as err:
        raise SynthgenError(f"cannot write preview {out}: {err.strerror or err}") from err
    return out
