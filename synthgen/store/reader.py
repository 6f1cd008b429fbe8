"""Reading a dataset: committed shards only, whole shards or single samples, clear errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import zarr

from synthgen.engines import Engine, FieldSpec, engine_names, get_engine

from synthgen.errors import SynthgenError, first_line
from synthgen.store.commits import committed_shards
from synthgen.store.generated import GeneratedDataset, is_generated_spec
from synthgen.store.info import DatasetInfo
from synthgen.store.layout import shard_object_key
from synthgen.store.objects import ObjectStore
from synthgen.store.shard_reader import (CorruptChunk, ShardLayout, read_index, read_layout, read_sample_into,
                                         read_samples)
from synthgen.store.verify import VerifyReport, verify_shards
from synthgen.store.writer import read_info, zarr_store


class Dataset:
    """A synthgen dataset opened for reading.

    ``len(ds)`` is the number of samples the dataset will hold when complete; ``ds[i]`` returns
    sample ``i`` as ``{field: numpy array}`` if its shard is committed, else raises
    SynthgenError. A committed shard whose object is missing or corrupt also raises
    SynthgenError naming the shard (Zarr alone would return zeros for a missing shard); every
    read checks each sample's chunk against its crc32c (datasets written before chunk checksums:
    the shard index's checksum and the decoder's checks only).
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.objects = ObjectStore(self.path)
        info = read_info(self.objects)
        if info is None:
            raise SynthgenError(
                f"{self.path} is not a synthgen dataset (no synthgen attributes in zarr.json); "
                f"create one with `synthgen generate --out {self.path}`")
        self.info: DatasetInfo = info
        self._group: Any = None
        self._committed = set(committed_shards(self.objects))
        self._engine: Engine | None = None
        self._arrays: dict[str, Any] = {}
        self._layouts: dict[str, ShardLayout | None] = {}
        self._indexes: dict[tuple[str, int], tuple[str, ShardLayout, np.ndarray]] = {}
        self._present: set[tuple[str, int]] = set()

    def __len__(self) -> int:
        return self.info.num_samples

    def refresh(self) -> None:
        """Re-list commit records (a dataset still being generated gains shards)."""
        self._committed = set(committed_shards(self.objects))

    @property
    def committed(self) -> list[int]:
        return sorted(self._committed)

    @property
    def is_complete(self) -> bool:
        return len(self._committed) == self.info.num_shards

    @property
    def fields(self) -> list[str]:
        return list(self.info.schema)

    @property
    def chunk_checksums(self) -> bool:
        """Whether every stored field's chunks end with a crc32c that each read checks (False for
        datasets written before chunk checksums, which only ``verify`` checks byte for byte)."""
        return all(layout is not None and layout.checksummed for layout in map(self._layout, self.fields))

    @property
    def engine(self) -> Engine:
        """The engine that made this dataset, with its recorded config."""
        if self._engine is None:
            self._engine = get_engine(self.info.engine, **self.info.config)
        return self._engine

    @property
    def derived_schema(self) -> dict[str, FieldSpec]:
        """Fields the engine renders from the stored ones; none for an engine this synthgen
        version does not know (its stored fields are still readable)."""
        return self.engine.derived_schema if self.info.engine in engine_names() else {}

    @property
    def full_schema(self) -> dict[str, FieldSpec]:
        """Stored fields plus the fields the engine derives from them."""
        return {**self.info.schema, **self.derived_schema}

    def derive(self, stored: dict[str, torch.Tensor], index: int, device: torch.device | str | None = None
               ) -> dict[str, torch.Tensor]:
        """The derived fields of sample ``index`` from its stored fields ``stored`` (tensors),
        rendered on ``device``; empty when the engine derives nothing."""
        if not self.derived_schema:
            return {}
        return self.engine.derive(stored, self.info.seed, index, device=device)

    def sample_with_derived(self, index: int, device: torch.device | str | None = None
                            ) -> dict[str, np.ndarray]:
        """Sample ``index`` with its stored fields and the engine's derived fields (rendered on
        ``device``), as numpy arrays."""
        sample = self[index]
        if not self.derived_schema:
            return sample
        derived = self.derive({name: torch.from_numpy(array) for name, array in sample.items()}, index, device)
        return {**sample, **{name: tensor.cpu().numpy() for name, tensor in derived.items()}}

    def verify(self) -> VerifyReport:
        """Recompute the fingerprint of every committed shard (reads every byte once)."""
        self.refresh()
        return verify_shards(self.objects, self.info, self.committed)

    def shard_of(self, index: int) -> int:
        return self.info.shard_of(index)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        shard = self._readable_shard(self.shard_of(int(index)), self.fields)
        return {f: self._read(f, shard, int(index)) for f in self.fields}

    def read_shard(self, shard: int, fields: list[str] | None = None) -> dict[str, np.ndarray]:
        """All samples of a committed shard, one storage call per field:
        ``{field: array (samples in shard, *field shape)}``."""
        fields = self.fields if fields is None else list(fields)
        self._readable_shard(shard, fields)
        start, stop = self.info.shard_range(shard)
        return {f: self._read(f, shard, slice(start, stop)) for f in fields}

    def read_sample_into(self, field: str, index: int, out: np.ndarray) -> None:
        """Read sample ``index`` of ``field`` into ``out`` (C-contiguous, the field's shape and
        dtype, e.g. a row of a batch tensor): one ranged read and a crc32c check for store
        format v1 shards, the shard's index table read once per process."""
        shard_size = self.info.shard_size
        shard = index // shard_size
        cached = self._indexes.get((field, shard)) if 0 <= index < self.info.num_samples else None
        if cached is None:  # first read of this shard and field: every check, then the index table
            shard = self._readable_shard(self.shard_of(index), [field])
            layout = self._layout(field)
            if layout is None:
                with self._damage_errors(field, shard, index):
                    out[...] = self._array(field)[index]
                return
            key = shard_object_key(field, self.info.schema[field], shard)
            with self._damage_errors(field, shard, index):
                cached = self._indexes[(field, shard)] = (key, layout, read_index(self.objects, key, layout))
        key, layout, table = cached
        with self._damage_errors(field, shard, index):
            read_sample_into(self.objects, key, layout, table, index - shard * shard_size, out)

    def _readable_shard(self, shard: int, fields: list[str]) -> int:
        """``shard`` if it is committed; a SynthgenError otherwise, or when a field read through
        zarr lacks its object (zarr would read zeros; the direct reader finds it missing itself)."""
        if shard not in self._committed:
            raise SynthgenError(
                f"shard {shard} of {self.path} is not committed (the dataset is incomplete); "
                f"rerun the same `synthgen generate` command to finish it")
        for field in fields:
            if (field, shard) in self._present or self._layout(field) is not None:
                continue
            if self.objects.exists(shard_object_key(field, self.info.schema[field], shard)):
                self._present.add((field, shard))
            else:
                raise SynthgenError(
                    f"shard {shard} of field {field} is missing from {self.path} although committed; "
                    f"run `synthgen verify {self.path}` and regenerate the damaged shards")
        return shard

    def _read(self, field: str, shard: int, selection: int | slice) -> np.ndarray:
        layout = self._layout(field)
        with self._damage_errors(field, shard, selection if isinstance(selection, int) else None):
            if layout is None:
                return np.asarray(self._array(field)[selection])
            base = shard * self.info.shard_size
            first, stop = ((selection.start, selection.stop) if isinstance(selection, slice)
                           else (selection, selection + 1))
            key = shard_object_key(field, self.info.schema[field], shard)
            samples = read_samples(self.objects, key, layout, first - base, stop - base)
            return samples if isinstance(selection, slice) else samples[0]

    def _layout(self, field: str) -> ShardLayout | None:
        """The v1 shard layout of ``field`` for the direct reader, or None to read through zarr."""
        if field not in self._layouts:
            self._layouts[field] = read_layout(self.objects, field)
        return self._layouts[field]

    def _array(self, field: str) -> Any:
        """The zarr array of ``field`` (only for layouts the direct shard reader does not read)."""
        if field not in self._arrays:
            if self._group is None:
                self._group = zarr.open_group(store=zarr_store(self.path, read_only=True), mode="r")
            self._arrays[field] = self._group[field]
        return self._arrays[field]

    @contextlib.contextmanager
    def _damage_errors(self, field: str, shard: int, index: int | None = None) -> Iterator[None]:
        """Damaged bytes become a SynthgenError naming the shard and the sample (``index``, or
        the one the shard reader found damaged); storage trouble (OSError) keeps its own message."""
        try:
            yield
        except SynthgenError:
            raise
        except FileNotFoundError as err:
            raise SynthgenError(
                f"shard {shard} of field {field} is missing from {self.path} although committed; "
                f"run `synthgen verify {self.path}` and regenerate the damaged shards") from err
        except OSError:
            raise
        except Exception as err:  # zarr, its codecs and shard_reader raise ValueError/RuntimeError/...
            if isinstance(err, CorruptChunk):
                index = shard * self.info.shard_size + err.offset
            where = "" if index is None else f" at sample {index}"
            raise SynthgenError(
                f"shard {shard} of field {field} in {self.path} is corrupt{where} ({type(err).__name__}: "
                f"{first_line(err)}); run `synthgen verify {self.path}` and regenerate the damaged "
                f"shards") from err


def open_dataset(path: str) -> Dataset | GeneratedDataset:
    """Open a synthgen dataset for reading: a store (local path or fsspec URL), or a
    ``generate:ENGINE?n=N...`` spec generated on demand (see ``synthgen.store.generated``)."""
    return GeneratedDataset(path) if is_generated_spec(path) else Dataset(path)


def open_stored_dataset(path: str, purpose: str) -> Dataset:
    """Open a stored dataset; a ``generate:`` spec is refused with one line naming ``purpose``."""
    if is_generated_spec(path):
        raise SynthgenError(f"{path} is generated on the fly and stores nothing, so it has no {purpose}; "
                            f"write it with `synthgen generate` first")
    return Dataset(path)
