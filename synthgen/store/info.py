"""DatasetInfo: everything the group attributes hold, and the comparison used on resume."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from synthgen.engines.base import FieldSpec
from synthgen.errors import SynthgenError
from synthgen.store.layout import DEFAULT_LABEL_CODEC, FORMAT_VERSION, LEGACY_LABEL_CODEC


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """The identity of a dataset. Two runs with equal identities produce identical bytes.
    ``label_codec`` names the codec of its label maps (``synthgen.store.layout.LABEL_CODECS``)."""

    engine: str
    config: dict[str, Any]
    seed: int
    num_samples: int
    shard_size: int
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    schema: dict[str, FieldSpec]
    synthgen_version: str
    format_version: int = FORMAT_VERSION
    label_codec: str = DEFAULT_LABEL_CODEC

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_samples / self.shard_size)

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Sample indices [start, stop) of ``shard``."""
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.num_samples)

    def shard_of(self, index: int) -> int:
        """The shard holding sample ``index``; SynthgenError naming the valid range if none does."""
        if not 0 <= index < self.num_samples:
            raise SynthgenError(
                f"sample index {index} is out of range; this dataset has samples 0..{self.num_samples - 1}")
        return index // self.shard_size

    def sample_nbytes(self) -> int:
        """Uncompressed bytes of one sample over all fields."""
        return sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in self.schema.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "engine": self.engine,
            "config": self.config,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "shard_size": self.shard_size,
            "num_shards": self.num_shards,
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "synthgen_version": self.synthgen_version,
            "label_codec": self.label_codec,
            "schema": {name: spec.to_json() for name, spec in self.schema.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DatasetInfo":
        return cls(
            engine=data["engine"], config=data["config"], seed=int(data["seed"]),
            num_samples=int(data["num_samples"]), shard_size=int(data["shard_size"]),
            shape=tuple(data["shape"]), spacing=tuple(float(s) for s in data["spacing"]),
            schema={k: FieldSpec.from_json(v) for k, v in data["schema"].items()},
            synthgen_version=data["synthgen_version"], format_version=int(data["format_version"]),
            label_codec=data.get("label_codec", LEGACY_LABEL_CODEC))

    def differences(self, other: "DatasetInfo") -> list[str]:
        """Human-readable differences that make ``other`` a different dataset, e.g.
        ``["seed: 0 (existing) vs 7 (requested)", "config.size: 64 vs 128"]``."""
        mine, theirs = self.to_json(), other.to_json()
        diffs = []
        for key in ("engine", "seed", "num_samples", "shard_size", "format_version", "synthgen_version",
                    "label_codec"):
            if mine[key] != theirs[key]:
                diffs.append(f"{key}: {_value_difference(mine[key], theirs[key])}")
        for key in sorted(set(mine["config"]) | set(theirs["config"])):
            a, b = mine["config"].get(key, "<unset>"), theirs["config"].get(key, "<unset>")
            if a != b:
                diffs.append(f"config.{key}: {_value_difference(a, b)}")
        if not diffs and mine["schema"] != theirs["schema"]:
            diffs.append("schema differs")
        return diffs


def _value_difference(a: Any, b: Any) -> str:
    """How two config values differ, short: a list by its length or first differing entry, a
    dict by its differing keys (e.g. the SHA-256 of one ingested source file)."""
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{len(a)} entries (existing) vs {len(b)} (requested)"
        k = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        return f"entry {k}: {_value_difference(a[k], b[k])}"
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        return "; ".join(f"{k} {_short(a.get(k))} (existing) vs {_short(b.get(k))} (requested)" for k in keys)
    return f"{_short(a)} (existing) vs {_short(b)} (requested)"


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def default_shard_size(sample_nbytes: int, target_bytes: int = 256 * 2**20) -> int:
    """Largest power of two S (1..1024) with S samples <= ``target_bytes`` uncompressed:
    big enough that a shard is one efficient storage object, small enough for task memory."""
    size = 1
    while size * 2 * sample_nbytes <= target_bytes and size < 1024:
        size *= 2
    return size
