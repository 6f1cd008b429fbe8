"""Shared fixtures: small real datasets on disk, made through the public generate path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from synthgen.engines import get_engine
from synthgen.runner import generate
from tests.ray_processes import short_ray_tmpdir, stop_ray_processes

SMALL = {"size": 32}
SMALL_N = 10
SMALL_SHARD = 4  # three shards: 4 + 4 + 2 samples (the last one partial)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip where torch sees no CUDA device (benchmarks/gpu_check.sh runs
    exactly them with ``-m cuda``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def make_small(out: Path, backend: str = "local", **kwargs) -> Path:
    generate(get_engine("random-shapes", **SMALL), str(out), SMALL_N, seed=3,
             shard_size=SMALL_SHARD, backend=backend, progress=False, **kwargs)
    return out


@pytest.fixture()
def ray_tmpdir():
    """A private RAY_TMPDIR; every Ray process started under it is stopped afterwards by PID."""
    path = short_ray_tmpdir()
    yield path
    stop_ray_processes(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def small_dataset_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small(tmp_path_factory.mktemp("master") / "small.zarr")


@pytest.fixture()
def small_dataset(small_dataset_master: Path, tmp_path: Path) -> Path:
    """A private copy of a complete 10-sample, 3-shard random-shapes dataset at 32^3."""
    copy = tmp_path / "small.zarr"
    shutil.copytree(small_dataset_master, copy)
    return copy


def tree_snapshot(path: Path) -> dict[str, tuple[int, float]]:
    """{relative file path: (size, mtime)} for checking that nothing was touched."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime)
            for p in path.rglob("*") if p.is_file()} if path.exists() else {}


def shard_bytes(path: Path) -> dict[str, bytes]:
    """All array bytes of a dataset (zarr metadata, shard objects), excluding commit records,
    whose timings legitimately differ between runs."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and "_commits" not in p.relative_to(path).parts}

