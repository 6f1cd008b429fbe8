"""Preview PNG and NIfTI export on a small real dataset written with the store writer."""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from synthgen.engines.base import FieldSpec
from synthgen.errors import SynthgenError
from synthgen.export import export_sample
from synthgen.preview import (BACKGROUND, COLUMN_HEADER_PX, GAP_PX, MAX_SAMPLES, ROW_HEADER_PX,
                              TITLE_PX, check_range, label_colours, render_preview)
from synthgen.cli import main
from synthgen.store import DatasetInfo, open_dataset, prepare_dataset, write_shard
from tests.helpers import assert_one_line_error, flip_chunk_byte, run_main

SHAPE = (20, 24, 28)
SPACING = (2.0, 1.5, 1.0)
NUM_SAMPLES = 3
SHARD_SIZE = 2
CENTRE = (10, 12, 14)
RADIUS = 5
SPHERE_INTENSITY = 0.8
# Largest extent 40 mm; 128 px / 40 mm = 3.2 px/mm (> 1 px per 1 mm voxel), so cells are 128 px.
CELL = 128
SCALE = CELL / 40.0

SCHEMA = {
    "fixed": FieldSpec("float16", SHAPE, "image", "fixed image in [0, 1]", overlay="fixed_labels"),
    "moving": FieldSpec("float16", SHAPE, "image", "moving image in [0, 1]", overlay="moving_labels"),
    "fixed_labels": FieldSpec("uint8", SHAPE, "labels", "labels of the fixed image"),
    "moving_labels": FieldSpec("uint8", SHAPE, "labels", "labels of the moving image"),
    "displacement": FieldSpec("float16", (3, *SHAPE), "displacement", "fixed->moving, voxels"),
}


def label_volume(shift: int) -> np.ndarray:
    """(D, H, W) uint8: a sphere (label 1) and three blocks (labels 2-4), each crossing at least
    one mid-plane, all shifted by ``shift`` voxels along W."""
    d, h, w = np.indices(SHAPE)
    sphere = (d - CENTRE[0]) ** 2 + (h - CENTRE[1]) ** 2 + (w - CENTRE[2] - shift) ** 2 <= RADIUS ** 2
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[3:7, 6:20, 8 + shift:22 + shift] = 2
    labels[12:18, 2:8, 4 + shift:24 + shift] = 3
    labels[8:14, 16:22, 2 + shift:10 + shift] = 4
    labels[sphere] = 1
    return labels


def image_volume(labels: np.ndarray, index: int) -> np.ndarray:
    """(D, H, W) float16: a ramp along W in the background, one intensity per label."""
    ramp = 0.05 + 0.3 * np.arange(SHAPE[2]) / SHAPE[2] + 0.02 * index
    image = np.broadcast_to(ramp, SHAPE).copy()
    for label, value in ((1, SPHERE_INTENSITY), (2, 0.6), (3, 0.5), (4, 0.7)):
        image[labels == label] = value
    return image.astype(np.float16)


def displacement_volume(index: int) -> np.ndarray:
    """(3, D, H, W) float16: a different smooth ramp per component."""
    d, h, w = np.indices(SHAPE, dtype=np.float32)
    return np.stack([0.1 * d + index, -0.05 * h, 0.02 * w * h / SHAPE[1] + 0.5]).astype(np.float16)


def make_sample(index: int) -> dict[str, np.ndarray]:
    fixed_labels, moving_labels = label_volume(0), label_volume(2)
    return {"fixed": image_volume(fixed_labels, index), "moving": image_volume(moving_labels, index),
            "fixed_labels": fixed_labels, "moving_labels": moving_labels,
            "displacement": displacement_volume(index)}


def write_dataset(path: str, schema: dict[str, FieldSpec], num_samples: int = NUM_SAMPLES,
                  shards: tuple[int, ...] | None = None) -> str:
    info = DatasetInfo(engine="test-blocks", config={}, seed=7, num_samples=num_samples,
                       shard_size=SHARD_SIZE, shape=SHAPE, spacing=SPACING, schema=schema,
                       synthgen_version="0.0.test")
    prepare_dataset(path, info)
    for shard in range(info.num_shards) if shards is None else shards:
        start, stop = info.shard_range(shard)
        samples = [make_sample(i) for i in range(start, stop)]
        write_shard(path, info, shard, {f: np.stack([s[f] for s in samples]) for f in schema})
    return path


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_dataset(str(tmp_path_factory.mktemp("data") / "pairs.zarr"), SCHEMA)


