"""Raw byte access to a dataset's objects, local or remote, through fsspec.

Zarr handles the arrays; this module handles what Zarr does not: commit records, checksums of
shard objects, existence checks and whole-dataset removal. It also makes the Zarr store for a
URL (``zarr_store`` in ``writer.py`` calls :func:`fsspec_zarr_store`), so that both speak to
remote storage the same way.

Remote storage is any fsspec URL (``s3://`` through s3fs, ``gs://`` through gcsfs, ...),
configured the standard way of its library (for S3: AWS environment variables or ``~/.aws``,
``AWS_ENDPOINT_URL`` for S3-compatible services; any fsspec option also through
``FSSPEC_<PROTOCOL>_<OPTION>`` environment variables). Failures of the environment (no
credentials, endpoint unreachable, access denied, missing bucket, library not installed) become
one-line :class:`SynthgenError` messages.

**Read cache.** A URL prefixed with ``simplecache::`` or ``filecache::`` (fsspec's chained-URL
syntax, e.g. ``filecache::s3://bucket/x.zarr``) reads data objects (shard objects) through a
local cache: each is fetched whole once, then read from local disk. JSON metadata (``zarr.json``,
commit records) and listings always come from the remote, so a reader sees newly committed
shards. Deliberate deviation from fsspec's own caching filesystems, which synthgen does not use
for this: they expose partially downloaded files to concurrent readers (threads of one process
and processes sharing a cache directory), and zarr's suffix reads of shard indexes fail through
them (fsspec 2026.9). Here every object is downloaded to a temporary file and renamed into place,
one download per object per process. The cache directory is fsspec's ``cache_storage`` option
for that protocol when configured (``FSSPEC_FILECACHE_CACHE_STORAGE=/dir``,
``FSSPEC_SIMPLECACHE_CACHE_STORAGE=/dir``); otherwise ``filecache::`` keeps objects across runs
in ``$XDG_CACHE_HOME/synthgen/objects`` (default ``~/.cache/synthgen/objects``) and
``simplecache::`` in a temporary directory removed when the process exits. Objects are cached
under a fingerprint of the dataset's root ``zarr.json``, so a dataset replaced by a different
one at the same URL never reads the old one's cached objects. Cache URLs are read-only: writes
are refused with a SynthgenError naming the plain URL to write to.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.storage import FsspecStore

from synthgen.errors import SynthgenError

CACHE_PROTOCOLS = ("simplecache", "filecache")
UNSUPPORTED_CACHE_PROTOCOLS = ("blockcache", "cached")
# what FsspecStore reads as a missing key (its own default)
ALLOWED_EXCEPTIONS: tuple[type[Exception], ...] = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
INSTALL_HINT = "pip install 'synthgen[remote]' (s3fs for s3://, gcsfs for gs://)"


# ----------------------------------------------------------------------------------------------
# URLs and errors


def split_cache_url(url: str) -> tuple[str | None, str]:
    """``"filecache::s3://b/x.zarr"`` -> ``("filecache", "s3://b/x.zarr")``; a URL without a
    cache prefix -> ``(None, url)``."""
    text = str(url)
    head, sep, rest = text.partition("::")
    if not sep:
        return None, text
    if head in UNSUPPORTED_CACHE_PROTOCOLS:
        raise SynthgenError(
            f"{text}: the {head}:: cache is not supported for synthgen datasets; use "
            f"simplecache::{rest} (cache for this process) or filecache::{rest} (kept across runs)")
    if head in CACHE_PROTOCOLS:
        if rest.partition("::")[0] in CACHE_PROTOCOLS + UNSUPPORTED_CACHE_PROTOCOLS:
            raise SynthgenError(f"{text}: give one cache prefix, not several")
        return head, rest
    return None, text


def is_remote_url(path: str) -> bool:
    """True for anything fsspec must resolve (a URL or a chained URL), False for a plain path."""
    return "://" in str(path) or "::" in str(path)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def environment_error(url: str, err: BaseException, writing: bool = False) -> SynthgenError | None:
    """A one-line SynthgenError for an error of the storage environment (missing library,
    credentials, endpoint, permissions, bucket), or None for anything else."""
    names = {cls.__name__ for cls in type(err).__mro__}
    if isinstance(err, ImportError):
        return SynthgenError(f"cannot open {url}: {_first_line(err)}; {INSTALL_HINT}")
    if any("Credentials" in name for name in names) or "DefaultCredentialsError" in names:
        return SynthgenError(
            f"no credentials for {url} ({_first_line(err)}); for S3 set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / ~/.aws/credentials), for GCS run "
            f"`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS")
    if isinstance(err, PermissionError):
        return SynthgenError(
            f"access to {url} was denied ({_first_line(err)}); check the credentials and the "
            f"bucket's permissions")
    if (names & {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                 "ClientConnectorError", "ServerDisconnectedError", "ConnectionClosedError"}
            or isinstance(err, (ConnectionError, TimeoutError))):
        return SynthgenError(
            f"cannot reach the storage service for {url} ({_first_line(err)}); check the network "
            f"and AWS_ENDPOINT_URL (S3-compatible services)")
    if writing and isinstance(err, FileNotFoundError):
        return SynthgenError(
            f"cannot write to {url} ({_first_line(err)}); create the bucket first "
            f"(e.g. `aws s3 mb s3://BUCKET`)")
    return None


@contextlib.contextmanager
def translated_errors(url: str, writing: bool = False) -> Iterator[None]:
    """Re-raise environment errors (see :func:`environment_error`) as one-line SynthgenErrors."""
    try:
        yield
    except SynthgenError:
        raise
    except Exception as err:
        translated = environment_error(url, err, writing=writing)
        if translated is None:
            raise
        raise translated from err


def refuse_cache_write(url: str) -> SynthgenError:
    _, remote = split_cache_url(url)
    return SynthgenError(
        f"{url} reads through a local cache and cannot be written; write to {remote} "
        f"(without the cache prefix) and read through the cache URL")


# ----------------------------------------------------------------------------------------------
# The local read cache


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
        with open(self.local_path(key), "rb") as handle:
            if suffix is not None:
                size = os.fstat(handle.fileno()).st_size
                handle.seek(max(0, size - suffix))
                return handle.read()
            if start:
                handle.seek(start)
            return handle.read() if stop is None else handle.read(max(0, stop - (start or 0)))


# ----------------------------------------------------------------------------------------------
# ObjectStore


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
        os.makedirs(os.path.dirname(target), exist_ok=True)
        temp = f"{target}.{uuid.uuid4().hex}.tmp"
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)

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


# ----------------------------------------------------------------------------------------------
# Zarr stores for URLs (used by writer.zarr_store)


class RemoteZarrStore(FsspecStore):
    """FsspecStore whose writes turn environment errors (missing bucket, credentials, endpoint,
    permissions) into one-line SynthgenErrors."""

    def __init__(self, fs: Any, read_only: bool = False, path: str = "/",
                 allowed_exceptions: tuple[type[Exception], ...] = ALLOWED_EXCEPTIONS,
                 url: str = "", cache: ObjectCache | None = None) -> None:
        super().__init__(fs, read_only=read_only, path=path, allowed_exceptions=allowed_exceptions)
        self.url = url or path
        self.cache = cache

    def with_read_only(self, read_only: bool = False) -> RemoteZarrStore:
        return type(self)(fs=self.fs, path=self.path, allowed_exceptions=self.allowed_exceptions,
                          read_only=read_only, url=self.url, cache=self.cache)

    def _write_errors(self) -> contextlib.AbstractContextManager[None]:
        local = isinstance(getattr(self.fs, "sync_fs", self.fs), LocalFileSystem)
        return contextlib.nullcontext() if local else translated_errors(self.url, writing=True)

    async def set(self, key: str, value: Any, byte_range: Any = None) -> None:
        with self._write_errors():
            await super().set(key, value, byte_range)

    async def delete(self, key: str) -> None:
        with self._write_errors():
            await super().delete(key)


class CachedZarrStore(RemoteZarrStore):
    """Read-only FsspecStore reading data objects (shard objects) through ObjectCache; metadata
    (``*.json``) and listings go to the remote."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.read_only:
            raise refuse_cache_write(self.url)

    async def get(self, key: str, prototype: Any, byte_range: ByteRequest | None = None) -> Any:
        if is_metadata_key(key) or self.cache is None:
            return await super().get(key, prototype, byte_range)
        if byte_range is None:
            bounds: dict[str, int | None] = {}
        elif isinstance(byte_range, RangeByteRequest):
            bounds = {"start": byte_range.start, "stop": byte_range.end}
        elif isinstance(byte_range, OffsetByteRequest):
            bounds = {"start": byte_range.offset}
        elif isinstance(byte_range, SuffixByteRequest):
            bounds = {"suffix": byte_range.suffix}
        else:
            raise ValueError(f"unexpected byte range {byte_range!r}")
        try:
            with translated_errors(self.url):
                data = await asyncio.to_thread(self.cache.read, key, **bounds)
        except FileNotFoundError:
            return None
        return prototype.buffer.from_bytes(data)

    async def get_partial_values(self, prototype: Any,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Any]:
        return list(await asyncio.gather(*(self.get(key, prototype, byte_range)
                                           for key, byte_range in key_ranges)))


def fsspec_zarr_store(url: str, read_only: bool) -> Any:
    """The Zarr store for an fsspec URL, plain (``s3://b/x.zarr``) or with a read cache
    (``filecache::s3://b/x.zarr``, read-only: ``read_only=False`` raises SynthgenError)."""
    protocol, remote = split_cache_url(url)
    if protocol is not None and not read_only:
        raise refuse_cache_write(url)
    with translated_errors(url):
        base = FsspecStore.from_url(remote, read_only=read_only)
    if protocol is None:
        return RemoteZarrStore(base.fs, read_only=read_only, path=base.path, url=url)
    objects = ObjectStore(url)
    return CachedZarrStore(base.fs, read_only=True, path=base.path, url=url, cache=objects.cache)
