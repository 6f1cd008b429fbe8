"""The command line: happy path, and every bad input gives one line, non-zero exit, no damage."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from synthgen.cli import main
from tests.conftest import tree_snapshot
from tests.helpers import assert_one_line_error, free_port, run_main


def test_info_verify_happy_path(capsys: pytest.CaptureFixture[str], small_dataset: Path) -> None:
    code, out, _ = run_main(main, capsys, "info", str(small_dataset))
    assert code == 0
    for needle in ("random-shapes", "seed:        3", "3/3 committed", "32 x 32 x 32 voxels at 1 x 1 x 1 mm",
                   "fixed_labels", "uint8", "displacement", "ratio", "num_labels = 16"):
        assert needle in out
    code, out, _ = run_main(main, capsys, "verify", str(small_dataset))
    assert code == 0 and "all 3 shards OK" in out


def test_verify_names_bad_shard(capsys: pytest.CaptureFixture[str], small_dataset: Path) -> None:
    target = next((small_dataset / "moving" / "c" / "2").rglob("*"))
    while target.is_dir():
        target = next(target.iterdir())
    target.write_bytes(target.read_bytes()[:100])
    code, _, err = run_main(main, capsys, "verify", str(small_dataset))
    assert code == 1 and "shard 2 field moving" in err and "1 bad shard(s) of 3 committed (2)" in err


def test_generate_cli_end_to_end_in_subprocess(tmp_path: Path) -> None:
    out = tmp_path / "cli.zarr"
    result = subprocess.run([sys.executable, "-m", "synthgen.cli", "generate", "--engine", "random-shapes",
                             "--n", "3", "--size", "32", "--backend", "local", "--out", str(out),
                             "--set", "num_labels=6", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "1 shard(s) written, 0 already committed, 1 total; 3 samples" in result.stdout
    again = subprocess.run([sys.executable, "-m", "synthgen.cli", "generate", "--engine", "random-shapes",
                            "--n", "3", "--size", "32", "--backend", "local", "--out", str(out),
                            "--set", "num_labels=6", "--quiet"], capture_output=True, text=True)
    assert again.returncode == 0 and "0 shard(s) written, 1 already committed" in again.stdout


GEN = ("generate", "--backend", "local", "--quiet", "--size", "32")


@pytest.mark.parametrize("argv, needles", [
    (("--engine", "no-such-engine", "--n", "2"), ("unknown engine 'no-such-engine'", "random-shapes")),
    (("--engine", "random-shapes", "--n", "0"), ("--n must be a positive",)),
    (("--engine", "random-shapes", "--n", "-5"), ("--n must be a positive",)),
    (("--engine", "random-shapes", "--n", "2", "--size", "30"), ("size",)),
    (("--engine", "random-shapes", "--n", "2", "--shard-size", "0"), ("--shard-size must be a positive",)),
    (("--engine", "random-shapes", "--n", "2", "--set", "bogus=1"), ("unknown random-shapes parameter(s) bogus",)),
    (("--engine", "random-shapes", "--n", "two"), ("invalid int value",)),
])
def test_generate_bad_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                argv: tuple[str, ...], needles: tuple[str, ...]) -> None:
    out = tmp_path / "never.zarr"
    code, _, err = run_main(main, capsys, *GEN, "--out", str(out), *argv)
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


def test_generate_into_file_or_foreign_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a_file = tmp_path / "data.zarr"
    a_file.write_text("x")
    code, _, err = run_main(main, capsys, *GEN, "--engine", "random-shapes", "--n", "2", "--out", str(a_file))
    assert_one_line_error(code, err, "is a file")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("keep")
    for extra in ((), ("--overwrite",)):
        code, _, err = run_main(main, capsys, *GEN, "--engine", "random-shapes", "--n", "2", "--out", str(foreign), *extra)
        assert_one_line_error(code, err, "not a synthgen dataset")
    assert a_file.read_text() == "x" and [p.name for p in foreign.iterdir()] == ["keep.txt"]


def test_generate_into_other_config_refused_untouched(capsys: pytest.CaptureFixture[str], small_dataset: Path) -> None:
    before = tree_snapshot(small_dataset)
    code, _, err = run_main(main, capsys, *GEN, "--engine", "random-shapes", "--n", "10", "--shard-size", "4",
                           "--seed", "9", "--out", str(small_dataset))
    assert_one_line_error(code, err, "holds a different dataset", "seed: 3 (existing) vs 9 (requested)", "--overwrite")
    assert tree_snapshot(small_dataset) == before


def test_unreachable_ray_address(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "never.zarr"
    code, _, err = run_main(main, capsys, "generate", "--engine", "random-shapes", "--n", "2", "--size", "32",
                           "--quiet", "--out", str(out), "--ray-address", f"127.0.0.1:{free_port()}")
    assert_one_line_error(code, err, "cannot reach a Ray cluster at 127.0.0.1:", "ray start --head")
    assert not out.exists()


@pytest.mark.parametrize("auth_env, needles", [
    ({"RAY_AUTH_MODE": "token"}, ("RAY_AUTH_MODE=token but no Ray authentication token", "ray get-auth-token")),
    ({"RAY_AUTH_TOKEN_PATH": "missing"}, ("RAY_AUTH_TOKEN_PATH=", "missing cannot be read or is empty")),
], ids=["token-mode-without-token", "unreadable-token-path"])
def test_ray_address_without_a_usable_token(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, auth_env: dict[str, str],
                                            needles: tuple[str, ...]) -> None:
    """Caught before Ray's token loader, which would abort the process, and before anything is written."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    for key, value in auth_env.items():
        monkeypatch.setenv(key, str(tmp_path / value) if key == "RAY_AUTH_TOKEN_PATH" else value)
    out = tmp_path / "never.zarr"
    with socket.create_server(("127.0.0.1", 0)) as server:  # answers on TCP, as a head node's port does
        code, _, err = run_main(main, capsys, "generate", "--engine", "random-shapes", "--n", "2", "--size", "32",
                               "--quiet", "--out", str(out), "--ray-address", f"127.0.0.1:{server.getsockname()[1]}")
    assert_one_line_error(code, err, *needles)
    assert not out.exists()


@pytest.mark.parametrize("command", [("info",), ("verify",), ("preview", "--out", "p.png"),
                                     ("export", "--sample", "0", "--out", "x")])
def test_commands_on_a_non_dataset(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   command: tuple[str, ...]) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    code, _, err = run_main(main, capsys, command[0], str(plain), *command[1:])
    assert_one_line_error(code, err, "is not a synthgen dataset")


def test_sample_index_out_of_range(capsys: pytest.CaptureFixture[str], small_dataset: Path, tmp_path: Path) -> None:
    code, _, err = run_main(main, capsys, "export", str(small_dataset), "--sample", "10", "--out", str(tmp_path / "e"))
    assert_one_line_error(code, err, "sample index 10 is out of range", "0..9")
    code, _, err = run_main(main, capsys, "preview", str(small_dataset), "--samples", "8:12", "--out", str(tmp_path / "p.png"))
    assert code != 0 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists() and not (tmp_path / "p.png").exists()
