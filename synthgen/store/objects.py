"""Raw byte access to a dataset's objects, local or remote, through fsspec.

Zarr handles the arrays; this module handles what Zarr does not: commit records, checksums of
shard objects, existence checks and whole-dataset removal. Remote URLs and their errors are in
``synthgen.store.urls``, the read cache of ``simplecache::``/``filecache::`` URLs in
``synthgen.store.cache``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from synthgen.atomic_files import write_atomically
from synthgen.errors import SynthgenError
from synthgen.store.cache import ObjectCache, cache_directory, is_metadata_key, read_local_range
from synthgen.store.output_paths import check_output_path
from synthgen.store.urls import refuse_cache_write, split_cache_url, translated_errors

IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in os.sysconf_names else 16  # buffers per preadv


class ObjectStore:
    """Objects under a root path or URL; keys are '/'-separated and relative to the root.

    ``root`` may carry a read cache prefix (``simplecache::``, ``filecache::``): then data
    objects are read through :class:`ObjectCache` and every write is refused.
    """

    def __init__(self, root: str) -> None:
        self.url = str(root)
        self.cache_protocol, remote = split_cache_url(self.url)
        with translated_errors(self.url):
            self.fs, self.root = fsspec.core.url_to_fs(remote)
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.cache = (ObjectCache(self.fs, self.root, cache_directory(self.cache_protocol), self.url)
                      if self.cache_protocol else None)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def _fresh(self, path: str) -> str:
        """Drop the filesystem's cached listings of ``path`` (s3fs, gcsfs keep them per
        instance): other processes add and delete objects, and stale listings hide them."""
        if not self.is_local:
            self.fs.invalidate_cache(path)
        return path

    def _errors(self, writing: bool = False) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self.is_local else translated_errors(self.url, writing)

    def exists(self, key: str = "") -> bool:
        with self._errors():
            return self.fs.exists(self._fresh(self.path(key)))

    def is_dir(self, key: str = "") -> bool:
        with self._errors():
            return self.fs.isdir(self._fresh(self.path(key)))

    def size(self, key: str) -> int:
        with self._errors():
            return int(self.fs.size(self._fresh(self.path(key))))

    def read(self, key: str) -> bytes:
        with self._errors():
            if self.cache is not None and not is_metadata_key(key):
                return self.cache.read(key)
            return self.fs.cat_file(self.path(key))

    def read_range(self, key: str, start: int | None = None, stop: int | None = None,
                   suffix: int | None = None) -> bytes:
        """Bytes ``[start:stop]`` of ``key`` (``stop`` None: to the end), or its last ``suffix``
        bytes: one ranged request, or one pread on a local disk or in the cache."""
        with self._errors():
            if self.cache is not None and not is_metadata_key(key):
                return self.cache.read(key, start, stop, suffix)
            if self.is_local:
                return read_local_range(self.path(key), start, stop, suffix)
            if suffix is not None:
                size = self.fs.size(self.path(key))
                return self.fs.cat_file(self.path(key), start=max(0, size - suffix))
            return self.fs.cat_file(self.path(key), start=start, end=stop)

    def read_into(self, key: str, start: int, out: memoryview | Sequence[memoryview]) -> None:
        """Fill ``out`` with the bytes of ``key`` from ``start``; a list of buffers is filled one
        after the other (a scatter read, e.g. a chunk's payload and its checksum). Straight from
        the file into the buffers on a local disk or in the cache (``preadv``, no intermediate
        copy), one ranged read remotely."""
        buffers = [out] if isinstance(out, memoryview) else list(out)
        total = sum(buffer.nbytes for buffer in buffers)
        with self._errors():
            local = (self.cache.local_path(key) if self.cache is not None and not is_metadata_key(key)
                     else self.path(key) if self.is_local else None)
            if local is None:
                got = _scatter(self.fs.cat_file(self.path(key), start=start, end=start + total), buffers)
            else:
                got = _preadv(local, start, buffers)
        if got != total:
            raise ValueError(f"{key} is truncated: read {got} of {total} bytes from offset {start}")

    def write_atomic(self, key: str, data: bytes) -> None:
        """Readers see the old object or the whole new one, never a part: temp file and rename
        on a local disk; object stores make a single PUT atomic by themselves."""
        if self.cache is not None:
            raise refuse_cache_write(self.url)
        target = self.path(key)
        if not self.is_local:
            with self._errors(writing=True):
                self.fs.pipe_file(target, data)
            return

        def write(temp: Path) -> None:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

        write_atomically(target, write, f"{target}.{uuid.uuid4().hex}.tmp")

    def existing_output(self, kind: str) -> bool:
        """Check the root as an output location for a ``kind`` ("dataset", "template bank"):
        refuse a file (SynthgenError); return whether a non-empty folder is already there, which
        the caller must recognise as its own or refuse with :func:`foreign_output_error`. A local
        root is first checked by :func:`check_output_path` (a file among its parents, a folder
        that cannot be written)."""
        check_output_path(self.url, kind, folder=True, example=".zarr")
        exists = self.exists()  # one storage call (a remote root: one request)
        if exists and not self.is_dir():
            raise SynthgenError(f"output path {self.url} is a file; pass a folder path for the {kind}, "
                                f"such as {self.url}.zarr")
        return exists and bool(self.list_names(""))

    def remove_stale_temporaries(self, key: str) -> int:
        """Delete temporary files that interrupted atomic writes of ``key`` left beside it
        (zarr's ``<name>.<uuid>.partial``, this class's ``<name>.<uuid>.tmp``); only the writer
        that owns ``key`` may call this. Object stores write atomically without temporaries.
        Returns how many were removed."""
        if not self.is_local:
            return 0
        folder, _, name = self.path(key).rpartition("/")
        try:
            entries = os.listdir(folder)
        except FileNotFoundError:
            return 0
        stale = [e for e in entries if e.startswith(name + ".") and e.endswith((".partial", ".tmp"))]
        for entry in stale:
            os.remove(os.path.join(folder, entry))
        return len(stale)

    def list_names(self, key: str) -> list[str]:
        """Base names of the entries directly under ``key`` ([] if it does not exist)."""
        try:
            with self._errors():
                entries = self.fs.ls(self._fresh(self.path(key)), detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def disk_usage(self) -> int:
        """Total bytes of all objects under the root."""
        with self._errors():
            return int(self.fs.du(self._fresh(self.root), total=True))

    def remove_all(self) -> None:
        if self.cache is not None:
            raise refuse_cache_write(self.url)
        with self._errors(writing=True):
            if self.fs.exists(self._fresh(self.root)):
                self.fs.rm(self.root, recursive=True)


def _preadv(path: str, start: int, buffers: list[memoryview]) -> int:
    """Read the file at ``path`` from ``start`` into ``buffers`` in order; returns bytes read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        got = 0
        for first in range(0, len(buffers), IOV_MAX):
            group = buffers[first:first + IOV_MAX]
            count = os.preadv(fd, group, start + got)
            got += count
            if count < sum(buffer.nbytes for buffer in group):
                break
        return got
    finally:
        os.close(fd)


def _scatter(data: bytes, buffers: list[memoryview]) -> int:
    """Copy ``data`` into ``buffers`` in order; returns bytes copied."""
    view, position = memoryview(data), 0
    for buffer in buffers:
        piece = view[position:position + buffer.nbytes]
        buffer[:len(piece)] = piece
        position += len(piece)
    return position


def foreign_output_error(path: str, kind: str) -> SynthgenError:
    """The refusal for an output folder that holds something other than a synthgen ``kind``."""
    return SynthgenError(f"output path {path} exists and is not a synthgen {kind}; choose another --out "
                         f"(synthgen never deletes data it did not write)")
