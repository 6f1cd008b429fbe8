"""synthgen-bench register end to end: real NIfTI pairs and synthetic pairs, outputs, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import torch
from scipy.ndimage import map_coordinates

from benchmarks.registration.cli import grid_from, main, params_from
from benchmarks.registration.fields import field_name, write_field
from benchmarks.registration.grid import choose, rank_scores, settings
from benchmarks.registration.report import aggregate
from benchmarks.registration.run import PairResult, Registered, score
from benchmarks.registration.sources import BenchPair
from benchmarks.registration.window import apply_window, parse_windows, windowed
from registration.convexadam import ConvexAdamParams
from synthgen.errors import SynthgenError
from registration.datasets import RegistrationPair

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PAIR_FILES = Path(__file__).resolve().parents[1] / "benchmarks" / "registration" / "pairs"
FAST = ["--set", "niter=10", "--set", "grid_sp=4", "--set", "disp_hw=3"]


def _blob_pair(shift: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A smooth textured image with two labelled boxes, and its labels, shifted along axis 0."""
    shape = (32, 32, 32)
    labels = np.zeros(shape, dtype=np.int16)
    labels[8 + shift:18 + shift, 8:20, 6:26] = 1
    labels[16 + shift:26 + shift, 14:28, 10:22] = 2
    image = labels.astype(np.float32) * 0.4 + 0.05 * rng.standard_normal(shape).astype(np.float32)
    return image, labels


def _save(array: np.ndarray, path: Path) -> str:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path.name


