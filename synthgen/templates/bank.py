"""Reading a template bank: the index, and masks by id, fast enough to draw from per sample.

A bank is opened once per process. Opening reads only the manifest (one object). The first read
from a part fetches its shard object whole (one object per subject), checks it against the
manifest's SHA-256, and keeps its compressed bytes in memory; every read decodes just the inner
chunks the template overlaps (``synthgen.templates.shard``). So memory grows to at most the
compressed size of the bank (about 1/100 of the masks' voxel count), never to the decoded
masks. Pickling a bank (e.g. into a Ray task) pickles its path and fingerprint only; the other
side reopens it and refuses a bank that changed meanwhile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import operator
from collections.abc import Iterable

import numpy as np

from synthgen.errors import SynthgenError
from synthgen.store.objects import ObjectStore
from synthgen.templates.layout import PARTS_DIR, SHARD_KEY, packed_size
from synthgen.templates.manifest import Manifest, read_manifest
from synthgen.templates.shard import chunk_count, read_range, shard_index


@dataclasses.dataclass(frozen=True)
class TemplateEntry:
    """One template: its id in the bank, organ/label name, subject, foreground voxel count,
    tight crop shape (d, h, w) and voxel size (3,) in mm."""

    id: int
    name: str
    subject: str
    voxels: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


class TemplateIndex:
    """The bank's index as columns of N = number of templates, in id order.

    Attributes:
        name: (N,) object array of str, organ or label name.
        subject: (N,) object array of str.
        voxels: (N,) int64 foreground voxel count.
        shape: (N, 3) int64 crop shape (d, h, w).
        spacing: (N, 3) float64 voxel size in mm.
        part: (N,) int64, which part (subject record) holds the template.
        offset: (N,) int64 byte offset of its packed bits in that part.
    """

    def __init__(self, manifest: Manifest) -> None:
        records = manifest.records
        counts = [len(r.names) for r in records]
        total = sum(counts)
        self.name = np.array([n for r in records for n in r.names], dtype=object)
        self.subject = np.repeat(np.array([r.subject for r in records], dtype=object), counts)
        self.voxels = np.fromiter((v for r in records for v in r.voxels), dtype=np.int64, count=total)
        self.shape = np.array([s for r in records for s in r.shapes], dtype=np.int64).reshape(total, 3)
        self.spacing = np.repeat(np.array([r.spacing for r in records], dtype=np.float64).reshape(-1, 3),
                                 counts, axis=0)
        self.part = np.repeat(np.arange(len(records), dtype=np.int64), counts)
        self.offset = np.fromiter((o for r in records for o in r.offsets), dtype=np.int64, count=total)

    def __len__(self) -> int:
        return len(self.voxels)

    def __getitem__(self, i: int) -> TemplateEntry:
        i = _check_id(i, len(self))
        return TemplateEntry(id=i, name=str(self.name[i]), subject=str(self.subject[i]),
                             voxels=int(self.voxels[i]),
                             shape=tuple(int(n) for n in self.shape[i]),  # type: ignore[arg-type]
                             spacing=tuple(float(s) for s in self.spacing[i]))  # type: ignore[arg-type]


def _check_id(i: int, total: int) -> int:
    i = operator.index(i)
    if not 0 <= i < total:
        raise IndexError(f"template id {i} is out of range 0..{total - 1}")
    return i


class TemplateBank:
    """A template bank opened for reading (see ``open_bank``).

    Attributes:
        path: the bank's path or URL.
        source: "totalsegmentator", "label-maps", "totalsegmentator+label-maps" (combined) or
            "procedural".
        fingerprint: SHA-256 hex of index and data; record it to detect a changed bank.
        spacing: (3,) voxel size in mm shared by all templates, or None if subjects kept
            different native spacings (then see ``entries.spacing``).
        options: the build options.
        subjects: committed subject ids, sorted.
        entries: the ``TemplateIndex``.
    """

    def __init__(self, path: str, manifest: Manifest) -> None:
        self.path = path
        self.source = manifest.source
        self.fingerprint = manifest.fingerprint
        self.options = manifest.options
        self.subjects = tuple(r.subject for r in manifest.records)
        self.entries = TemplateIndex(manifest)
        spacings = {r.spacing for r in manifest.records if r.names}
        self.spacing = spacings.pop() if len(spacings) == 1 else None
        self._objects = ObjectStore(path)
        self._parts = [(r.part, r.checksum, r.nbytes) for r in manifest.records]
        self._shards: dict[int, tuple[bytes, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"TemplateBank({self.path!r}, {len(self)} templates, source={self.source!r})"

    def __reduce__(self) -> tuple:
        return open_bank, (self.path, self.fingerprint)

    def mask(self, i: int) -> np.ndarray:
        """Template ``i`` as a (d, h, w) bool array (a new array; the caller may modify it)."""
        i = _check_id(i, len(self))
        shard, index = self._shard(int(self.entries.part[i]))
        d, h, w = (int(n) for n in self.entries.shape[i])
        start = int(self.entries.offset[i])
        packed = read_range(shard, index, start, start + packed_size(d * h * w))
        return np.unpackbits(packed, count=d * h * w).reshape(d, h, w).view(bool)

    def masks(self, ids: Iterable[int]) -> list[np.ndarray]:
        """``[self.mask(i) for i in ids]``."""
        return [self.mask(i) for i in ids]

    def _shard(self, part: int) -> tuple[bytes, np.ndarray]:
        """The cached shard bytes of part ``part`` and their index (fetched and checked once)."""
        cached = self._shards.get(part)
        if cached is None:
            key, checksum, nbytes = self._parts[part]
            where = f"{PARTS_DIR}/{key}/{SHARD_KEY}"
            try:
                shard = self._objects.read(where)
            except FileNotFoundError as err:
                raise SynthgenError(f"template bank {self.path} lacks {where}; the bank is damaged, rebuild "
                                    f"it with `synthgen templates build`") from err
            if hashlib.sha256(shard).hexdigest() != checksum:
                raise SynthgenError(f"template bank {self.path} has a damaged part {where} (checksum "
                                    f"mismatch); rebuild the bank with `synthgen templates build`")
            cached = self._shards[part] = (shard, shard_index(shard, chunk_count(nbytes)))
        return cached


def open_bank(path: str, fingerprint: str | None = None) -> TemplateBank:
    """Open the template bank at ``path`` (a folder or fsspec URL) for reading.

    Args:
        path: the bank, as written by ``build_from_totalsegmentator``, ``build_from_label_maps``
            or ``default_bank``.
        fingerprint: if given, the fingerprint the caller recorded earlier; a bank whose
            content changed since is refused.

    Raises:
        SynthgenError: ``path`` is not a template bank, or its fingerprint differs.
    """
    path = str(path)
    manifest = read_manifest(ObjectStore(path))
    if manifest is None:
        raise SynthgenError(f"{path} is not a synthgen template bank; build one with "
                            f"`synthgen templates build ...`")
    if fingerprint is not None and manifest.fingerprint != fingerprint:
        raise SynthgenError(f"template bank {path} has changed (fingerprint {manifest.fingerprint[:12]}, "
                            f"expected {fingerprint[:12]}); point to the bank the data was made with, or "
                            f"start a new dataset")
    return TemplateBank(path, manifest)