def cell_origin(row: int, column: int) -> tuple[int, int]:
    """(y, x) of the top-left pixel of a montage cell."""
    return (TITLE_PX + COLUMN_HEADER_PX + row * (CELL + GAP_PX), ROW_HEADER_PX + column * (CELL + GAP_PX))


def cell(pixels: np.ndarray, row: int, column: int) -> np.ndarray:
    y, x = cell_origin(row, column)
    return pixels[y:y + CELL, x:x + CELL]


def render(dataset_path: str, tmp_path, start: int = 0, stop: int = NUM_SAMPLES) -> np.ndarray:
    out = render_preview(open_dataset(dataset_path), start, stop, str(tmp_path / "preview.png"))
    assert out == str(tmp_path / "preview.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return np.asarray(image)


def test_preview_size_and_content(dataset_path, tmp_path):
    pixels = render(dataset_path, tmp_path)
    columns = 2 * 3  # fixed and moving, three planes each
    assert pixels.shape == (TITLE_PX + COLUMN_HEADER_PX + NUM_SAMPLES * (CELL + GAP_PX),
                            ROW_HEADER_PX + columns * (CELL + GAP_PX), 3)
    for row in range(NUM_SAMPLES):
        for column in range(columns):
            assert cell(pixels, row, column).astype(np.float32).var() > 100.0


def test_preview_overlay_colour_on_labels_and_grey_elsewhere(dataset_path, tmp_path):
    pixels = render(dataset_path, tmp_path)
    grey_sphere = round(np.float32(np.float16(SPHERE_INTENSITY)) * 255)
    expected = np.round(0.6 * grey_sphere + 0.4 * label_colours(2)[1].astype(np.float32))
    for column in (0, 3):  # fixed axial and moving axial: the sphere covers the cell centre
        centre = cell(pixels, 0, column)[CELL // 2, CELL // 2].astype(np.float32)
        np.testing.assert_allclose(centre, expected, atol=1)
    background = cell(pixels, 0, 0)[8, CELL // 2]  # voxel (10, 23, 14): label 0
    assert background[0] == background[1] == background[2]
    assert not np.array_equal(background, BACKGROUND)


def test_preview_keeps_physical_aspect(dataset_path, tmp_path):
    pixels = render(dataset_path, tmp_path)
    inside = np.any(cell(pixels, 0, 0) != BACKGROUND, axis=-1)  # axial: D (40 mm) across, H (36 mm) up
    assert inside.any(axis=0).sum() == round(SCALE * 40)
    assert inside.any(axis=1).sum() == round(SCALE * 36)
    inside = np.any(cell(pixels, 0, 2) != BACKGROUND, axis=-1)  # sagittal: H (36 mm) across, W (28 mm) up
    assert inside.any(axis=0).sum() == round(SCALE * 36)
    assert inside.any(axis=1).sum() == round(SCALE * 28)


def test_preview_labels_only_dataset(tmp_path):
    schema = {name: SCHEMA[name] for name in ("fixed_labels", "moving_labels")}
    path = write_dataset(str(tmp_path / "labels.zarr"), schema)
    pixels = render(path, tmp_path, 1, 3)
    assert pixels.shape == (TITLE_PX + COLUMN_HEADER_PX + 2 * (CELL + GAP_PX),
                            ROW_HEADER_PX + 6 * (CELL + GAP_PX), 3)
    sphere_colour = label_colours(2)[1]
    for column in (0, 3):
        np.testing.assert_array_equal(cell(pixels, 0, column)[CELL // 2, CELL // 2], sphere_colour)


@pytest.mark.parametrize("start, stop", [(2, 5), (-1, 2), (2, 2), (3, 4)])
def test_preview_out_of_range_raises(dataset_path, tmp_path, start, stop):
    out = tmp_path / "preview.png"
    with pytest.raises(SynthgenError, match=r"0\.\.2") as err:
        render_preview(open_dataset(dataset_path), start, stop, str(out))
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_preview_range_limited_to_max_samples():
    check_range(0, MAX_SAMPLES, 100)
    with pytest.raises(SynthgenError, match=f"at most {MAX_SAMPLES}"):
        check_range(0, MAX_SAMPLES + 1, 100)


def test_preview_uncommitted_shard_raises(tmp_path):
    path = write_dataset(str(tmp_path / "partial.zarr"), SCHEMA, shards=(0,))
    with pytest.raises(SynthgenError, match="not committed"):
        render_preview(open_dataset(path), 0, 3, str(tmp_path / "preview.png"))


def test_preview_out_is_directory_raises(dataset_path, tmp_path):
    with pytest.raises(SynthgenError, match="is a directory"):
        render_preview(open_dataset(dataset_path), 0, 1, str(tmp_path))


def test_export_writes_one_nifti_per_field(dataset_path, tmp_path):
    out = tmp_path / "nested" / "sample2"
    paths = export_sample(open_dataset(dataset_path), 2, str(out))
    assert paths == [str(out / f"{name}.nii.gz") for name in SCHEMA] + [str(out / "sample.json")]
    expected = make_sample(2)
    affine = np.diag([*SPACING, 1.0])
    for name, spec in SCHEMA.items():
        image = nib.load(str(out / f"{name}.nii.gz"))
        np.testing.assert_array_equal(image.affine, affine)
        assert image.header.get_zooms()[:3] == pytest.approx(SPACING)
        data = np.asarray(image.dataobj)
        if spec.kind == "labels":
            assert data.dtype == np.uint8 and image.get_data_dtype() == np.uint8
            np.testing.assert_array_equal(data, expected[name])
        elif spec.kind == "image":
            assert data.dtype == np.float32 and data.shape == SHAPE
            np.testing.assert_allclose(data, expected[name].astype(np.float32), rtol=1e-3, atol=1e-3)
        else:
            assert data.dtype == np.float32 and data.shape == (*SHAPE, 3)
            assert image.header.get_intent()[0] == "vector"
            for component in range(3):
                np.testing.assert_array_equal(data[..., component], expected[name][component])


def test_export_manifest(dataset_path, tmp_path):
    export_sample(open_dataset(dataset_path), 1, str(tmp_path / "out"))
    manifest = json.loads((tmp_path / "out" / "sample.json").read_text())
    assert manifest["dataset"] == os.path.abspath(dataset_path)
    assert (manifest["engine"], manifest["seed"], manifest["index"]) == ("test-blocks", 7, 1)
    assert {name: entry["meaning"] for name, entry in manifest["fields"].items()} == \
        {name: spec.meaning for name, spec in SCHEMA.items()}


def test_export_refuses_file_as_out_dir(dataset_path, tmp_path):
    existing = tmp_path / "a-file"
    existing.write_text("keep me")
    for bad in (existing, existing / "below"):
        with pytest.raises(SynthgenError, match="a-file") as err:
            export_sample(open_dataset(dataset_path), 0, str(bad))
        assert "\n" not in str(err.value)
    assert existing.read_text() == "keep me"


def test_export_out_of_range_index_writes_nothing(dataset_path, tmp_path):
    with pytest.raises(SynthgenError, match=r"0\.\.2"):
        export_sample(open_dataset(dataset_path), NUM_SAMPLES, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_preview_and_export_of_a_corrupt_chunk_are_one_line_errors(dataset_path, tmp_path, capsys):
    copy = shutil.copytree(dataset_path, tmp_path / "corrupt.zarr")
    flip_chunk_byte(copy, "fixed", 1)
    needles = (f"shard 0 of field fixed in {copy} is corrupt at sample 1", f"synthgen verify {copy}")
    code, _, err = run_main(main, capsys, "preview", str(copy), "--samples", "0:2", "--out", str(tmp_path / "p.png"))
    assert_one_line_error(code, err, *needles, prefix="synthgen preview: error:")
    code, _, err = run_main(main, capsys, "export", str(copy), "--sample", "1", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, *needles, prefix="synthgen export: error:")
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "out").exists()


def test_export_into_an_earlier_export_needs_overwrite_and_keeps_foreign_files(dataset_path, tmp_path, capsys):
    out = tmp_path / "out"
    export = ("export", "--out", str(out))
    assert run_main(main, capsys, export[0], dataset_path, "--sample", "0", *export[1:])[0] == 0
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_main(main, capsys, export[0], dataset_path, "--sample", "1", *export[1:])
    assert_one_line_error(code, err, f"--out {out} is not empty", "--overwrite", prefix="synthgen export: error:")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    (out / "notes.txt").write_text("mine")
    labels_only = write_dataset(str(tmp_path / "labels.zarr"), {"fixed_labels": SCHEMA["fixed_labels"]})
    code, _, err = run_main(main, capsys, export[0], labels_only, "--sample", "1", *export[1:], "--overwrite")
    assert code == 0, err
    manifest = json.loads((out / "sample.json").read_text())
    assert manifest["index"] == 1 and list(manifest["fields"]) == ["fixed_labels"]
    assert sorted(p.name for p in out.iterdir()) == ["fixed_labels.nii.gz", "notes.txt", "sample.json"]
    assert (out / "notes.txt").read_text() == "mine"
