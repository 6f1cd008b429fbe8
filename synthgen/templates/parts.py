"""Writing one part (all templates of one subject) and the record that commits it."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from synthgen.templates.layout import BLOSC, PART_CHUNK_BYTES, SHARD_KEY, packed_size, part_key, part_path


@dataclasses.dataclass(frozen=True)
class PartRecord:
    """What the manifest holds about one subject: its part and the index of its templates.

    Attributes:
        subject: subject id (TotalSegmentator folder name, label-map file stem, or family).
        part: folder name under ``parts/``, or None if the subject gave no template.
        checksum: SHA-256 hex digest of the part's shard object ("" without a part).
        spacing: (3,) voxel size of every template of this subject in mm.
        names: organ / label name of each template, in part order.
        voxels: foreground voxel count of each template.
        shapes: (d, h, w) of each template's tight crop.
        offsets: byte offset of each template's packed bits in the part array.
        dropped: names of masks that gave no template ("empty": no foreground in the source,
            "vanished": empty after resampling).
    """

    subject: str
    part: str | None
    checksum: str
    spacing: tuple[float, float, float]
    names: tuple[str, ...]
    voxels: tuple[int, ...]
    shapes: tuple[tuple[int, int, int], ...]
    offsets: tuple[int, ...]
    dropped: dict[str, tuple[str, ...]]

    @property
    def nbytes(self) -> int:
        """Length in bytes of the part array (0 without a part)."""
        return self.offsets[-1] + packed_size(math.prod(self.shapes[-1])) if self.offsets else 0

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "part": self.part, "checksum": self.checksum,
                "spacing": list(self.spacing), "names": list(self.names), "voxels": list(self.voxels),
                "shapes": [list(s) for s in self.shapes], "offsets": list(self.offsets),
                "dropped": {k: list(v) for k, v in self.dropped.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "PartRecord":
        return cls(subject=data["subject"], part=data["part"], checksum=data["checksum"],
                   spacing=tuple(float(s) for s in data["spacing"]),  # type: ignore[arg-type]
                   names=tuple(data["names"]), voxels=tuple(int(v) for v in data["voxels"]),
                   shapes=tuple(tuple(int(n) for n in s) for s in data["shapes"]),  # type: ignore[misc]
                   offsets=tuple(int(o) for o in data["offsets"]),
                   dropped={k: tuple(v) for k, v in data["dropped"].items()})


def pack(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """Concatenate the packed bits of bool masks (C order, each starting on a byte boundary).

    Returns:
        ``(data, offsets)``: data is a 1-D uint8 array; ``offsets[i]`` is where mask i starts.
    """
    packed = [np.packbits(m.ravel()) for m in masks]
    offsets = np.concatenate([[0], np.cumsum([p.size for p in packed])[:-1]]).astype(np.int64)
    return np.concatenate(packed), [int(o) for o in offsets]


def write_part(bank: str, subject: str, templates: Sequence[tuple[str, np.ndarray]],
               spacing: Sequence[float], dropped: dict[str, Sequence[str]]) -> PartRecord:
    """Write the part of ``subject`` under ``bank`` (replacing any leftover of an interrupted
    build) and return its record; nothing is committed until the record enters the manifest.

    Args:
        bank: the bank's path or URL.
        subject: subject id.
        templates: ``(name, mask)`` pairs, masks bool (d, h, w), tight and non-empty.
        spacing: (3,) voxel size of the masks in mm.
        dropped: see ``PartRecord.dropped``.
    """
    dropped_lists = {k: tuple(v) for k, v in dropped.items()}
    common = dict(subject=subject, spacing=tuple(float(s) for s in spacing), dropped=dropped_lists,
                  names=tuple(n for n, _ in templates),
                  voxels=tuple(int(np.count_nonzero(m)) for _, m in templates),
                  shapes=tuple(tuple(int(n) for n in m.shape) for _, m in templates))
    if not templates:
        return PartRecord(part=None, checksum="", offsets=(), **common)  # type: ignore[arg-type]
    data, offsets = pack([m for _, m in templates])
    key = part_key(subject)
    path = part_path(bank, key)
    shard = -(-data.size // PART_CHUNK_BYTES) * PART_CHUNK_BYTES
    array = zarr.create_array(store=path, shape=data.shape, dtype="uint8", chunks=(PART_CHUNK_BYTES,),
                              shards=(shard,), compressors=BloscCodec(**BLOSC), fill_value=0,
                              overwrite=True, attributes={"subject": subject})
    array[:] = data
    fs, root = fsspec.core.url_to_fs(path)
    checksum = hashlib.sha256(fs.cat_file(f"{root}/{SHARD_KEY}")).hexdigest()
    return PartRecord(part=key, checksum=checksum, offsets=tuple(offsets), **common)  # type: ignore[arg-type]
