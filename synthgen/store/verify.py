"""``synthgen verify``: recompute every committed shard's fingerprint and compare."""

from __future__ import annotations

import dataclasses

from synthgen.store.commits import read_commit, sha256_hex
from synthgen.store.info import DatasetInfo
from synthgen.store.objects import ObjectStore


@dataclasses.dataclass
class VerifyReport:
    checked: int
    total: int
    problems: list[str]

    @property
    def missing_shards(self) -> int:
        return self.total - self.checked

    @property
    def ok(self) -> bool:
        return not self.problems and self.missing_shards == 0


def verify_shards(objects: ObjectStore, info: DatasetInfo, committed: list[int]) -> VerifyReport:
    """Check size and SHA-256 of every object named by the commit records of ``committed``."""
    problems = []
    for shard in committed:
        try:
            record = read_commit(objects, shard)
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(f"shard {shard}: unreadable commit record ({type(err).__name__})")
            continue
        for field, expected in record.objects.items():
            if not objects.exists(expected.key):
                problems.append(f"shard {shard} field {field}: object {expected.key} is missing")
                continue
            data = objects.read(expected.key)
            if len(data) != expected.nbytes:
                problems.append(f"shard {shard} field {field}: {len(data)} bytes on storage, "
                                f"{expected.nbytes} committed (truncated or rewritten)")
            elif sha256_hex(data) != expected.sha256:
                problems.append(f"shard {shard} field {field}: checksum mismatch (corrupt)")
    return VerifyReport(checked=len(committed), total=info.num_shards, problems=problems)
