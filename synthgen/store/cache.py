"""The local read cache: whole remote data objects fetched once into a local directory.

A URL prefixed with ``simplecache::`` or ``filecache::`` (fsspec's chained-URL syntax, e.g.
``filecache::s3://bucket/x.zarr``) reads data objects (shard objects) through a local cache:
each is fetched whole once, then read from local disk. JSON metadata (``zarr.json``, commit
records) and listings always come from the remote, so a reader sees newly committed shards.
Deliberate deviation from fsspec's own caching filesystems, which synthgen does not use for
this: they expose partially downloaded files to concurrent readers (threads of one process and
processes sharing a cache directory), and zarr's suffix reads of shard indexes fail through them
(fsspec 2026.9). Here every object is downloaded to a temporary file and renamed into place, one
download per object per process. The cache directory is fsspec's ``cache_storage`` option for
that protocol when configured (``FSSPEC_FILECACHE_CACHE_STORAGE=/dir``,
``FSSPEC_SIMPLECACHE_CACHE_STORAGE=/dir``); otherwise ``filecache::`` keeps objects across runs
in ``$XDG_CACHE_HOME/synthgen/objects`` (default ``~/.cache/synthgen/objects``) and
``simplecache::`` in a temporary directory removed when the process exits. Objects are cached
under a fingerprint of the dataset's root ``zarr.json``, so a dataset replaced by a different
one at the same URL never reads the old one's cached objects.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from typing import Any

import fsspec

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_SESSION_DIR: dict[int, str] = {}


def _lock_for(path: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(path, threading.Lock())


def _session_cache_dir() -> str:
    """A temporary directory for ``simplecache::`` in this process, removed at exit."""
    pid = os.getpid()
    with _LOCKS_GUARD:
        if pid not in _SESSION_DIR:
            directory = tempfile.mkdtemp(prefix="synthgen-cache-")
            _SESSION_DIR[pid] = directory

            def remove(directory: str = directory, owner: int = pid) -> None:
                if os.getpid() == owner:  # not in forked children (DataLoader workers)
                    shutil.rmtree(directory, ignore_errors=True)

            atexit.register(remove)
        return _SESSION_DIR[pid]


def cache_directory(protocol: str) -> str:
    """Where ``protocol`` (simplecache or filecache) keeps objects; see the module docstring."""
    storage = fsspec.config.conf.get(protocol, {}).get("cache_storage")
    if isinstance(storage, (list, tuple)):
        storage = storage[-1] if storage else None
    if storage and storage != "TMP":
        return os.path.expanduser(str(storage))
    if protocol == "filecache":
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        return os.path.join(base, "synthgen", "objects")
    return _session_cache_dir()


def is_metadata_key(key: str) -> bool:
    """Metadata is never cached: JSON (zarr.json, commit records, manifests) and the Zarr v2
    names zarr probes for (.zgroup, .zattrs, .zarray, .zmetadata)."""
    return key.endswith(".json") or key.rsplit("/", 1)[-1].startswith(".z")


class ObjectCache:
    """Whole objects under a remote root, fetched once into a local directory.

    Layout: ``DIR/<protocol>/<root>/<fingerprint>/<key>``, the fingerprint being the first 16
    hex digits of the SHA-256 of the remote root's ``zarr.json`` ("none" without one). Picklable
    (the remote filesystem is; locks are per process).
    """

    def __init__(self, fs: Any, root: str, directory: str, url: str) -> None:
        self.fs = fs
        self.root = root
        self.directory = directory
        self.url = url
        self._folder: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_folder": None}

    @property
    def folder(self) -> str:
        if self._folder is None:
            try:
                fingerprint = hashlib.sha256(self.fs.cat_file(f"{self.root}/zarr.json")).hexdigest()[:16]
            except FileNotFoundError:
                fingerprint = "none"
            protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
            self._folder = os.path.join(self.directory, protocol, *self.root.strip("/").split("/"),
                                        fingerprint)
        return self._folder

    def local_path(self, key: str) -> str:
        """The local file holding object ``key``, downloaded first if needed (FileNotFoundError
        if the remote object does not exist)."""
        target = os.path.join(self.folder, *key.split("/"))
        if os.path.isfile(target):
            return target
        with _lock_for(target):
            if os.path.isfile(target):
                return target
            os.makedirs(self.folder, exist_ok=True)
            temp = os.path.join(self.folder, f".{uuid.uuid4().hex}.part")
            try:
                self.fs.get_file(f"{self.root}/{key}", temp)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(temp, target)
            finally:
                if os.path.exists(temp):
                    os.remove(temp)
        return target

    def read(self, key: str, start: int | None = None, stop: int | None = None,
             suffix: int | None = None) -> bytes:
        """Bytes of ``key``: all, ``[start:stop]`` (``stop`` None: to the end), or the last
        ``suffix`` bytes."""
        return read_local_range(self.local_path(key), start, stop, suffix)


def read_local_range(path: str, start: int | None = None, stop: int | None = None,
                     suffix: int | None = None) -> bytes:
    """Bytes of the local file ``path``: all, ``[start:stop]`` (``stop`` None: to the end), or
    the last ``suffix`` bytes, with ``pread`` (no file object: this is on the streaming reader's
    path, once per label chunk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        first = max(0, size - suffix) if suffix is not None else (start or 0)
        last = size if stop is None or suffix is not None else min(stop, size)
        parts = []
        while first < last:
            part = os.pread(fd, last - first, first)
            if not part:
                break
            parts.append(part)
            first += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)
