"""Runs on a real multi-node Ray cluster on this machine: a head plus worker nodes started with
``ray start``, a job submitted through the head's job server, and a worker node killed mid-run.

Everything binds to 127.0.0.1 with ports of its own, every node has its own RAY_TMPDIR, and
each node's processes are stopped by PID afterwards (never ``ray stop``, which kills every Ray
process on the machine).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from synthgen.engines import get_engine
from synthgen.runner import generate
from synthgen.store.layout import COMMITS_DIR
from tests.conftest import shard_bytes
from tests.helpers import free_port
from tests.ray_processes import processes_with_ray_tmpdir, short_ray_tmpdir, stop_ray_processes

CLI = [sys.executable, "-m", "synthgen.cli"]
RAY_CLI = str(Path(sys.executable).with_name("ray"))
# What the job server answers, submitting nothing, until the head's job agent has registered.
NO_JOB_AGENT = "No available agent to submit job"
# The same dataset as conftest's small_dataset_master, through the CLI.
SMALL_ARGS = ["generate", "--engine", "random-shapes", "--size", "32", "--n", "10", "--shard-size", "4",
              "--seed", "3", "--quiet"]


def node_processes(ray_tmpdir: Path) -> list[psutil.Process]:
    """The processes of the node started with this RAY_TMPDIR, and all their descendants: Ray's
    setproctitle can blank the RAY_TMPDIR entry of agents a worker node's raylet spawns, so
    they are found as the raylet's children instead."""
    found: dict[int, psutil.Process] = {}
    for proc in processes_with_ray_tmpdir(ray_tmpdir):
        found[proc.pid] = proc
        try:
            for child in proc.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass
    found.pop(os.getpid(), None)
    return list(found.values())


def kill_node(ray_tmpdir: Path) -> list[str]:
    """SIGKILL every process of one node at once (a node crash); returns their names."""
    procs = node_processes(ray_tmpdir)
    names = []
    for proc in procs:
        try:
            names.append(proc.name())
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    return names


def stop_node(ray_tmpdir: Path) -> None:
    """Stop one node's processes by PID: descendants first collected, then SIGTERM/SIGKILL."""
    procs = node_processes(ray_tmpdir)
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    stop_ray_processes(ray_tmpdir)  # anything a dying raylet spawned meanwhile


def ran_make_shard(ray_tmpdir: Path) -> bool:
    """Whether a task worker of the node with this RAY_TMPDIR ran a make_shard task (Ray writes
    ``:task_name:make_shard`` into the worker's log in the node's own session folder)."""
    for log in ray_tmpdir.glob("session_*/logs/worker-*.out"):
        try:
            if ":task_name:make_shard" in log.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


def commits(path: Path) -> int:
    folder = path / COMMITS_DIR
    return len(list(folder.glob("shard-*.json"))) if folder.exists() else 0


@dataclass
class Cluster:
    port: int
    dashboard_port: int
    env: dict[str, str]
    head_dir: Path
    dashboard_error: str | None = None
    node_dirs: list[Path] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def driver_env(self) -> dict[str, str]:
        """The environment of a driver run here with ``--ray-address 127.0.0.1:PORT``.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps it from swapping the loopback address for the
        machine's (see test_ray_cluster_run_is_byte_identical); a ``ray start`` of a worker
        node with it set refuses to join ("multi-node clusters are not supported"), so the
        nodes never get it."""
        return {**self.env, "RAY_TMPDIR": str(self.head_dir), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

    def add_worker(self, num_cpus: int = 1) -> Path:
        """Start a worker node joining the head, with its own RAY_TMPDIR / --temp-dir (Ray
        2.60 puts the head's session folder name under it), bound to 127.0.0.1."""
        node_dir = short_ray_tmpdir()
        self.node_dirs.append(node_dir)
        started = subprocess.run(
            [RAY_CLI, "start", f"--address={self.address}", "--node-ip-address=127.0.0.1",
             f"--temp-dir={node_dir}", f"--num-cpus={num_cpus}", "--disable-usage-stats"],
            capture_output=True, text=True, env={**self.env, "RAY_TMPDIR": str(node_dir)}, timeout=180)
        assert started.returncode == 0, started.stderr
        return node_dir


def _dashboard_answers(port: int, timeout: float = 60.0) -> str | None:
    """None once the head's job server answers on 127.0.0.1:port, else why not."""
    deadline = time.monotonic() + timeout
    error = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=5) as reply:
                if reply.status == 200:
                    return None
                error = f"HTTP {reply.status}"
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):  # serving, behind Ray's token authentication
                return None
            error = str(err)
        except OSError as err:
            error = str(err)
        time.sleep(1)
    return f"the Ray job server on 127.0.0.1:{port} did not answer: {error}"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    """A head (1 CPU, with the dashboard/job server) plus one worker node (1 CPU)."""
    head_dir = short_ray_tmpdir()
    port, dashboard_port = free_port(), free_port()
    while dashboard_port == port:
        dashboard_port = free_port()
    # Ray 2.60 clusters authenticate with a token; nodes, drivers and the job CLI share one.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    cluster = Cluster(port, dashboard_port, env, head_dir)
    try:
        started = subprocess.run(
            [RAY_CLI, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
             f"--temp-dir={head_dir}", "--num-cpus=1", "--disable-usage-stats"],
            capture_output=True, text=True, env={**env, "RAY_TMPDIR": str(head_dir)}, timeout=180)
        if started.returncode != 0:
            pytest.skip(f"a Ray head node cannot start here: {started.stderr.strip()[-500:]}")
        cluster.dashboard_error = _dashboard_answers(dashboard_port)
        cluster.add_worker(num_cpus=1)
        yield cluster
    finally:
        for node_dir in reversed(cluster.node_dirs):
            stop_node(node_dir)
        stop_node(head_dir)
        for path in [*cluster.node_dirs, head_dir]:
            shutil.rmtree(path, ignore_errors=True)


