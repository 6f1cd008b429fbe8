"""synthgen-bench register end to end: real NIfTI pairs and synthetic pairs, outputs, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.registration.cli import main
from benchmarks.registration.grid import choose, rank_scores, settings
from benchmarks.registration.report import aggregate
from benchmarks.registration.run import PairResult

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
                 "--overlays", "1", *FAST])
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
