"""Finding and stopping exactly the Ray processes a test started, by PID.

Every Ray process a test starts inherits the ``RAY_TMPDIR`` the test gave it (Ray's proctitles
hide command lines), so the test can stop its own processes and nobody else's: never
``ray stop``, which kills every Ray process on the machine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil


def processes_with_ray_tmpdir(ray_tmpdir: Path) -> list[psutil.Process]:
    """Processes whose environment holds RAY_TMPDIR=ray_tmpdir. Reads /proc/PID/environ raw:
    Ray's setproctitle blanks the start of that block, which psutil.environ() then reads as empty."""
    wanted = f"RAY_TMPDIR={ray_tmpdir}".encode()
    found = []
    for proc in psutil.process_iter():
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as handle:
                entries = handle.read().split(b"\0")
        except OSError:
            continue
        if proc.pid != os.getpid() and wanted in entries:
            found.append(proc)
    return found


def stop_ray_processes(ray_tmpdir: Path, timeout: float = 10.0, rounds: int = 5) -> int:
    """SIGTERM, then SIGKILL after ``timeout``, every process started with this RAY_TMPDIR,
    again while new ones appear (a dying raylet may still spawn agents); returns how many."""
    stopped = 0
    for _ in range(rounds):
        procs = processes_with_ray_tmpdir(ray_tmpdir)
        if not procs:
            break
        _stop(procs, timeout)
        stopped += len(procs)
    return stopped


def _stop(procs: list[psutil.Process], timeout: float) -> None:
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)


def short_ray_tmpdir() -> Path:
    """A short directory for RAY_TMPDIR (Ray's socket paths must stay under ~107 characters)."""
    path = Path("/tmp") / f"sgray-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    path.mkdir()
    return path