def test_two_node_cluster_run_is_byte_identical(ray_cluster: Cluster, small_dataset_master: Path,
                                                tmp_path: Path) -> None:
    worker_dir = ray_cluster.node_dirs[0]
    out = tmp_path / "cluster.zarr"
    result = subprocess.run(CLI + SMALL_ARGS + ["--out", str(out), "--ray-address", ray_cluster.address],
                            capture_output=True, text=True,
                            env=ray_cluster.driver_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert "3 shard(s) written" in result.stdout
    assert shard_bytes(out) == shard_bytes(small_dataset_master)
    # The head has one CPU, so the tasks spill over to the second node: it really did work.
    assert ran_make_shard(worker_dir), "no make_shard task ran on the worker node"


def test_ray_job_submit_is_byte_identical(ray_cluster: Cluster, small_dataset_master: Path,
                                          tmp_path: Path) -> None:
    if ray_cluster.dashboard_error:
        pytest.skip(ray_cluster.dashboard_error)
    out = tmp_path / "job.zarr"
    deadline = time.monotonic() + 90
    while True:
        job_id = f"synthgen-test-{secrets.token_hex(4)}"
        # No --working-dir: synthgen is installed in this venv, which the job's driver runs.
        command = [RAY_CLI, "job", "submit", f"--address=http://127.0.0.1:{ray_cluster.dashboard_port}",
                   f"--submission-id={job_id}", "--", sys.executable, "-m", "synthgen.cli", *SMALL_ARGS,
                   "--out", str(out), "--ray-address", "auto"]
        submitted = subprocess.run(command, capture_output=True, text=True, env=ray_cluster.env, timeout=300)
        logs = submitted.stdout + submitted.stderr
        if NO_JOB_AGENT not in logs or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert submitted.returncode == 0, logs
    assert f"Job '{job_id}' succeeded" in logs, logs
    assert f"{out}: 3 shard(s) written" in logs, logs  # the job's own output, tailed back
    status = subprocess.run([RAY_CLI, "job", "status", f"--address=http://127.0.0.1:{ray_cluster.dashboard_port}",
                             job_id], capture_output=True, text=True, env=ray_cluster.env, timeout=120)
    assert status.returncode == 0 and f"Job '{job_id}' succeeded" in status.stdout, status.stdout + status.stderr
    assert shard_bytes(out) == shard_bytes(small_dataset_master)


def test_ray_submit_script_joins_the_cluster(ray_cluster: Cluster, small_dataset_master: Path,
                                            tmp_path: Path) -> None:
    """docker/generate_on_cluster.py, what ``ray submit docker/cluster.yaml`` runs on the head
    node, generates on the cluster it finds (RAY_ADDRESS here; ``ray submit`` itself needs the
    cluster launcher and SSH, which cannot run on this machine)."""
    out = tmp_path / "submitted.zarr"
    script = Path(__file__).parents[1] / "docker" / "generate_on_cluster.py"
    result = subprocess.run([sys.executable, str(script), *SMALL_ARGS[1:], "--out", str(out)],
                            capture_output=True, text=True, timeout=300,
                            env={**ray_cluster.driver_env(), "RAY_ADDRESS": ray_cluster.address})
    assert result.returncode == 0, result.stderr
    assert "3 shard(s) written" in result.stdout
    assert shard_bytes(out) == shard_bytes(small_dataset_master)


def _make_shard_workers(procs: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for proc in procs:
        try:
            if " ".join(proc.cmdline()).startswith("ray::make_shard"):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@dataclass(frozen=True)
class RandomShapesRun:
    """One ``synthgen generate --engine random-shapes`` run of the failure tests."""

    size: int
    n: int
    shard_size: int
    seed: int

    @property
    def shards(self) -> int:
        return -(-self.n // self.shard_size)

    def command(self, out: Path, address: str) -> list[str]:
        return CLI + ["generate", "--engine", "random-shapes", "--size", str(self.size), "--n", str(self.n),
                      "--shard-size", str(self.shard_size), "--seed", str(self.seed), "--quiet",
                      "--out", str(out), "--ray-address", address]

    def assert_verified_and_identical(self, out: Path, tmp_path: Path) -> None:
        """``synthgen verify`` passes every shard, and the bytes equal a one-process run's."""
        verified = subprocess.run(CLI + ["verify", str(out)], capture_output=True, text=True, timeout=120)
        assert verified.returncode == 0 and f"all {self.shards} shards OK" in verified.stdout, \
            verified.stdout + verified.stderr
        reference = tmp_path / "reference.zarr"
        generate(get_engine("random-shapes", size=self.size), str(reference), self.n, seed=self.seed,
                 shard_size=self.shard_size, backend="local", progress=False)
        assert shard_bytes(out) == shard_bytes(reference)


def drive(proc: subprocess.Popen, act: Callable[[], bool], wait: float = 300) -> tuple[str, str]:
    """Poll ``act()`` every 50 ms while the driver ``proc`` runs, until it returns True (it did
    what it waited for), then wait up to ``wait`` s for the driver; returns its (stdout, stderr).
    The driver is killed if the test fails meanwhile."""
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not act():
            time.sleep(0.05)
        return proc.communicate(timeout=wait)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_driver(command: list[str], cluster: Cluster) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cluster.driver_env())


def test_killed_worker_node_is_retried_and_data_is_identical(ray_cluster: Cluster, tmp_path: Path) -> None:
    # A node of its own to kill, with two CPUs so it takes a good share of the tasks.
    doomed = ray_cluster.add_worker(num_cpus=2)
    run = RandomShapesRun(size=32, n=24, shard_size=2, seed=7)
    out = tmp_path / "node_killed.zarr"
    proc = start_driver(run.command(out, ray_cluster.address), ray_cluster)
    killed: list[str] = []
    done_at_kill = -1

    def kill_the_busy_node() -> bool:
        nonlocal killed, done_at_kill
        if commits(out) >= 1 and _make_shard_workers(node_processes(doomed)):  # it holds a shard task
            done_at_kill = commits(out)
            killed = kill_node(doomed)
        return bool(killed)

    stdout, stderr = drive(proc, kill_the_busy_node)
    assert killed, "the worker node never ran a shard task after the first commit"
    assert "raylet" in killed, killed
    assert 1 <= done_at_kill < 12, f"the node should have been killed part-way, at {done_at_kill} commits"
    print(f"worker node killed at {done_at_kill}/12 commits: {sorted(killed)}")
    assert not node_processes(doomed), "processes of the killed node are still alive"
    assert proc.returncode == 0, stderr
    assert "12 shard(s) written" in stdout, stdout
    run.assert_verified_and_identical(out, tmp_path)


def test_killed_driver_is_rerun_to_the_same_dataset(ray_cluster: Cluster, tmp_path: Path) -> None:
    """The driver of a cluster run dies (kill -9) part-way; the cluster ends its job's tasks, and
    the same command run again finishes the missing shards: nothing lost or duplicated."""
    run = RandomShapesRun(size=32, n=24, shard_size=2, seed=11)
    out = tmp_path / "driver_killed.zarr"
    command = run.command(out, ray_cluster.address)
    proc = start_driver(command, ray_cluster)
    done_at_kill = -1

    def kill_the_driver() -> bool:
        nonlocal done_at_kill
        if commits(out) >= 2:
            proc.kill()
            done_at_kill = commits(out)
        return done_at_kill >= 0

    drive(proc, kill_the_driver, wait=60)
    assert 2 <= done_at_kill < 12, f"the driver should have been killed part-way, at {done_at_kill} commits"
    rerun = subprocess.run(command, capture_output=True, text=True, env=ray_cluster.driver_env(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    counts = re.search(r"(\d+) shard\(s\) written, (\d+) already committed", rerun.stdout)
    assert counts, rerun.stdout
    written, skipped = int(counts[1]), int(counts[2])
    assert skipped >= done_at_kill and written + skipped == 12, rerun.stdout
    print(f"driver killed at {done_at_kill}/12 commits; the rerun wrote {written}, skipped {skipped}")
    run.assert_verified_and_identical(out, tmp_path)


def test_killed_task_worker_on_a_node_is_retried(ray_cluster: Cluster, tmp_path: Path) -> None:
    """One shard task's worker process on the worker node dies mid-shard (kill -9); Ray retries
    the task and the dataset is the same bytes, verified."""
    worker_dir = ray_cluster.node_dirs[0]
    run = RandomShapesRun(size=64, n=24, shard_size=4, seed=2)
    out = tmp_path / "task_killed.zarr"
    proc = start_driver(run.command(out, ray_cluster.address), ray_cluster)
    killed = None

    def kill_a_running_task() -> bool:
        nonlocal killed
        running = _make_shard_workers(node_processes(worker_dir))
        if running:  # the proctitle says ray::make_shard only while the task runs
            running[0].kill()
            killed = running[0].pid
        return killed is not None

    stdout, stderr = drive(proc, kill_a_running_task)
    assert killed is not None, "no shard task was seen running on the worker node"
    assert proc.returncode == 0, stderr
    assert "6 shard(s) written" in stdout, stdout
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    run.assert_verified_and_identical(out, tmp_path)
