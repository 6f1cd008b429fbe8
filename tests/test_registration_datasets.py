"""registration.datasets: pair files, grids and alignment, label forms, per-pair errors, real data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from registration import metrics
from registration.datasets import PairSpec, load_pair, read_pairs
from synthgen.errors import SynthgenError

SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
PAIR_FILES = Path(__file__).parents[1] / "benchmarks" / "registration" / "pairs"


def save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def ramp(shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    """An image linear in mm about the grid centre (trilinear resampling reproduces it)."""
    x = np.indices(shape, dtype=np.float64)
    centre = (np.asarray(shape) - 1) / 2
    mm = [(x[i] - centre[i]) * spacing[i] for i in range(3)]
    return (100 + 2 * mm[0] - mm[1] + 0.5 * mm[2]).astype(np.float32)


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
    return path


def one_line_error(spec: PairSpec, *fragments: str) -> str:
    with pytest.raises(SynthgenError) as info:
        load_pair(spec)
    message = str(info.value)
    assert "\n" not in message and spec.name in message
    for fragment in fragments:
        assert fragment in message
    return message


# ---------------------------------------------------------------- grids and alignment


def test_centre_alignment_resamples_a_coarser_larger_moving_grid(tmp_path: Path) -> None:
    fixed = save(tmp_path / "f.nii.gz", ramp((17, 17, 13), (1, 1, 1)))
    moving = save(tmp_path / "m.nii.gz", ramp((11, 9, 9), (2, 2, 2)), np.diag([2.0, 2.0, 2.0, 1.0]))
    pair = load_pair(PairSpec("p", fixed, moving))
    assert pair.moving.shape == (17, 17, 13) and pair.moving.dtype == torch.float32
    assert pair.spacing == (1.0, 1.0, 1.0)
    torch.testing.assert_close(pair.moving, pair.fixed, rtol=0, atol=1e-3)


def test_world_alignment_uses_the_affines_and_centre_ignores_origins(tmp_path: Path) -> None:
    image = ramp((12, 10, 8), (1, 1, 1))
    padded = np.pad(image, ((3, 1), (0, 0), (0, 0)))
    shifted = np.eye(4)
    shifted[0, 3] = -3.0  # padded voxel 3 sits where the fixed voxel 0 does
    fixed = save(tmp_path / "f.nii.gz", image)
    moving = save(tmp_path / "m.nii.gz", padded, shifted)
    world = load_pair(PairSpec("w", fixed, moving, align="world"))
    torch.testing.assert_close(world.moving, world.fixed)
    centre = load_pair(PairSpec("c", fixed, moving, align="centre"))
    torch.testing.assert_close(centre.moving, torch.from_numpy(padded[2:14]))


def test_centre_alignment_honours_flipped_axes(tmp_path: Path) -> None:
    image = ramp((9, 8, 7), (1.5, 1, 1))
    flip = np.diag([-1.5, -1.0, 1.0, 1.0])
    fixed = save(tmp_path / "f.nii.gz", image, np.diag([1.5, 1.0, 1.0, 1.0]))
    moving = save(tmp_path / "m.nii.gz", np.ascontiguousarray(image[::-1, ::-1]), flip)
    pair = load_pair(PairSpec("flip", fixed, moving))
    torch.testing.assert_close(pair.moving, pair.fixed)
    assert pair.spacing == (1.5, 1.0, 1.0)


def test_moving_shift_translates_the_alignment(tmp_path: Path) -> None:
    image = ramp((10, 10, 10), (2, 2, 2))
    fixed = save(tmp_path / "f.nii.gz", image, np.diag([2.0, 2.0, 2.0, 1.0]))
    pair = load_pair(PairSpec("s", fixed, fixed, moving_shift=(0.0, 4.0, 0.0)))
    torch.testing.assert_close(pair.moving[:, :8], torch.from_numpy(image[:, 2:]))
    assert float(pair.moving[:, 8:].abs().max()) == 0.0  # outside the moving volume


def test_npy_images_need_spacing_only_when_shapes_differ(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", ramp((8, 8, 8), (1, 1, 1)))
    np.savez(tmp_path / "m.npz", ramp((8, 8, 8), (1, 1, 1)) + 1)
    np.save(tmp_path / "big.npy", ramp((12, 12, 12), (1, 1, 1)))
    pair = load_pair(PairSpec("same", tmp_path / "f.npy", tmp_path / "m.npz"))
    assert pair.spacing == (1.0, 1.0, 1.0)
    torch.testing.assert_close(pair.moving, pair.fixed + 1)
    one_line_error(PairSpec("nospacing", tmp_path / "f.npy", tmp_path / "big.npy"), "fixed_spacing")
    given = load_pair(PairSpec("given", tmp_path / "f.npy", tmp_path / "big.npy",
                               fixed_spacing=(1.5, 1.5, 1.5), moving_spacing=(1.0, 1.0, 1.0)))
    assert given.spacing == (1.5, 1.5, 1.5)
    torch.testing.assert_close(given.moving, torch.from_numpy(ramp((8, 8, 8), (1.5, 1.5, 1.5))),
                               rtol=0, atol=1e-3)
    one_line_error(PairSpec("world", tmp_path / "f.npy", tmp_path / "big.npy", align="world",
                            fixed_spacing=(1, 1, 1), moving_spacing=(1, 1, 1)), "NIfTI affines")


# ---------------------------------------------------------------- labels and landmarks


def test_label_maps_landmarks_and_the_labels_option(tmp_path: Path) -> None:
    fixed_labels = np.zeros((12, 12, 12), dtype=np.int16)
    fixed_labels[2:6, 2:6, 2:6] = 1
    fixed_labels[7:10, 2:5, 2:5] = 4
    fixed_labels[8, 8, 8] = 9
    moving_labels = np.pad(fixed_labels, ((2, 0), (0, 0), (0, 0)))  # grid centres 1 voxel apart
    image = ramp((12, 12, 12), (1, 1, 1))
    moving = np.pad(image, ((2, 0), (0, 0), (0, 0)))
    paths = [save(tmp_path / name, array) for name, array in (
        ("f.nii.gz", image), ("m.nii.gz", moving), ("fl.nii.gz", fixed_labels), ("ml.nii.gz", moving_labels))]
    np.savetxt(tmp_path / "fk.csv", [[1.0, 2.0, 3.0], [4.5, 5.0, 6.0]], delimiter=",")
    (tmp_path / "mk.csv").write_text("i,j,k\n3,2,3\n6.5,5,6\n")
    spec = PairSpec("labels", *paths, fixed_landmarks=tmp_path / "fk.csv",
                    moving_landmarks=tmp_path / "mk.csv", landmark_labels=(9,))
    pair = load_pair(spec)
    assert pair.fixed_labels.dtype == torch.int64 and pair.label_ids == (1, 4)
    assert 9 not in torch.unique(pair.fixed_labels).tolist()
    np.testing.assert_allclose(pair.fixed_landmarks, [[1, 2, 3], [4.5, 5, 6], [8, 8, 8]])
    # moving grid 14 long, fixed 12: centres 1 voxel apart along axis 0
    np.testing.assert_allclose(pair.moving_landmarks, [[2, 2, 3], [5.5, 5, 6], [9, 8, 8]])
    assert metrics.dice(pair.fixed_labels, pair.moving_labels, pair.label_ids)[1] == pytest.approx(0.75)
    assert load_pair(PairSpec("sel", *paths, labels=(4,))).label_ids == (4,)
    one_line_error(PairSpec("nolabel", *paths, labels=(1, 7)), "label(s) 7", "present: 1 4 9")
    one_line_error(PairSpec("nolandmark", *paths, landmark_labels=(3,)), "no label 3", str(paths[2]))


def test_four_d_labels_become_labels_and_landmark_centroids(tmp_path: Path) -> None:
    channels = np.zeros((10, 10, 10, 3), dtype=np.float64)
    channels[1:8, 1:8, 1:8, 0] = 1.0  # the gland
    channels[2:4, 2:4, 2:4, 1] = 1.0  # landmark region inside it
    channels[6:8, 6:8, 6:8, 2] = 1.0  # a region that overlaps the gland: painted over it
    image = save(tmp_path / "i.nii.gz", ramp((10, 10, 10), (1, 1, 1)))
    labels = save(tmp_path / "l.nii.gz", channels)
    pair = load_pair(PairSpec("fourd", image, image, labels, labels, landmark_labels=(2,)))
    assert pair.label_ids == (1, 3)
    assert int((pair.fixed_labels == 1).sum()) == 7 ** 3 - 8  # landmark channel not painted
    assert int((pair.fixed_labels == 3).sum()) == 8
    np.testing.assert_allclose(pair.fixed_landmarks, [[2.5, 2.5, 2.5]])
    np.testing.assert_allclose(pair.moving_landmarks, [[2.5, 2.5, 2.5]])
    one_line_error(PairSpec("channel", image, image, labels, labels, landmark_labels=(4,)), "no label 4")


def test_mask_folders_match_organs_by_name(tmp_path: Path) -> None:
    shape = (8, 9, 10)
    image = save(tmp_path / "i.nii.gz", ramp(shape, (1, 1, 1)))
    organs = {"liver": (0, 3), "spleen": (3, 5), "kidney_left": (5, 8)}
    for side, present in (("a", ("liver", "spleen", "kidney_left", "empty_here")),
                          ("b", ("liver", "kidney_left", "spleen", "only_b"))):
        folder = tmp_path / side / "segmentations"
        folder.mkdir(parents=True)
        for organ in present:
            mask = np.zeros(shape, dtype=np.uint8)
            lo, hi = organs.get(organ, (0, 0)) if organ != "only_b" else (6, 8)
            if side == "b" and organ == "spleen":
                lo, hi = 0, 0  # empty in b: dropped
            mask[lo:hi] = 1
            save(folder / f"{organ}.nii.gz", mask)
    pair = load_pair(PairSpec("ts", image, image, tmp_path / "a" / "segmentations",
                              tmp_path / "b" / "segmentations"))
    assert pair.label_names == {1: "kidney_left", 2: "liver"}
    assert pair.label_ids == (1, 2)
    assert int((pair.fixed_labels == 2).sum()) == 3 * 9 * 10
    one_line_error(PairSpec("mixed", image, image, tmp_path / "a" / "segmentations", image), "folder of masks")


# ---------------------------------------------------------------- per-pair errors


def test_bad_inputs_fail_with_one_line_naming_pair_and_file(tmp_path: Path) -> None:
    good = save(tmp_path / "g.nii.gz", ramp((6, 6, 6), (1, 1, 1)))
    nan = ramp((6, 6, 6), (1, 1, 1))
    nan[1, 2, 3] = np.nan
    nan_path = save(tmp_path / "nan.nii.gz", nan)
    small_labels = save(tmp_path / "sl.nii.gz", np.zeros((5, 6, 6), dtype=np.uint8))
    fractional = save(tmp_path / "fr.nii.gz", np.full((6, 6, 6), 0.5))
    (tmp_path / "junk.nii.gz").write_bytes(b"garbage")
    four_d = save(tmp_path / "4d.nii.gz", np.zeros((6, 6, 6, 2), dtype=np.float32))
    one_line_error(PairSpec("missing", good, tmp_path / "none.nii.gz"), "none.nii.gz", "does not exist")
    one_line_error(PairSpec("nan", good, nan_path), "nan.nii.gz", "NaN")
    one_line_error(PairSpec("shape", good, good, small_labels, small_labels), "sl.nii.gz", "share one grid")
    one_line_error(PairSpec("fraction", good, good, fractional, fractional), "fr.nii.gz", "non-integer")
    one_line_error(PairSpec("junk", tmp_path / "junk.nii.gz", good), "junk.nii.gz", "cannot be read")
    one_line_error(PairSpec("image4d", four_d, good), "4d.nii.gz", "3-D")
    one_line_error(PairSpec("half", good, good, fixed_labels=good), "moving_labels")
    one_line_error(PairSpec("type", tmp_path / "junk.mha", good), "junk.mha")


# ---------------------------------------------------------------- pair files


def test_csv_pairs_with_relative_paths_and_options(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    save(data / "f.nii.gz", ramp((6, 6, 6), (1, 1, 1)))
    rows = [{"fixed": "data/f.nii.gz", "moving": "data/f.nii.gz", "name": "", "labels": "",
             "align": "", "moving_spacing": ""},
            {"fixed": "data/f.nii.gz", "moving": "data/f.nii.gz", "name": "second", "labels": "1 2",
             "align": "world", "moving_spacing": "1 1 2.5"}]
    specs = read_pairs(write_csv(tmp_path / "pairs.csv", rows))
    assert [s.name for s in specs] == ["f_f", "second"]
    assert specs[0].fixed == (data / "f.nii.gz").resolve() and specs[0].align == "centre"
    assert specs[0].labels is None and specs[1].labels == (1, 2)
    assert specs[1].align == "world" and specs[1].moving_spacing == (1.0, 1.0, 2.5)
    for bad, fragment in (({"align": "nose"}, "align"), ({"labels": "1,2"}, "integer label ids"),
                          ({"moving_spacing": "1 1"}, "three positive"), ({"colour": "red"}, "colour"),
                          ({"name": "f_f"}, "unique name")):
        row = {**rows[1], **bad}
        with pytest.raises(SynthgenError, match=fragment):
            read_pairs(write_csv(tmp_path / "bad.csv", [rows[0], row]))
    with pytest.raises(SynthgenError, match="does not exist"):
        read_pairs(tmp_path / "nothing.csv")


def test_learn2reg_dataset_json(tmp_path: Path) -> None:
    for folder in ("imagesTr", "labelsTr", "keypointsTr"):
        (tmp_path / folder).mkdir()
    for case in ("0001", "0002"):
        labels = np.zeros((8, 8, 8), dtype=np.uint8)
        labels[1:5, 1:5, 1:5] = 1
        labels[5:7, 5:7, 5:7] = 2
        labels[7, 7, 7] = 3  # not in the dataset.json's label list: not scored (as Learn2Reg)
        save(tmp_path / "imagesTr" / f"Task_{case}_0000.nii.gz", ramp((8, 8, 8), (1, 1, 1)))
        save(tmp_path / "labelsTr" / f"Task_{case}_0000.nii.gz", labels)
        np.savetxt(tmp_path / "keypointsTr" / f"Task_{case}_0000.csv", [[1.0, 2.0, 3.0]], delimiter=",")
    dataset = {
        "name": "Task", "tensorImageShape": {"0": [8, 8, 8]}, "modality": {"0": "CT"},
        "labels": {"0": {"0": "background", "1": "liver", "2": "spleen"}},
        "training": [{"image": "./imagesTr/Task_0001_0000.nii.gz", "label": "./labelsTr/Task_0001_0000.nii.gz"},
                     {"image": "./imagesTr/Task_0002_0000.nii.gz"}],
        "registration_val": [{"fixed": "./imagesTr/Task_0001_0000.nii.gz",
                              "moving": "./imagesTr/Task_0002_0000.nii.gz"}],
    }
    path = tmp_path / "Task_dataset.json"
    path.write_text(json.dumps(dataset))
    (spec,) = read_pairs(path)
    assert spec.name == "0001_0002"
    assert spec.moving_labels == (tmp_path / "labelsTr" / "Task_0002_0000.nii.gz").resolve()
    assert spec.fixed_landmarks == (tmp_path / "keypointsTr" / "Task_0001_0000.csv").resolve()
    pair = load_pair(spec)
    assert pair.label_ids == (1, 2) and pair.label_names == {1: "liver", 2: "spleen"}
    np.testing.assert_allclose(pair.moving_landmarks, [[1.0, 2.0, 3.0]])
    with pytest.raises(SynthgenError, match="registration_test"):
        read_pairs(path, split="test")


# ---------------------------------------------------------------- the real data


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data folder absent")
@pytest.mark.parametrize("pair_file, initial_dice, n_labels", [
    ("prostate-mr-us.csv", (0.59, 0.65), 1),
    ("oasis.csv", (0.62, 0.66), 2),
    ("totalsegmentator-mr-ct.csv", (0.2, 0.3), 15),
])
def test_pair_files_load(pair_file: str, initial_dice: tuple[float, float], n_labels: int) -> None:
    specs = read_pairs(PAIR_FILES / pair_file)
    scores, with_landmarks = [], 0
    for spec in specs:
        pair = load_pair(spec)
        assert pair.moving.shape == pair.fixed.shape == pair.fixed_labels.shape == pair.moving_labels.shape
        assert len(pair.label_ids) >= n_labels
        scores.append(metrics.mean_dice(metrics.dice(pair.fixed_labels, pair.moving_labels, pair.label_ids)))
        with_landmarks += pair.fixed_landmarks is not None
    assert initial_dice[0] < np.mean(scores) < initial_dice[1]
    if pair_file.startswith("prostate"):
        assert len(specs) == 10 and with_landmarks == 7
    if pair_file.startswith("totalsegmentator"):
        names = json.loads((SHARED_DATA / "totalsegmentator-mini" / "class_map.json").read_text())
        known = set(names["total"].values()) & set(names["total_mr"].values())
        assert set(pair.label_names.values()) <= known
