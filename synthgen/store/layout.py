"""Where things live inside a dataset, and the per-field codecs (store format v1).

    PATH/zarr.json                   Zarr v3 group; attribute "synthgen" holds DatasetInfo
    PATH/<field>/                    one array per field, shape (N, *sample_shape),
                                     sharding codec: inner chunk = 1 sample, shard = S samples
    PATH/<field>/c/<k>/0/...         the shard object of shard k (default chunk key encoding)
    PATH/_commits/zarr.json          an empty Zarr group, so Zarr tools see a valid hierarchy
    PATH/_commits/shard-<k>.json     commit record of shard k: the only thing readers trust

The label codec (attribute ``label_codec``) and the per-chunk crc32c joined format v1 without a
version bump: both are additive (each array's zarr.json declares its codecs; a dataset without
the attribute is blosc-zstd), every v1 reader reads both layouts (synthgen versions before them
read the new inner chain through zarr), and a resume writes through the existing arrays' codecs,
so one dataset never mixes layouts.
"""

from __future__ import annotations

from typing import Any

from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec

from synthgen.engines.base import FieldSpec
from synthgen.errors import SynthgenError

FORMAT_VERSION = 1
ATTRIBUTE_KEY = "synthgen"
COMMITS_DIR = "_commits"


def shard_object_key(field: str, spec: FieldSpec, shard: int) -> str:
    """Key of shard ``shard`` of ``field`` relative to the dataset root (one shard spans all
    non-sample axes, so every other grid index is 0)."""
    return "/".join([field, "c", str(shard)] + ["0"] * len(spec.shape))


def commit_record_key(shard: int) -> str:
    return f"{COMMITS_DIR}/shard-{shard:06d}.json"


# Label map codecs (``--label-codec``), blosc with byte shuffle. On label-ensemble label maps at
# 128^3 (benchmarks/README.md, "Stream throughput"): "lz4" (the LZ4 format written by blosc's
# high-compression lz4hc encoder, level 5; 17.4x) decodes 4-5x faster than "zstd" (24.8x), which
# a reader at memory speed needs more than the 1.4x fewer bytes, hence the default; "none"
# stores label maps raw (no decoding, 18x the bytes of "lz4", no faster to stream here).
LABEL_CODECS: dict[str, BloscCodec | None] = {
    "lz4": BloscCodec(cname="lz4hc", clevel=5, shuffle=BloscShuffle.shuffle),
    "zstd": BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle),
    "none": None,
}
DEFAULT_LABEL_CODEC = "lz4"
LEGACY_LABEL_CODEC = "zstd"  # datasets written before the codec was an option, without the attribute


def check_label_codec(name: str) -> str:
    """``name`` if it is one of LABEL_CODECS, else SynthgenError naming the choices."""
    if name not in LABEL_CODECS:
        raise SynthgenError(f"--label-codec must be one of {', '.join(LABEL_CODECS)}, got {name!r}")
    return name


def compressors_for(spec: FieldSpec, label_codec: str, checksums: bool = True) -> list[Any]:
    """The bytes-to-bytes codecs of one sample's chunk (the sharding codec's inner chain after
    ``bytes``): label maps (kind "labels") through ``label_codec`` (a LABEL_CODECS name); noisy
    float16 intensities and smooth float16 fields gain <1.25x from any lossless codec, so they
    are stored raw (no CPU spent on compression at write or read). With ``checksums`` every
    chunk ends with its crc32c (zarr v3's ``crc32c`` codec), checked on every read by zarr and
    by ``synthgen.store.shard_reader``; datasets written before chunk checksums have none."""
    codec = LABEL_CODECS[check_label_codec(label_codec)] if spec.kind == "labels" else None
    return [c for c in (codec, Crc32cCodec() if checksums else None) if c is not None]
