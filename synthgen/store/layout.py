"""Where things live inside a dataset, and the per-field codecs (store format v1).

    PATH/zarr.json                   Zarr v3 group; attribute "synthgen" holds DatasetInfo
    PATH/<field>/                    one array per field, shape (N, *sample_shape),
                                     sharding codec: inner chunk = 1 sample, shard = S samples
    PATH/<field>/c/<k>/0/...         the shard object of shard k (default chunk key encoding)
    PATH/_commits/zarr.json          an empty Zarr group, so Zarr tools see a valid hierarchy
    PATH/_commits/shard-<k>.json     commit record of shard k: the only thing readers trust
"""

from __future__ import annotations

from typing import Any

from zarr.codecs import BloscCodec, BloscShuffle

from synthgen.engines.base import FieldSpec

FORMAT_VERSION = 1
ATTRIBUTE_KEY = "synthgen"
COMMITS_DIR = "_commits"


def shard_object_key(field: str, spec: FieldSpec, shard: int) -> str:
    """Key of shard ``shard`` of ``field`` relative to the dataset root (one shard spans all
    non-sample axes, so every other grid index is 0)."""
    return "/".join([field, "c", str(shard)] + ["0"] * len(spec.shape))


def commit_record_key(shard: int) -> str:
    return f"{COMMITS_DIR}/shard-{shard:06d}.json"


def compressors_for(spec: FieldSpec) -> Any:
    """Codecs chosen for the data: label maps compress ~35x with blosc-zstd and byte shuffle;
    noisy float16 intensities and smooth float16 fields gain <1.25x from any lossless codec,
    so they are stored raw (no CPU spent on compression at write or read)."""
    if spec.kind == "labels":
        return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)
    return None
