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

AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def home_with_token(path: Path, token: str | None) -> Path:
    """A HOME for Ray processes (never the machine's own ~/.ray/auth_token), with this token."""
    (path / ".ray").mkdir(parents=True)
    if token:
        (path / ".ray" / "auth_token").write_text(token)
    return path


def fresh_shell_env(ray_tmpdir: Path, home: Path) -> dict[str, str]:
    """This process's environment as a fresh shell would have it for a Ray command: no
    RAY_AUTH_* settings, a HOME of its own (``home_with_token``), Ray's files under ``ray_tmpdir``."""
    env = {key: value for key, value in os.environ.items() if key not in AUTH_ENV}
    env.update(RAY_TMPDIR=str(ray_tmpdir), HOME=str(home))
    return env


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
