"""Small helpers shared by test modules: a free loopback port, running a CLI in-process, real
datasets (label-ensemble, a damaged chunk, the layout written before chunk checksums)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import zarr

import synthgen
from synthgen.engines import get_engine
from synthgen.runner import generate
from synthgen.store import prepare_dataset, write_shard
from synthgen.store.layout import ATTRIBUTE_KEY, shard_object_key
from synthgen.store.shard_reader import read_index, read_layout


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


def flip_chunk_byte(path: Path, field: str, index: int) -> None:
    """Flip one byte in the middle of sample ``index``'s chunk of ``field`` in its (committed,
    local) shard object; the shard index and the other chunks stay intact."""
    dataset = synthgen.open_dataset(str(path))
    shard = dataset.shard_of(index)
    key = shard_object_key(field, dataset.info.schema[field], shard)
    layout = read_layout(dataset.objects, field)
    start, size = read_index(dataset.objects, key, layout)[index - shard * dataset.info.shard_size]
    target = path / key
    data = bytearray(target.read_bytes())
    data[int(start + size // 2)] ^= 0xFF
    target.write_bytes(bytes(data))


def write_legacy_copy(source: Path, out: Path) -> Path:
    """The samples of ``source`` in the layout of datasets written before label codecs and chunk
    checksums: label maps blosc-zstd, no crc32c per chunk, no ``label_codec`` attribute."""
    dataset = synthgen.open_dataset(str(source))
    info = dataclasses.replace(dataset.info, label_codec="zstd")
    prepare_dataset(str(out), info, chunk_checksums=False)
    group = zarr.open_group(str(out), mode="r+")
    group.attrs[ATTRIBUTE_KEY] = {k: v for k, v in info.to_json().items() if k != "label_codec"}
    for shard in dataset.committed:
        write_shard(str(out), info, shard, dataset.read_shard(shard))
    return out
