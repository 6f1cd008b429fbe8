"""`synthgen templates build|list|preview` through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthgen.cli import main
from synthgen.templates import open_bank
from tests.helpers import run_main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_list_and_preview_the_default_bank(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_main(main, capsys, "templates", "list", "default")
    assert code == 0 and "source procedural" in out and "tube" in out and "shell" in out
    png = tmp_path / "bank.png"
    code, out, _ = run_main(main, capsys, "templates", "preview", "default", "--out", str(png), "--count", "12")
    assert code == 0 and png.stat().st_size > 1000


@pytest.mark.skipif(not (SHARED_DATA / "synthseg-label-maps").exists(), reason="shared data absent")
def test_build_a_combined_bank_then_generate_with_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "training_seg_01.nii.gz").symlink_to(SHARED_DATA / "synthseg-label-maps" / "training_seg_01.nii.gz")
    bank = tmp_path / "real.zarr"
    code, out, err = run_main(main, capsys, "templates", "build", "--totalsegmentator",
                              str(SHARED_DATA / "totalsegmentator-mini"), "--label-maps", str(maps),
                              "--out", str(bank), "--spacing", "2", "--workers", "1", "--quiet")
    assert code == 0 and "built 4 subjects" in out, err
    code, out, _ = run_main(main, capsys, "templates", "list", str(bank))
    assert code == 0 and "source totalsegmentator+label-maps" in out and "4 subjects" in out
    names = set(open_bank(str(bank)).entries.name.tolist())
    assert {"liver", "2", "17"} <= names  # an organ, cerebral white matter, a hippocampus
    data = tmp_path / "brain-ensembles.zarr"
    code, out, err = run_main(main, capsys, "generate", "--engine", "label-ensemble", "--templates", str(bank), "--n", "2",
                         "--size", "32", "--store", "labels", "--backend", "local", "--quiet", "--out", str(data))
    assert code == 0, err
    code, out, _ = run_main(main, capsys, "info", str(data))
    assert code == 0 and "labels" in out and "derived" in out


@pytest.mark.parametrize("argv, needle", [
    (("templates", "build", "--totalsegmentator", "/nonexistent/ts", "--out", "{tmp}/b.zarr"), "/nonexistent/ts"),
    (("templates", "list", "{tmp}"), "is not a synthgen template bank"),
    (("templates", "preview", "{tmp}", "--out", "{tmp}/p.png"), "is not a synthgen template bank"),
    (("templates", "build", "--label-maps", "{tmp}", "--out", "{tmp}/b.zarr", "--spacing", "-1"), "spacing"),
    (("templates", "build", "--out", "{tmp}/b.zarr"), "--totalsegmentator DIR, --label-maps DIR, or both"),
])
def test_templates_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                         argv: tuple[str, ...], needle: str) -> None:
    code, _, err = run_main(main, capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert code != 0 and len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err
    assert not (tmp_path / "b.zarr").exists() and not (tmp_path / "p.png").exists()
