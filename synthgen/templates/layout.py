"""Template bank format v1: where things live and how masks are encoded.

    BANK/zarr.json          Zarr v3 group; attribute "synthgen_templates" is the manifest
                            (see ``synthgen.templates.manifest``): format version, source kind,
                            spacing, build options, committed subjects with their part checksums,
                            the columnar template index, and the fingerprint. Written whole and
                            atomically; it is the commit record of the whole bank.
    BANK/parts/zarr.json    Zarr v3 group holding the parts
    BANK/parts/<key>/       one part per subject (or label-map file, or procedural family): a 1-D
                            uint8 Zarr array, the packed bits of that subject's cropped masks
                            concatenated, sharded as a single shard object ``c/0`` of
                            PART_CHUNK_BYTES inner chunks, each blosc-zstd compressed.

A template's mask is ``np.unpackbits(part[offset:offset + ceil(d*h*w / 8)], count=d*h*w)
.reshape(d, h, w)`` (C order, big-endian bit order as numpy's packbits default), so plain
zarr-python can read it; ``TemplateBank`` reads faster by decoding cached shard bytes itself
(``synthgen.templates.shard``). Parts not named in the manifest are leftovers of an interrupted
build: readers never see them and the next build deletes them.
"""

from __future__ import annotations

import hashlib
import re

FORMAT_VERSION = 1
ATTRIBUTE_KEY = "synthgen_templates"
PARTS_DIR = "parts"

PART_CHUNK_BYTES = 16384  # 131,072 voxels per inner chunk: ~0.6 % decode waste per template read
BLOSC = {"cname": "zstd", "clevel": 5, "shuffle": "noshuffle"}  # bits are packed already
SHARD_KEY = "c/0"  # the one shard object of a part array (default chunk key encoding, "/")


def part_key(subject: str) -> str:
    """The folder name under ``parts/`` of a subject's part: readable and unique per subject
    (a sanitised name plus 8 hex digits of the subject's SHA-1)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", subject)[:64]
    return f"{safe}-{hashlib.sha1(subject.encode()).hexdigest()[:8]}"


def part_path(bank: str, key: str) -> str:
    """Path or URL of a part array under the bank ``bank``."""
    return f"{bank.rstrip('/')}/{PARTS_DIR}/{key}"


def packed_size(voxels: int) -> int:
    """Bytes taken by the packed bits of a mask of ``voxels`` voxels (whole bytes per template)."""
    return (voxels + 7) // 8
