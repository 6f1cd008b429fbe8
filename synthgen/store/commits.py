"""Commit records: a shard exists for readers only once its record is written.

A record names every shard object of the shard with its size and SHA-256, so ``verify`` can
prove the bytes on storage are the bytes that were committed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from typing import Any

from synthgen.store.info import DatasetInfo
from synthgen.store.layout import COMMITS_DIR, commit_record_key, shard_object_key
from synthgen.store.objects import ObjectStore

_RECORD_NAME = re.compile(r"^shard-(\d{6})\.json$")


@dataclasses.dataclass(frozen=True)
class ShardObject:
    key: str
    nbytes: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class CommitRecord:
    shard: int
    start: int
    stop: int
    objects: dict[str, ShardObject]
    seconds: float
    created: float

    def to_bytes(self) -> bytes:
        body = dataclasses.asdict(self)
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "CommitRecord":
        body: dict[str, Any] = json.loads(data)
        objects = {f: ShardObject(**o) for f, o in body.pop("objects").items()}
        return cls(objects=objects, **body)

    @property
    def nbytes(self) -> int:
        return sum(o.nbytes for o in self.objects.values())


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def describe_shard_objects(objects: ObjectStore, info: DatasetInfo, shard: int) -> dict[str, ShardObject]:
    """Read back every shard object of ``shard`` and fingerprint it (size and SHA-256)."""
    described = {}
    for field, spec in info.schema.items():
        key = shard_object_key(field, spec, shard)
        data = objects.read(key)
        described[field] = ShardObject(key=key, nbytes=len(data), sha256=sha256_hex(data))
    return described


def write_commit(objects: ObjectStore, info: DatasetInfo, shard: int, seconds: float) -> CommitRecord:
    start, stop = info.shard_range(shard)
    record = CommitRecord(shard=shard, start=start, stop=stop,
                          objects=describe_shard_objects(objects, info, shard),
                          seconds=round(seconds, 3), created=time.time())
    objects.write_atomic(commit_record_key(shard), record.to_bytes())
    return record


def committed_shards(objects: ObjectStore) -> list[int]:
    """Shard ids with a commit record, from one listing of the commits folder."""
    shards = []
    for name in objects.list_names(COMMITS_DIR):
        match = _RECORD_NAME.match(name)
        if match:
            shards.append(int(match.group(1)))
    return sorted(shards)


def read_commit(objects: ObjectStore, shard: int) -> CommitRecord:
    return CommitRecord.from_bytes(objects.read(commit_record_key(shard)))
