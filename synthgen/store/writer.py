"""Creating a dataset, resuming into one, and writing whole shards with their commit records.

Only whole-shard writes: zarr-python loses data silently when two writers touch one shard
(zarr-python issue 3682), and each shard belongs to exactly one task. A shard is written
field by field, read back, fingerprinted, and only then committed.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore

from synthgen.errors import SynthgenError
from synthgen.store.commits import CommitRecord, committed_shards, write_commit
from synthgen.store.info import DatasetInfo
from synthgen.store.layout import ATTRIBUTE_KEY, COMMITS_DIR, compressors_for, shard_object_key
from synthgen.store.objects import ObjectStore, foreign_output_error
from synthgen.store.urls import is_remote_url
from synthgen.store.zarr_stores import fsspec_zarr_store


def zarr_store(path: str, read_only: bool) -> LocalStore | FsspecStore:
    """The Zarr store for a local path or an fsspec URL (s3://, gs://, file://), or a read cache
    URL such as ``filecache::s3://bucket/x.zarr`` (read-only; see ``synthgen.store.cache``)."""
    if is_remote_url(str(path)):
        return fsspec_zarr_store(str(path), read_only=read_only)
    return LocalStore(str(path), read_only=read_only)


def read_info(objects: ObjectStore) -> DatasetInfo | None:
    """The DatasetInfo of the group at ``objects``' root, or None if it is not a synthgen dataset."""
    if not objects.exists("zarr.json"):
        return None
    try:
        attributes = json.loads(objects.read("zarr.json")).get("attributes", {})
        return DatasetInfo.from_json(attributes[ATTRIBUTE_KEY])
    except (ValueError, KeyError, TypeError):
        return None


def prepare_dataset(path: str, info: DatasetInfo, overwrite: bool = False, keep_label_codec: bool = False,
                    chunk_checksums: bool = True) -> list[int]:
    """Create the dataset at ``path`` or check that the one there is the same; returns the shard
    ids already committed (to be skipped).

    Refuses (SynthgenError, nothing touched) a path that is a file, a non-empty directory that
    is not a synthgen dataset, or a synthgen dataset with another identity unless ``overwrite``.
    ``keep_label_codec``: resuming takes the existing dataset's label codec instead of
    ``info.label_codec`` (for a codec the user did not choose). ``chunk_checksums``: a new
    dataset's chunks carry a crc32c (False only to write the layout of datasets made before
    chunk checksums, for tests and benchmarks); a resume always keeps the existing arrays' codecs.
    """
    objects = ObjectStore(path)
    if objects.existing_output("dataset"):
        existing = read_info(objects)
        if existing is None:
            raise foreign_output_error(path, "dataset")
        if overwrite:
            objects.remove_all()
        else:
            if keep_label_codec:
                info = dataclasses.replace(info, label_codec=existing.label_codec)
            differences = existing.differences(info)
            if differences:
                raise SynthgenError(
                    f"{path} holds a different dataset ({'; '.join(differences)}); rerun with the "
                    f"original arguments to resume, --overwrite to replace it, or another --out")
            return committed_shards(objects)
    _create(path, info, chunk_checksums)
    return []


def _create(path: str, info: DatasetInfo, chunk_checksums: bool) -> None:
    group = zarr.open_group(store=zarr_store(path, read_only=False), mode="w", zarr_format=3)
    for name, spec in info.schema.items():
        group.create_array(
            name, shape=(info.num_samples, *spec.shape), dtype=spec.dtype,
            chunks=(1, *spec.shape), shards=(info.shard_size, *spec.shape),
            compressors=compressors_for(spec, info.label_codec, chunk_checksums), fill_value=0,
            config={"write_empty_chunks": True}, attributes={"meaning": spec.meaning, "kind": spec.kind})
    group.create_group(COMMITS_DIR, attributes={"meaning": "commit records, one JSON per shard"})
    # Attributes last: a folder without them is recognisably an unfinished creation.
    group.attrs[ATTRIBUTE_KEY] = info.to_json()


def write_shard(path: str, info: DatasetInfo, shard: int, arrays: dict[str, np.ndarray],
                started: float | None = None) -> CommitRecord:
    """Write all fields of ``shard`` (each array shaped (samples in shard, *field shape)) in one
    call per field, then commit it. Temporary files that an interrupted earlier write of this
    shard left behind are removed first (the shard's task is its only writer)."""
    started = time.perf_counter() if started is None else started
    start, stop = info.shard_range(shard)
    objects = ObjectStore(path)
    group = zarr.open_group(store=zarr_store(path, read_only=False), mode="r+")
    for name, spec in info.schema.items():
        objects.remove_stale_temporaries(shard_object_key(name, spec, shard))
        data = arrays[name]
        expected = (stop - start, *spec.shape)
        if data.shape != expected or data.dtype != np.dtype(spec.dtype):
            raise ValueError(f"shard {shard} field {name}: got {data.dtype}{data.shape}, "
                             f"schema says {spec.dtype}{expected}")
        group[name][start:stop] = data
    return write_commit(objects, info, shard, time.perf_counter() - started)
