"""Small helpers shared by test modules: a free loopback port, running a CLI in-process."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from synthgen.engines import get_engine
from synthgen.runner import generate


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_main(main: Callable[[Sequence[str]], int], capsys: pytest.CaptureFixture[str],
             *argv: str) -> tuple[int, str, str]:
    """``main(argv)`` in this process: (exit code, stdout, stderr); argparse exits count."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str, prefix: str = "") -> None:
    """A non-zero exit with exactly one line on stderr, no traceback, starting with ``prefix``
    and containing every needle."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert "Traceback" not in err
    assert lines[0].startswith(prefix), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def make_label_ensemble(out: Path, n: int, *, size: int = 32, seed: int = 0, shard_size: int = 4,
                        **config) -> Path:
    """A real label-ensemble dataset of ``n`` samples at ``size``^3, made in-process."""
    generate(get_engine("label-ensemble", size=size, **config), str(out), n, seed=seed,
             shard_size=shard_size, backend="local", progress=False)
    return out
