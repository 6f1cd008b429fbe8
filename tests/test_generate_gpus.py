"""``--gpus-per-task``: shard tasks ask Ray for GPUs and generate on the GPU they are given.

On a machine without CUDA the tests give a local Ray runtime logical GPUs: Ray then schedules
GPU tasks and sets their CUDA_VISIBLE_DEVICES, and the task must refuse, in one line, to fall
back silently to the CPU. With CUDA, a GPU run completes and verifies.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch

from synthgen import open_dataset
from synthgen.cli import main
from synthgen.engines import get_engine
from synthgen.errors import SynthgenError
from synthgen.runner import generate
from tests.conftest import SMALL, SMALL_N, SMALL_SHARD
from tests.helpers import assert_one_line_error, run_main

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a machine without GPUs")
def test_local_run_without_gpus_is_refused_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gpu.zarr"
    code, _, err = run_main(main, capsys, "generate", "--engine", "random-shapes", "--size", "32", "--n", "2",
                            "--out", str(out), "--gpus-per-task", "1", "--quiet")
    assert_one_line_error(code, err, "--gpus-per-task 1", "0 that torch can use", prefix="synthgen generate: error:")
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--gpus-per-task", "0"], ["--gpus-per-task", "-1"],
                                  ["--gpus-per-task", "1", "--backend", "local"]],
                         ids=["zero", "negative", "local-backend"])
def test_bad_gpus_per_task_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    out = tmp_path / "bad.zarr"
    code, _, err = run_main(main, capsys, "generate", "--engine", "random-shapes", "--size", "32", "--n", "2",
                            "--out", str(out), "--quiet", *argv)
    assert_one_line_error(code, err, "--gpus-per-task must be a positive number", prefix="synthgen generate: error:")
    assert not out.exists()


@pytest.fixture
def ray_with_logical_gpus():
    """A local Ray runtime on 127.0.0.1 that offers two GPUs (logical: no CUDA behind them)."""
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.skipif(not NO_CUDA, reason="needs a machine where torch has no CUDA")
def test_tasks_request_gpus_and_refuse_a_cpu_only_torch(ray_with_logical_gpus, tmp_path: Path) -> None:
    out = tmp_path / "gpu.zarr"
    with pytest.raises(SynthgenError) as caught:
        generate(get_engine("random-shapes", **SMALL), str(out), SMALL_N, seed=3, shard_size=SMALL_SHARD,
                 backend="ray", gpus_per_task=0.5, progress=False)
    message = str(caught.value)
    assert "\n" not in message
    # Ray scheduled the task on a GPU: it set the task's CUDA_VISIBLE_DEVICES to one of the two
    assert "CUDA_VISIBLE_DEVICES=0)" in message or "CUDA_VISIBLE_DEVICES=1)" in message, message
    assert "install a CUDA build of torch" in message
    assert open_dataset(str(out)).committed == []


def test_cpu_tasks_get_no_gpu(ray_with_logical_gpus, tmp_path: Path) -> None:
    @ray.remote(num_cpus=1)
    def visible_devices() -> list:
        return ray.get_gpu_ids()

    assert ray.get(visible_devices.remote()) == []
    out = tmp_path / "cpu.zarr"
    generate(get_engine("random-shapes", **SMALL), str(out), SMALL_N, seed=3, shard_size=SMALL_SHARD,
             backend="ray", progress=False)
    assert open_dataset(str(out)).verify().ok


@pytest.mark.cuda
@pytest.mark.parametrize("engine", ["random-shapes", "label-ensemble"])
def test_gpu_tasks_generate_a_verified_dataset(tmp_path: Path, engine: str) -> None:
    out = tmp_path / f"{engine}.zarr"
    report = generate(get_engine(engine, size=32), str(out), 4, seed=1, shard_size=2, backend="ray",
                      workers=2, gpus_per_task=0.5, progress=False)
    assert report.written_shards == 2
    assert open_dataset(str(out)).verify().ok
