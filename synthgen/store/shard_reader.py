"""Direct reads of runs of samples from one shard object, for the layout synthgen writes.

Why not zarr's read path: zarr-python routes every read through its async machinery and a
per-chunk codec pipeline with several copies; from a warm local shard it delivers ~1.0 GB/s of
float16 views where a plain file read gives ~1.5 GB/s and ``np.load`` of ``.npy`` files ~1.45
GB/s, which would make the streaming reader slower than raw files. Here a run costs one suffix
read of the shard index (crc32c-checked, as zarr checks it), one ranged read of the run's
chunks (a raw chunk is read straight into its destination), and per chunk a crc32c check
(~20 GB/s) and, for label maps, one blosc decompression.

Only the layout of store format v1 is handled: ``sharding_indexed`` with the index at the end
(``bytes`` + ``crc32c`` index codecs), inner chunk = one sample, inner codecs ``bytes``
(little-endian), optionally ``blosc``, then ``crc32c`` (datasets written before chunk checksums
end without it). :func:`shard_layout` returns None for anything else, and callers fall back to
zarr. Tests check equality with zarr's reads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any

import crc32c
import numpy as np
from numcodecs import blosc

from synthgen.store.objects import ObjectStore

EMPTY = np.iinfo(np.uint64).max
INDEX_ENTRY_BYTES = 16  # (offset, nbytes) as two little-endian uint64
CHECKSUM_BYTES = 4
PAGE_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class ShardLayout:
    """How one field's shards are laid out: samples per shard, per-sample shape and dtype,
    whether chunks are blosc-compressed and whether each ends with its crc32c."""

    dtype: np.dtype
    sample_shape: tuple[int, ...]
    samples_per_shard: int
    compressed: bool
    checksummed: bool = False

    @functools.cached_property
    def sample_nbytes(self) -> int:
        return int(np.prod(self.sample_shape)) * self.dtype.itemsize

    @property
    def trailer_nbytes(self) -> int:
        """Bytes after each chunk's payload: its crc32c, or nothing."""
        return CHECKSUM_BYTES if self.checksummed else 0

    @functools.cached_property
    def raw_chunk_nbytes(self) -> int:
        """Bytes of an uncompressed chunk: the sample and its trailer."""
        return self.sample_nbytes + self.trailer_nbytes

    @property
    def index_nbytes(self) -> int:
        return self.samples_per_shard * INDEX_ENTRY_BYTES + CHECKSUM_BYTES


