"""Zarr stores for fsspec URLs, plain or through the local read cache.

``zarr_store`` in ``writer.py`` calls :func:`fsspec_zarr_store`, so that Zarr and
:class:`~synthgen.store.objects.ObjectStore` speak to remote storage the same way: environment
errors become one-line SynthgenErrors, and a ``simplecache::``/``filecache::`` URL reads data
objects through :class:`~synthgen.store.cache.ObjectCache` and refuses writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.storage import FsspecStore

from synthgen.store.cache import ObjectCache, is_metadata_key
from synthgen.store.objects import ObjectStore
from synthgen.store.urls import refuse_cache_write, split_cache_url, translated_errors

# what FsspecStore reads as a missing key (its own default)
ALLOWED_EXCEPTIONS: tuple[type[Exception], ...] = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


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
