"""Human-readable views of a template bank: a text summary (``synthgen templates list``) and a
PNG grid of templates (``synthgen templates preview``)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synthgen.errors import SynthgenError
from synthgen.preview import BACKGROUND, GAP_PX, TEXT_COLOUR, label_colours, resize_nearest, save_png
from synthgen.store.output_paths import check_output_path
from synthgen.templates.bank import TemplateBank

PERCENTILES = (0, 5, 25, 50, 75, 95, 100)
NAME_COLUMNS = 3
CELL_PX = 128
CAPTION_PX = 30
COLUMNS = 8
TITLE_PX = 28
FONT_PX = 12


def summarize_bank(bank: TemplateBank) -> str:
    """A multi-line summary: counts, source, spacing, fingerprint, size distributions (foreground
    voxels, bounding-box sides in voxels and mm) and the number of templates per name."""
    entries = bank.entries
    names, counts = np.unique(entries.name.astype(str), return_counts=True)
    spacing = ("native, per subject" if bank.spacing is None
               else "x".join(f"{s:g}" for s in bank.spacing) + " mm")
    lines = [f"{bank.path}: {len(bank)} templates, {len(names)} names, {len(bank.subjects)} subjects; "
             f"source {bank.source}; spacing {spacing}; fingerprint {bank.fingerprint[:12]}"]
    if len(bank):
        header = "/".join("min" if p == 0 else "max" if p == 100 else f"p{p}" for p in PERCENTILES)
        lines.append(f"size distribution ({header}):")
        lines.append(_percentile_line("  foreground voxels", entries.voxels))
        lines.append(_percentile_line("  bbox side, voxels", entries.shape.ravel()))
        lines.append(_percentile_line("  bbox side, mm", (entries.shape * entries.spacing).ravel()))
        lines.append("templates per name:")
        order = sorted(range(len(names)), key=lambda k: (-counts[k], names[k]))
        cells = [f"{names[k]:<28.28} {counts[k]:>5}" for k in order]
        for row in range(0, len(cells), NAME_COLUMNS):
            lines.append("  " + "   ".join(cells[row:row + NAME_COLUMNS]))
    return "\n".join(lines)


def _percentile_line(label: str, values: np.ndarray) -> str:
    return f"{label:<20} " + " / ".join(f"{v:.0f}" for v in np.percentile(values, PERCENTILES))


def depth_shaded_projection(mask: np.ndarray, axis: int = 1) -> np.ndarray:
    """A projection of a (d, h, w) bool mask along ``axis`` shaded by the depth of the first
    voxel hit, so a person sees its 3-D form.

    Returns:
        2-D float32 array of the two other axes (in order), 0 where the ray misses, else in
        [0.35, 1] (1 = nearest).
    """
    hit = mask.any(axis=axis)
    depth = np.argmax(mask, axis=axis).astype(np.float32)
    near, far = (depth[hit].min(), depth[hit].max()) if hit.any() else (0.0, 1.0)
    shade = 1.0 - 0.65 * (depth - near) / max(far - near, 1.0)
    return np.where(hit, shade, 0.0).astype(np.float32)


def render_bank_preview(bank: TemplateBank, out_png: str, count: int = 48) -> str:
    """Write a PNG grid of ``count`` templates spread evenly over the bank's ids; returns
    ``out_png``.

    Each cell shows one template as a depth-shaded projection along array axis 1 (axis 0 across,
    axis 2 up: a coronal view for TotalSegmentator masks in RAS-like voxel order), scaled to fit
    the cell with its physical aspect ratio, coloured by name, captioned with id, name and crop
    shape. Raises SynthgenError for an empty bank, ``count`` < 1, or an unwritable ``out_png``
    (checked before rendering).
    """
    check_output_path(out_png, "PNG", folder=False, example="templates.png")
    if len(bank) == 0:
        raise SynthgenError(f"template bank {bank.path} is empty; there is nothing to preview")
    if count < 1:
        raise SynthgenError(f"count must be at least 1, got {count}")
    ids = np.unique(np.linspace(0, len(bank) - 1, min(count, len(bank))).round().astype(int)).tolist()
    names = sorted(set(bank.entries.name.astype(str)))
    colours = label_colours(len(names) + 1)
    rows = -(-len(ids) // COLUMNS)
    pitch_x, pitch_y = CELL_PX + GAP_PX, CELL_PX + CAPTION_PX + GAP_PX
    canvas = np.zeros((TITLE_PX + rows * pitch_y, min(len(ids), COLUMNS) * pitch_x, 3), dtype=np.uint8)
    for k, (i, mask) in enumerate(zip(ids, bank.masks(ids))):
        colour = colours[names.index(str(bank.entries.name[i])) + 1].astype(np.float32)
        y, x = TITLE_PX + (k // COLUMNS) * pitch_y, (k % COLUMNS) * pitch_x
        canvas[y:y + CELL_PX, x:x + CELL_PX] = _cell(mask, bank.entries.spacing[i], colour)
    image = Image.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=FONT_PX)
    spacing = "native" if bank.spacing is None else "x".join(f"{s:g}" for s in bank.spacing) + " mm"
    draw.text((4, 6), f"{os.path.basename(bank.path.rstrip('/'))}: {len(ids)} of {len(bank)} templates, "
              f"source {bank.source}, spacing {spacing}; projection along axis 1 (axis 0 across, 2 up)",
              fill=TEXT_COLOUR, font=font)
    for k, i in enumerate(ids):
        entry = bank.entries[i]
        y, x = TITLE_PX + (k // COLUMNS) * pitch_y + CELL_PX + 1, (k % COLUMNS) * pitch_x + 2
        draw.text((x, y), f"#{i} {entry.name}"[:21], fill=TEXT_COLOUR, font=font)
        draw.text((x, y + FONT_PX + 2), "x".join(str(n) for n in entry.shape), fill=TEXT_COLOUR, font=font)
    return save_png(image, out_png)


def _cell(mask: np.ndarray, spacing: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(CELL_PX, CELL_PX, 3) uint8: the shaded projection, axis 2 up, fitted with aspect kept."""
    shade = depth_shaded_projection(mask, axis=1).T[::-1]  # rows: axis 2 (top = high), columns: axis 0
    extent_up, extent_across = mask.shape[2] * spacing[2], mask.shape[0] * spacing[0]
    scale = (CELL_PX - 8) / max(extent_up, extent_across)
    height, width = max(1, round(extent_up * scale)), max(1, round(extent_across * scale))
    shade = resize_nearest(shade, height, width)[..., None]
    cell = np.empty((CELL_PX, CELL_PX, 3), dtype=np.uint8)
    cell[:] = BACKGROUND
    top, left = (CELL_PX - height) // 2, (CELL_PX - width) // 2
    cell[top:top + height, left:left + width] = np.where(shade > 0, shade * colour, BACKGROUND).round()
    return cell