@pytest.fixture()
def nifti_pairs(tmp_path: Path) -> Path:
    """A pairs CSV over three real NIfTI pairs; the second has a NaN in its moving image."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(3):
        fixed, fixed_labels = _blob_pair(0, rng)
        moving, moving_labels = _blob_pair(2, rng)
        if k == 1:
            moving[3, 3, 3] = np.nan
        rows.append({"name": f"p{k}",
                     "fixed": _save(fixed, tmp_path / f"f{k}.nii.gz"),
                     "moving": _save(moving, tmp_path / f"m{k}.nii.gz"),
                     "fixed_labels": _save(fixed_labels, tmp_path / f"fl{k}.nii.gz"),
                     "moving_labels": _save(moving_labels, tmp_path / f"ml{k}.nii.gz")})
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_register_scores_pairs_and_reports_the_bad_one(nifti_pairs: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results"
    code = main(["register", "--pairs", str(nifti_pairs), "--features", "mind", "--out", str(out),
                 "--overlays", "1", "--save-fields", *FAST])
    assert code == 1
    err = capsys.readouterr().err
    assert "p1" in err and "NaN" in err and "1 of 3 pairs failed" in err
    rows = {row["name"]: row for row in _rows(out / "pairs.csv")}
    assert set(rows) == {"p0", "p1", "p2"}
    assert rows["p1"]["error"] and rows["p1"]["dice"] == ""
    for name in ("p0", "p2"):
        assert float(rows[name]["dice"]) > float(rows[name]["dice_initial"]) + 0.05
        assert float(rows[name]["fold_pct"]) >= 0.0 and float(rows[name]["seconds"]) > 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scores"]["dice"]["n"] == 2
    assert summary["failed"][0]["name"] == "p1"
    assert summary["params"]["niter"] == 10
    assert (out / "dice_boxplot.png").stat().st_size > 0
    assert sorted(p.name for p in out.glob("overlay_*.png")) == ["overlay_p0.png"]
    assert sorted(p.name for p in (out / "fields").iterdir()) == ["disp_p0.nii.gz", "disp_p2.nii.gz"]


def test_existing_results_are_kept_without_overwrite(nifti_pairs: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    assert main(["register", "--pairs", str(nifti_pairs), "--out", str(out), *FAST]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == "{}"


@pytest.mark.parametrize("argv, message", [
    (["--features", "nosuch"], "nosuch"),
    (["--set", "nosuch=1"], "grid_sp"),
    (["--features", "ckpt:/nonexistent/model.pt"], "/nonexistent/model.pt"),
    (["--preset", "nosuch"], "anatomix"),
    (["--set", "cost_reduction=mean"], "mean12"),
    (["--intensity-window=-450"], "LOW,HIGH"),
    (["--intensity-window", "450,-450"], "LOW < HIGH"),
    (["--intensity-window", "ct:-450,450"], "fixed:"),
    (["--intensity-window=-1,1", "--intensity-window", "moving:0,1"], "already has a window"),
    (["--grid", "--grid-values", "cost_reduction=mean12,max"], "cost_reduction"),
    (["--grid", "--grid-values", "disp_hw=1,0"], "disp_hw"),
])
def test_bad_options_fail_before_any_pair(nifti_pairs: Path, tmp_path: Path, argv: list[str],
                                          message: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results"
    assert main(["register", "--pairs", str(nifti_pairs), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (out / "pairs.csv").exists()


def test_missing_pairs_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["register", "--pairs", str(tmp_path / "none.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_synthetic_pairs_report_endpoint_error(tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = main(["register", "--pairs", "random-shapes:2,size=32", "--out", str(out),
                 "--overlays", "0", *FAST])
    assert code == 0
    rows = _rows(out / "pairs.csv")
    assert [row["name"] for row in rows] == ["random-shapes-s1000-0", "random-shapes-s1000-1"]
    for row in rows:
        assert float(row["epe"]) < float(row["epe_initial"])
        assert float(row["dice"]) > float(row["dice_initial"])


def test_grid_search_chooses_on_validation_pairs(tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = main(["register", "--pairs", "random-shapes:3,size=32", "--out", str(out), "--grid",
                 "--val-count", "1", "--grid-values", "lambda_weight=0.5,2", "--overlays", "0", *FAST])
    assert code == 0
    grid_rows = _rows(out / "grid.csv")
    assert [float(r["lambda_weight"]) for r in grid_rows] == [0.5, 2.0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grid"]["validation"] == ["random-shapes-s1000-0"]
    assert summary["params"]["lambda_weight"] == summary["grid"]["chosen"]["lambda_weight"]
    assert [r["name"] for r in _rows(out / "pairs.csv")] == ["random-shapes-s1000-1",
                                                             "random-shapes-s1000-2"]


def test_rank_scores_and_choice() -> None:
    assert rank_scores([0.5, 0.9, 0.7], higher_is_better=True).tolist() == [0.1, 1.0, 0.55]
    assert rank_scores([3.0, math.nan, 1.0], higher_is_better=False).tolist() == [0.55, 0.1, 1.0]
    best, _ = choose([{"dice": {"mean": 0.7, "30": 0.6}, "sdlogj": {"mean": 0.1}},
                      {"dice": {"mean": 0.8, "30": 0.7}, "sdlogj": {"mean": 0.2}},
                      {"dice": {"mean": 0.6, "30": 0.5}, "sdlogj": {"mean": 0.3}}])
    assert best == 1
    assert settings({"a": (1, 2), "b": (3,)}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]


def test_aggregate_uses_learn2reg_quantiles() -> None:
    results = [PairResult(f"p{k}", {"dice": d, "sdlogj": s}) for k, (d, s) in
               enumerate([(0.5, 0.1), (0.7, 0.2), (0.9, 0.3), (math.nan, 0.4)])]
    summary = aggregate(results)
    assert summary["dice"]["n"] == 3 and summary["dice"]["mean"] == pytest.approx(0.7)
    assert summary["dice"]["30"] == pytest.approx(np.quantile([0.5, 0.7, 0.9], 0.3))
    assert summary["sdlogj"]["30"] == pytest.approx(np.quantile([0.1, 0.2, 0.3, 0.4], 0.7))


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not beside the project")
def test_prostate_pairs_register(tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = main(["register", "--pairs", str(PAIR_FILES / "prostate-mr-us.csv"), "--limit", "2",
                 "--out", str(out), "--overlays", "1", "--set", "niter=20"])
    assert code == 0
    rows = _rows(out / "pairs.csv")
    assert len(rows) == 2
    for row in rows:
        assert 0.0 <= float(row["dice"]) <= 1.0 and row["tre"] != ""
    assert len(list(out.glob("overlay_*.png"))) == 1


def _learn2reg_dataset(root: Path, affine: np.ndarray) -> Path:
    """A Learn2Reg-layout dataset (imagesTr, labelsTr, dataset.json) with one validation pair."""
    rng = np.random.default_rng(1)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for case, shift in (("0001", 0), ("0002", 2)):
        image, labels = _blob_pair(shift, rng)
        nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / f"Task_{case}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(labels, affine), str(root / "labelsTr" / f"Task_{case}_0000.nii.gz"))
    dataset = {"name": "Task", "labels": {"0": {"0": "background", "1": "a", "2": "b"}},
               "registration_val": [{"fixed": "./imagesTr/Task_0001_0000.nii.gz",
                                     "moving": "./imagesTr/Task_0002_0000.nii.gz"}]}
    path = root / "Task_dataset.json"
    path.write_text(json.dumps(dataset))
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # surface_distance's scipy.ndimage.filters
def test_saved_fields_are_learn2reg_files_that_reproduce_the_scores(tmp_path: Path) -> None:
    affine = np.array([[0.0, 0.0, -2.0, 30.0], [1.5, 0.0, 0.0, -4.0], [0.0, 1.5, 0.0, 7.0],
                       [0.0, 0.0, 0.0, 1.0]])
    dataset = _learn2reg_dataset(tmp_path / "data", affine)
    out = tmp_path / "results"
    assert main(["register", "--pairs", str(dataset), "--out", str(out), "--overlays", "0",
                 "--save-fields", *FAST]) == 0
    (row,) = _rows(out / "pairs.csv")
    # both images are modality 0000: the long name, the one Learn2Reg's evaluation.py accepts
    assert sorted(p.name for p in (out / "fields").iterdir()) == ["disp_0001_0000_0002_0000.nii.gz"]
    saved = nib.load(out / "fields" / "disp_0001_0000_0002_0000.nii.gz")
    np.testing.assert_allclose(saved.affine, affine)
    disp = saved.get_fdata()
    assert disp.shape == (32, 32, 32, 3) and saved.get_data_dtype() == np.float32
    assert np.abs(disp).max() > 0.5
    # Learn2Reg's evaluation.py: warp the moving labels by the file, then compute_dice
    fixed = nib.load(tmp_path / "data" / "labelsTr" / "Task_0001_0000.nii.gz").get_fdata()
    moving = nib.load(tmp_path / "data" / "labelsTr" / "Task_0002_0000.nii.gz").get_fdata()
    identity = np.meshgrid(*(np.arange(n) for n in fixed.shape), indexing="ij")
    warped = map_coordinates(moving, identity + disp.transpose(3, 0, 1, 2), order=0)
    dice = [2 * ((fixed == i) & (warped == i)).sum() / ((fixed == i).sum() + (warped == i).sum())
            for i in (1, 2)]
    assert float(row["dice"]) == pytest.approx(np.mean(dice), abs=1e-5)
    reference = pytest.importorskip("surface_distance")  # Learn2Reg's compute_hd95, in mm here
    hd95 = [reference.compute_robust_hausdorff(reference.compute_surface_distances(
        fixed == i, warped == i, (1.5, 1.5, 2.0)), 95.0) for i in (1, 2)]
    assert float(row["hd95"]) == pytest.approx(np.mean(hd95), rel=1e-5)


def test_write_field_round_trips_the_harness_field(tmp_path: Path) -> None:
    disp = torch.randn(3, 5, 6, 7)
    write_field(tmp_path / "disp_a.nii.gz", disp, (0.5, 1.0, 2.0), None)
    saved = nib.load(tmp_path / "disp_a.nii.gz")
    np.testing.assert_array_equal(np.asarray(saved.dataobj), disp.permute(1, 2, 3, 0).numpy())
    np.testing.assert_allclose(saved.affine, np.diag([0.5, 1.0, 2.0, 1.0]))
    assert [p.name for p in tmp_path.iterdir()] == ["disp_a.nii.gz"]  # no partial file left


def test_field_names_follow_the_learn2reg_evaluation() -> None:
    def images(fixed: str, moving: str) -> tuple[Path, Path]:
        return Path("imagesTr") / fixed, Path("imagesTr") / moving

    assert field_name("x", images("Lung_0003_0000.nii.gz", "Lung_0003_0001.nii.gz")) == "disp_0003_0003.nii.gz"
    assert field_name("x", images("OASIS_0001_0000.nii.gz", "OASIS_0002_0000.nii.gz")) == \
        "disp_0001_0000_0002_0000.nii.gz"
    assert field_name("x", images("MRCT_0001_0001.nii.gz", "MRCT_0001_0000.nii.gz")) == \
        "disp_0001_0001_0001_0000.nii.gz"
    assert field_name("case 7/a", images("us.nii.gz", "mr.nii.gz")) == "disp_case_7_a.nii.gz"
    assert field_name("random-shapes-s1000-0") == "disp_random-shapes-s1000-0.nii.gz"


def test_pairs_that_would_share_a_field_file_fail_before_any_pair(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(2)
    for case in ("0001", "0002"):
        _save(_blob_pair(0, rng)[0], tmp_path / f"T_{case}_0000.nii.gz")
    (tmp_path / "pairs.csv").write_text("name,fixed,moving\n"
                                        "a,T_0001_0000.nii.gz,T_0002_0000.nii.gz\n"
                                        "b,T_0001_0000.nii.gz,T_0002_0000.nii.gz\n")
    out = tmp_path / "results"
    assert main(["register", "--pairs", str(tmp_path / "pairs.csv"), "--out", str(out),
                 "--save-fields", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "disp_0001_0000_0002_0000.nii.gz" in err and len(err.splitlines()) == 1
    assert not (out / "pairs.csv").exists()


def test_a_label_the_warp_wipes_out_counts_as_dice_0_and_hd95_inf() -> None:
    labels = torch.zeros(16, 16, 16, dtype=torch.int64)
    labels[4:10, 4:10, 4:10] = 1
    labels[13:15, 13:15, 13:15] = 2
    pair = RegistrationPair("p", fixed=labels.float(), moving=labels.float(), spacing=(1.0, 1.0, 1.0),
                            fixed_labels=labels, moving_labels=labels.clone(), label_ids=(1, 2))
    disp = torch.zeros(3, 16, 16, 16)
    disp[:, 12:, 12:, 12:] = -12.0  # label 2 reads background: the warp wipes it out
    result = score(Registered(BenchPair(pair), disp, 0.0, 0.0), {})
    assert result.label_dice[2] == 0.0 and result.label_dice[1] == 1.0
    assert result.scores["dice"] == 0.5  # Learn2Reg's mean; judged after warping it would be 1.0
    assert math.isinf(result.scores["hd95"])


def test_presets_resolve_and_set_overrides_them() -> None:
    assert params_from([]) == ConvexAdamParams()
    anatomix = params_from([], "anatomix")
    assert (anatomix.grid_sp, anatomix.disp_hw, anatomix.ic, anatomix.lambda_weight,
            anatomix.niter, anatomix.grid_sp_adam, anatomix.smooth,
            anatomix.cost_reduction) == (2, 1, True, 0.75, 80, 2, 0, "sum")
    overridden = params_from(["niter=10", "cost_reduction=mean12"], "anatomix")
    assert overridden == ConvexAdamParams(grid_sp=2, disp_hw=1, lambda_weight=0.75, niter=10)


def test_grid_values_reach_the_anatomix_settings() -> None:
    grid = grid_from(["grid_sp=2,4,6", "disp_hw=1,4", "ic=true,false",
                      "cost_reduction=mean12,sum", "lambda_weight=0.75"], ConvexAdamParams())
    assert grid == {"grid_sp": (2, 4, 6), "disp_hw": (1, 4), "ic": (True, False),
                    "cost_reduction": ("mean12", "sum"), "lambda_weight": (0.75,)}
    assert len(settings(grid)) == 24


def test_anatomix_preset_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = main(["register", "--pairs", "random-shapes:1,size=32", "--out", str(out),
                 "--overlays", "0", "--preset", "anatomix", "--set", "niter=10",
                 "--intensity-window", "fixed:0,0.5"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["preset"] == "anatomix"
    assert summary["intensity_window"] == {"fixed": [0.0, 0.5]}
    assert summary["params"] == {"grid_sp": 2, "disp_hw": 1, "lambda_weight": 0.75,
                                 "grid_sp_adam": 2, "niter": 10, "smooth": 0, "ic": True,
                                 "cost_reduction": "sum"}


def test_intensity_window_clips_and_rescales_before_the_features() -> None:
    assert parse_windows(["-450,450"]) == {"fixed": (-450.0, 450.0), "moving": (-450.0, 450.0)}
    assert parse_windows(["moving:-1e3,2e3"]) == {"moving": (-1000.0, 2000.0)}
    for bad in ("-450", "a,b", "1,1", "nan,1", "both:0,1"):
        with pytest.raises(SynthgenError, match="LOW,HIGH"):
            parse_windows([bad])
    hu = torch.tensor([[[-1000.0, -450.0, 0.0, 225.0, 3000.0]]])
    torch.testing.assert_close(apply_window(hu, (-450.0, 450.0)),
                               torch.tensor([[[0.0, 0.0, 0.5, 0.75, 1.0]]]))
    seen = {}

    def extractor(fixed, moving, fixed_mask=None, moving_mask=None):
        seen.update(fixed=fixed, moving=moving, mask=fixed_mask)
        return fixed[None], moving[None]

    mask = torch.ones_like(hu)
    windowed(extractor, parse_windows(["fixed:-450,450"]))(hu, hu * 2, fixed_mask=mask)
    torch.testing.assert_close(seen["fixed"], apply_window(hu, (-450.0, 450.0)))
    assert torch.equal(seen["moving"], hu * 2) and seen["mask"] is mask
    assert windowed(extractor, {}) is extractor
