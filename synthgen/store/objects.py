"""Raw byte access to a dataset's objects, local or remote, through fsspec.

Zarr handles the arrays; this module handles what Zarr does not: commit records, checksums of
shard objects, existence checks and whole-dataset removal.
"""

from __future__ import annotations

import os
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem


class ObjectStore:
    """Objects under a root path or URL; keys are '/'-separated and relative to the root."""

    def __init__(self, root: str) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(str(root))
        self.root = self.root.rstrip("/")
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def exists(self, key: str = "") -> bool:
        return self.fs.exists(self.path(key))

    def is_dir(self, key: str = "") -> bool:
        return self.fs.isdir(self.path(key))

    def size(self, key: str) -> int:
        return int(self.fs.size(self.path(key)))

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(self.path(key))

    def write_atomic(self, key: str, data: bytes) -> None:
        """Readers see the old object or the whole new one, never a part: temp file and rename
        on a local disk; object stores make a single PUT atomic by themselves."""
        target = self.path(key)
        if not self.is_local:
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
            entries = self.fs.ls(self.path(key), detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def disk_usage(self) -> int:
        """Total bytes of all objects under the root."""
        return int(self.fs.du(self.root, total=True))

    def remove_all(self) -> None:
        if self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)
