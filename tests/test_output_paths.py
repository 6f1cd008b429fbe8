"""Every command's output path is checked before any work: a parent that is a file, a folder
nothing can be created in, and the wrong kind of path are one-line errors, and nothing is created."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.registration.cli import main as bench_main
from pretrain.cli import main as pretrain_main
from synthgen.cli import main as synthgen_main
from synthgen.errors import SynthgenError
from synthgen.store.output_paths import check_output_path
from tests.helpers import assert_one_line_error, run_main

UNWRITABLE_ROOT = Path("/sys")  # sysfs: nothing can be created at its top, not even by root


def _unwritable_reason() -> str | None:
    """Why no unwritable folder is available here (None: /sys refuses new entries)."""
    if not UNWRITABLE_ROOT.is_dir():
        return f"{UNWRITABLE_ROOT} is not mounted"
    try:
        os.rmdir(tempfile.mkdtemp(dir=UNWRITABLE_ROOT))
    except OSError:
        return None
    return f"{UNWRITABLE_ROOT} accepts new entries on this machine"


UNWRITABLE_REASON = _unwritable_reason()


# (main, prefix of its errors, argv before --out, whether the output is a folder, a file name for it)
Command = tuple[Callable[[Sequence[str]], int], str, Callable[[Path, Path], list[str]], bool, str]


def _label_maps(root: Path) -> Path:
    maps = root / "maps"
    maps.mkdir(exist_ok=True)
    labels = np.zeros((8, 8, 8), dtype=np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    nib.save(nib.Nifti1Image(labels, np.eye(4)), maps / "s1.nii.gz")
    return maps


COMMANDS: dict[str, Command] = {
    "generate": (synthgen_main, "synthgen generate: error:",
                 lambda data, tmp: ["generate", "--engine", "random-shapes", "--n", "2", "--size", "32",
                                    "--backend", "local", "--quiet"], True, "x.zarr"),
    "export": (synthgen_main, "synthgen export: error:",
               lambda data, tmp: ["export", str(data), "--sample", "0"], True, "sample"),
    "preview": (synthgen_main, "synthgen preview: error:",
                lambda data, tmp: ["preview", str(data), "--samples", "0:1"], False, "p.png"),
    "templates build": (synthgen_main, "synthgen templates: error:",
                        lambda data, tmp: ["templates", "build", "--label-maps", str(_label_maps(tmp)),
                                           "--workers", "1", "--quiet"], True, "bank.zarr"),
    "templates preview": (synthgen_main, "synthgen templates: error:",
                          lambda data, tmp: ["templates", "preview", "default"], False, "t.png"),
    "bench register": (bench_main, "synthgen-bench register: error:",
                       lambda data, tmp: ["register", "--pairs", "random-shapes:2,size=32"], True, "results"),
    "pretrain": (pretrain_main, "synthgen-pretrain: error:",
                 lambda data, tmp: ["contrastive", "--data", str(data), "--config", "tiny"], True, "run"),
    "pretrain export": (pretrain_main, "synthgen-pretrain export: error:",
                        lambda data, tmp: ["export", str(tmp / "no-run")], False, "features.pt"),
}


def _run(name: str, capsys: pytest.CaptureFixture[str], argv: list[str], out: Path) -> tuple[int, str]:
    code, _, err = run_main(COMMANDS[name][0], capsys, *argv, "--out", str(out))
    return code, err


@pytest.mark.parametrize("name", list(COMMANDS))
def test_output_under_a_file_is_one_line_and_creates_nothing(name: str, capsys: pytest.CaptureFixture[str],
                                                              small_dataset: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "afile.txt"
    a_file.write_text("keep")
    out = a_file / COMMANDS[name][4]
    argv = COMMANDS[name][2](small_dataset, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = _run(name, capsys, argv, out)
    assert_one_line_error(code, err, str(out), f"{a_file}, which is a file", prefix=COMMANDS[name][1])
    assert a_file.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.skipif(UNWRITABLE_REASON is not None, reason=f"no unwritable folder: {UNWRITABLE_REASON}")
@pytest.mark.parametrize("name", list(COMMANDS))
def test_output_in_an_unwritable_folder_is_one_line_and_creates_nothing(
        name: str, capsys: pytest.CaptureFixture[str], small_dataset: Path, tmp_path: Path) -> None:
    below = UNWRITABLE_ROOT / f"synthgen-test-{uuid.uuid4().hex}"
    out = below / COMMANDS[name][4]
    code, err = _run(name, capsys, COMMANDS[name][2](small_dataset, tmp_path), out)
    assert_one_line_error(code, err, str(out), "cannot be written", f"in {UNWRITABLE_ROOT}",
                          prefix=COMMANDS[name][1])
    assert not below.exists()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_output_of_the_wrong_kind_is_one_line(name: str, capsys: pytest.CaptureFixture[str],
                                              small_dataset: Path, tmp_path: Path) -> None:
    folder_wanted = COMMANDS[name][3]
    out = tmp_path / "taken"
    if folder_wanted:
        out.write_text("keep")
    else:
        out.mkdir()
    code, err = _run(name, capsys, COMMANDS[name][2](small_dataset, tmp_path), out)
    assert_one_line_error(code, err, str(out), "is a file; give a folder path" if folder_wanted
                          else "is a directory; give a file path", prefix=COMMANDS[name][1])
    assert (out.read_text() == "keep") if folder_wanted else not any(out.iterdir())


def test_the_check_leaves_nothing_behind_and_passes_urls(tmp_path: Path) -> None:
    check_output_path(tmp_path / "new" / "deeper.zarr", "dataset", folder=True, example=".zarr")
    check_output_path(tmp_path, "dataset", folder=True, example=".zarr")
    check_output_path(tmp_path / "p.png", "PNG", folder=False, example="p.png")
    assert not any(tmp_path.iterdir())
    for url in ("s3://bucket/x.zarr", "filecache::s3://bucket/x.zarr", f"file://{tmp_path}/a/b.zarr"):
        check_output_path(url, "dataset", folder=True, example=".zarr")
    with pytest.raises(SynthgenError, match="--templates-out .* is a file"):
        (tmp_path / "f").write_text("x")
        check_output_path(tmp_path / "f", "bank", folder=True, example=".zarr", option="--templates-out")