class CorruptChunk(ValueError):
    """A sample's chunk is missing, mis-sized, fails its crc32c or does not decode; ``offset``
    is the sample's position within its shard."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = int(offset)


def shard_layout(array_metadata: dict[str, Any]) -> ShardLayout | None:
    """The layout described by a field's ``zarr.json``, or None if it is not one this module reads."""
    try:
        (sharding,) = array_metadata["codecs"]
        config = sharding["configuration"]
        inner = [codec["name"] for codec in config["codecs"]]
        index = [codec["name"] for codec in config["index_codecs"]]
        outer = array_metadata["chunk_grid"]["configuration"]["chunk_shape"]
        chunk = config["chunk_shape"]
        endian = config["codecs"][0].get("configuration", {}).get("endian", "little")
    except (KeyError, ValueError, TypeError):
        return None
    checksummed = inner[-1:] == ["crc32c"]
    payload = inner[:-1] if checksummed else inner
    layout_ok = (sharding["name"] == "sharding_indexed" and config.get("index_location", "end") == "end"
                 and index == ["bytes", "crc32c"] and payload in (["bytes"], ["bytes", "blosc"])
                 and chunk[0] == 1 and chunk[1:] == outer[1:] and endian == "little")
    if not layout_ok:
        return None
    return ShardLayout(dtype=np.dtype(array_metadata["data_type"]).newbyteorder("<"),
                       sample_shape=tuple(int(n) for n in outer[1:]), samples_per_shard=int(outer[0]),
                       compressed=payload[-1] == "blosc", checksummed=checksummed)


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype`` starting on a 4096-byte page boundary.

    Why: the kernel's copy from the page cache into a buffer runs ~8x slower (measured on the
    AMD EPYC CI machine, 4 MiB reads) when the destination address is 4-31 bytes past the
    source's offset modulo 4096 (4K aliasing), and malloc'd numpy arrays start 16 bytes into a
    page, while chunk k of a shard of samples of a multiple of 4096 bytes (128^3, 64^3 ...)
    starts 4*k bytes into one (each raw chunk ends with a 4-byte crc32c). A page-aligned
    destination stays clear of that for shards of < 1017 samples.
    """
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + PAGE_BYTES, dtype=np.uint8)
    start = -raw.ctypes.data % PAGE_BYTES
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def read_layout(objects: ObjectStore, field: str) -> ShardLayout | None:
    return shard_layout(json.loads(objects.read(f"{field}/zarr.json")))


def read_index(objects: ObjectStore, key: str, layout: ShardLayout) -> np.ndarray:
    """The (samples_per_shard, 2) int64 (offset, nbytes) table of shard object ``key``, checked
    against its crc32c. Raises ValueError for a damaged or truncated shard."""
    raw_index = objects.read_range(key, suffix=layout.index_nbytes)
    if len(raw_index) != layout.index_nbytes:
        raise ValueError(f"shard index is {len(raw_index)} bytes, expected {layout.index_nbytes}")
    body, checksum = raw_index[:-CHECKSUM_BYTES], raw_index[-CHECKSUM_BYTES:]
    if not _crc_matches(body, checksum):
        raise ValueError("shard index checksum mismatch")
    entries = np.frombuffer(body, dtype="<u8").reshape(layout.samples_per_shard, 2)
    return np.where(entries == EMPTY, -1, entries.astype(np.int64))


def read_sample_into(objects: ObjectStore, key: str, layout: ShardLayout, index: np.ndarray, offset: int,
                     out: np.ndarray) -> None:
    """Read sample ``offset`` of a shard into ``out`` (a C-contiguous array of the sample's
    shape and dtype, e.g. one row of a batch): one ranged read, straight into ``out`` when the
    chunk is raw, and its crc32c checked. ``index`` is the shard's :func:`read_index` table.

    Raises:
        CorruptChunk: the sample's chunk is missing, mis-sized, corrupt or undecodable.
    """
    start, size = index[offset].tolist()
    if start < 0:
        raise CorruptChunk(offset, "shard lacks a chunk that should hold a sample")
    target = memoryview(out.reshape(-1).view(np.uint8))
    if not layout.compressed:
        if size != layout.raw_chunk_nbytes:
            _check_raw_sizes(layout, np.array([size]), offset)
        trailer = bytearray(layout.trailer_nbytes)
        objects.read_into(key, start, [target, memoryview(trailer)] if layout.checksummed else target)
        _check_crc(target, trailer, layout, offset)
        return
    chunk = objects.read_range(key, start=start, stop=start + size)
    if len(chunk) != size:
        raise CorruptChunk(offset, f"shard is truncated: read {len(chunk)} of {size} bytes")
    _decompress_into(_payload(chunk, layout, offset), layout, target, offset)


def _check_raw_sizes(layout: ShardLayout, sizes: np.ndarray, first: int) -> None:
    bad = np.flatnonzero(sizes != layout.raw_chunk_nbytes)
    if bad.size:
        raise CorruptChunk(first + int(bad[0]), f"a raw chunk holds {int(sizes[bad[0]])} bytes, expected "
                                                f"{layout.raw_chunk_nbytes}")


def _crc_matches(data: memoryview | bytes, checksum: memoryview | bytes) -> bool:
    """Whether ``checksum`` (4 bytes, little-endian: zarr's crc32c codec) is the crc32c of ``data``."""
    return crc32c.crc32c(data) == int.from_bytes(checksum, "little")


def _check_crc(payload: memoryview | bytes, trailer: memoryview | bytes, layout: ShardLayout, offset: int) -> None:
    if layout.checksummed and not _crc_matches(payload, trailer):
        raise CorruptChunk(offset, "chunk checksum mismatch")


def _payload(chunk: bytes | memoryview, layout: ShardLayout, offset: int) -> memoryview:
    """The chunk without its crc32c trailer, checked against it."""
    view = memoryview(chunk)
    if not layout.checksummed:
        return view
    if len(view) < CHECKSUM_BYTES:
        raise CorruptChunk(offset, f"a chunk of {len(view)} bytes cannot hold its checksum")
    payload = view[:-CHECKSUM_BYTES]
    _check_crc(payload, view[-CHECKSUM_BYTES:], layout, offset)
    return payload


def _decompress_into(chunk: memoryview, layout: ShardLayout, target: memoryview, offset: int) -> None:
    if int.from_bytes(chunk[4:8], "little") != layout.sample_nbytes:  # blosc header: nbytes
        raise CorruptChunk(offset, f"a chunk decodes to the wrong size, expected {layout.sample_nbytes} bytes")
    try:
        blosc.decompress(chunk, target)
    except (RuntimeError, ValueError) as err:
        raise CorruptChunk(offset, f"blosc cannot decode a chunk ({err})") from err


def read_samples(objects: ObjectStore, key: str, layout: ShardLayout, first: int, stop: int) -> np.ndarray:
    """Samples ``[first, stop)`` (offsets within the shard) of the shard object ``key``, every
    chunk checked against its crc32c.

    Returns:
        (stop - first, *sample_shape) array of the layout's dtype.

    Raises:
        ValueError: the shard's bytes are damaged (index checksum, truncation); CorruptChunk
            (a ValueError) names the first damaged sample.
    """
    entries = read_index(objects, key, layout)[first:stop]
    missing = np.flatnonzero(entries[:, 0] < 0)
    if missing.size:
        raise CorruptChunk(first + int(missing[0]), "shard lacks a chunk that should hold a sample")
    offsets, sizes = entries[:, 0], entries[:, 1]
    count = stop - first
    out = aligned_empty((count, *layout.sample_shape), layout.dtype)
    flat = out.reshape(count, -1).view(np.uint8)
    if not layout.compressed:
        _check_raw_sizes(layout, sizes, first)
        if (np.diff(offsets) == layout.raw_chunk_nbytes).all():  # one contiguous run
            trailers = np.empty((count, layout.trailer_nbytes), dtype=np.uint8)
            buffers = ([buffer for row in range(count) for buffer in (memoryview(flat[row]), memoryview(trailers[row]))]
                       if layout.checksummed else [memoryview(flat).cast("B")])
            objects.read_into(key, int(offsets[0]), buffers)
            for row in range(count):
                _check_crc(memoryview(flat[row]), trailers[row].tobytes(), layout, first + row)
            return out
    start, end = int(offsets.min()), int((offsets + sizes).max())
    data = objects.read_range(key, start=start, stop=end)
    if len(data) != end - start:
        raise ValueError(f"shard is truncated: read {len(data)} of {end - start} bytes")
    for row, (offset, size) in enumerate(zip(offsets - start, sizes)):
        payload = _payload(memoryview(data)[offset:offset + size], layout, first + row)
        if layout.compressed:
            _decompress_into(payload, layout, memoryview(flat[row]), first + row)
        else:
            flat[row] = np.frombuffer(payload, dtype=np.uint8)
    return out
