"""Generation runs: byte-identical across backends and worker counts, and after crashes."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from synthgen import open_dataset
from synthgen.cli import main
from synthgen.engines import get_engine
from synthgen.runner import generate
from synthgen.store.layout import COMMITS_DIR
from tests.conftest import make_small, shard_bytes
from tests.ray_processes import AUTH_ENV, fresh_shell_env, home_with_token, stop_ray_processes
from tests.helpers import assert_one_line_error, free_port, run_main

CLI = [sys.executable, "-m", "synthgen.cli"]


def commits(path: Path) -> int:
    folder = path / COMMITS_DIR
    return len(list(folder.glob("shard-*.json"))) if folder.exists() else 0


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_backend_is_byte_identical_to_in_process(small_dataset_master: Path, tmp_path: Path,
                                                     workers: int) -> None:
    out = make_small(tmp_path / f"ray{workers}.zarr", backend="ray", workers=workers)
    assert shard_bytes(out) == shard_bytes(small_dataset_master)
    assert open_dataset(str(out)).verify().ok


def test_kill_9_then_rerun_is_identical_to_uninterrupted(tmp_path: Path) -> None:
    args = ["generate", "--engine", "random-shapes", "--size", "32", "--n", "12", "--seed", "11",
            "--shard-size", "1", "--backend", "local", "--quiet"]
    reference = tmp_path / "reference.zarr"
    generate(get_engine("random-shapes", size=32), str(reference), 12, seed=11, shard_size=1,
             backend="local", progress=False)
    interrupted = tmp_path / "interrupted.zarr"
    proc = subprocess.Popen(CLI + args + ["--out", str(interrupted)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while commits(interrupted) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = commits(interrupted)
    assert 3 <= done < 12, f"the run should have been killed part-way, had {done} commits"
    assert not open_dataset(str(interrupted)).verify().ok
    rerun = subprocess.run(CLI + args + ["--out", str(interrupted)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{12 - done} shard(s) written, {done} already committed" in rerun.stdout
    assert shard_bytes(interrupted) == shard_bytes(reference)
    assert open_dataset(str(interrupted)).verify().ok


def _ray_task_workers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline.startswith("ray::make_shard"):
            found.append(proc)
    return found


def test_killed_ray_worker_is_retried_and_data_is_identical(tmp_path: Path) -> None:
    args = ["generate", "--engine", "random-shapes", "--size", "64", "--n", "12", "--seed", "2",
            "--shard-size", "4", "--backend", "ray", "--workers", "1", "--quiet"]
    out = tmp_path / "ray_killed.zarr"
    proc = subprocess.Popen(CLI + args + ["--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    killed = None
    deadline = time.monotonic() + 180
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        workers = _ray_task_workers()
        if workers:
            time.sleep(0.3)  # let the task get into its shard
            workers[0].kill()
            killed = workers[0].pid
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=300)
    assert killed is not None, "no Ray task worker was seen running"
    assert proc.returncode == 0, stderr
    reference = tmp_path / "reference.zarr"
    generate(get_engine("random-shapes", size=64), str(reference), 12, seed=2, shard_size=4,
             backend="local", progress=False)
    assert shard_bytes(out) == shard_bytes(reference)
    assert open_dataset(str(out)).verify().ok


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_ray_run_resumes_identically(tmp_path: Path, ray_tmpdir: Path, sig: int) -> None:
    args = ["generate", "--engine", "random-shapes", "--size", "32", "--n", "40", "--seed", "5",
            "--shard-size", "1", "--workers", "2", "--quiet"]
    out = tmp_path / "ray_interrupted.zarr"
    # As in a fresh shell: no RAY_AUTH_MODE, no token yet (a HOME of its own).
    env = fresh_shell_env(ray_tmpdir, home_with_token(tmp_path / "home", None))
    proc = subprocess.Popen(CLI + args + ["--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while commits(out) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    done = commits(out)
    assert 3 <= done < 40, f"the run should have been interrupted part-way, had {done} commits"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted; committed shards are kept" in stderr
    stop_ray_processes(ray_tmpdir)  # kill -9 of a driver orphans Ray's agents
    rerun = subprocess.run(CLI + args + ["--out", str(out)], capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "already committed" in rerun.stdout
    # The local runtime uses token authentication (Ray made the token), without Ray's warning about it.
    assert "authentication" not in rerun.stderr.lower(), rerun.stderr
    assert (tmp_path / "home" / ".ray" / "auth_token").read_text().strip()
    reference = tmp_path / "reference.zarr"
    generate(get_engine("random-shapes", size=32), str(reference), 40, seed=5, shard_size=1,
             backend="local", progress=False)
    assert shard_bytes(out) == shard_bytes(reference)
    assert open_dataset(str(out)).verify().ok


def test_ray_cluster_run_is_byte_identical(small_dataset_master: Path, tmp_path: Path, ray_tmpdir: Path) -> None:
    port = free_port()
    # Ray 2.60 clusters authenticate with a token; head and driver share an explicit one.
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmpdir), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    ray_cli = str(Path(sys.executable).with_name("ray"))
    started = subprocess.run(
        [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--dashboard-host=127.0.0.1", "--include-dashboard=false", f"--temp-dir={ray_tmpdir}",
         "--num-cpus=2", "--disable-usage-stats"], capture_output=True, text=True, env=env, timeout=120)
    assert started.returncode == 0, started.stderr
    out = tmp_path / "cluster.zarr"
    # Ray replaces a loopback --ray-address by the machine's address, which this head (bound to
    # 127.0.0.1 only, as tests must be) does not listen on; this switch keeps the driver local.
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    result = subprocess.run(CLI + ["generate", "--engine", "random-shapes", "--size", "32", "--n", "10",
                                   "--seed", "3", "--shard-size", "4", "--quiet", "--out", str(out),
                                   "--ray-address", f"127.0.0.1:{port}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert shard_bytes(out) == shard_bytes(small_dataset_master)
    assert stop_ray_processes(ray_tmpdir) > 0


def test_token_cluster_joined_without_auth_mode(small_dataset_master: Path, tmp_path: Path, ray_tmpdir: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`ray start --head` as Ray's docs say (no RAY_AUTH_MODE; a token in ~/.ray/auth_token turns
    token authentication on), then generate --ray-address without RAY_AUTH_MODE: the driver
    joins with that token, says so in one line, and leaves no RAY_AUTH_MODE behind; a driver
    without the token, or with another one, gets one line naming token authentication."""
    port = free_port()
    home = home_with_token(tmp_path / "home", secrets.token_hex(16))
    env = fresh_shell_env(ray_tmpdir, home)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    started = subprocess.run(
        [ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--include-dashboard=false", f"--temp-dir={ray_tmpdir}", "--num-cpus=2", "--disable-usage-stats"],
        capture_output=True, text=True, env=env, timeout=120)
    assert started.returncode == 0, started.stderr
    assert "Token authentication is enabled" in started.stderr, started.stderr
    address = f"127.0.0.1:{port}"
    args = ["generate", "--engine", "random-shapes", "--size", "32", "--n", "10", "--seed", "3",
            "--shard-size", "4", "--quiet", "--ray-address", address]
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep the loopback address (see the test above)

    refused = subprocess.run(CLI + args + ["--out", str(tmp_path / "refused.zarr")], capture_output=True,
                             text=True, env={**env, "HOME": str(home_with_token(tmp_path / "bare", None))},
                             timeout=120)
    assert_one_line_error(refused.returncode, refused.stderr, f"the Ray cluster at {address} uses token "
                          "authentication", "(it has no token)", "RAY_AUTH_MODE=token", "ray get-auth-token")
    assert not (tmp_path / "refused.zarr").exists()

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in AUTH_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home_with_token(tmp_path / "other", secrets.token_hex(16))))
    code, _, err = run_main(main, capsys, *args, "--out", str(tmp_path / "other.zarr"))
    assert_one_line_error(code, err, "uses token authentication", "other/.ray/auth_token is not the cluster's")

    monkeypatch.setenv("HOME", str(home))
    out = tmp_path / "joined.zarr"
    code, stdout, err = run_main(main, capsys, *args, "--out", str(out))
    assert code == 0, err
    assert "3 shard(s) written" in stdout
    assert err.strip() == (f"synthgen: RAY_AUTH_MODE is unset; joining the Ray cluster at {address} with token "
                           f"authentication, using the token from {home / '.ray' / 'auth_token'}")
    assert "RAY_AUTH_MODE" not in os.environ  # set for the driver's connection only
    assert shard_bytes(out) == shard_bytes(small_dataset_master)
    assert stop_ray_processes(ray_tmpdir) > 0
