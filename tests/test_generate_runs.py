"""Generation runs: byte-identical across backends and worker counts, and after crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from synthgen import open_dataset
from synthgen.engines import get_engine
from synthgen.runner import generate
from synthgen.store.layout import COMMITS_DIR
from tests.conftest import make_small, shard_bytes

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
