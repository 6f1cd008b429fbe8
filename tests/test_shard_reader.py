"""The direct shard reader returns exactly what zarr returns, and refuses damaged bytes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from synthgen import open_dataset
from synthgen.store.layout import shard_object_key
from synthgen.store.objects import ObjectStore
from synthgen.store.shard_reader import aligned_empty, read_layout, read_samples, shard_layout
from tests.helpers import write_legacy_copy


@pytest.mark.parametrize("checksums", [True, False])  # today's layout, and the one before chunk checksums
@pytest.mark.parametrize("field", ["fixed", "fixed_labels", "displacement"])
def test_equal_to_zarr_for_every_run(small_dataset: Path, tmp_path: Path, field: str, checksums: bool) -> None:
    path = small_dataset if checksums else write_legacy_copy(small_dataset, tmp_path / "legacy.zarr")
    dataset = open_dataset(str(path))
    layout = read_layout(dataset.objects, field)
    assert layout is not None and layout.compressed == (field == "fixed_labels") and layout.checksummed == checksums
    array = zarr.open_array(str(path / field), mode="r")
    spec = dataset.info.schema[field]
    for shard in dataset.committed:
        start, stop = dataset.info.shard_range(shard)
        key = shard_object_key(field, spec, shard)
        for first in range(start, stop):
            for last in range(first + 1, stop + 1):
                got = read_samples(dataset.objects, key, layout, first - start, last - start)
                np.testing.assert_array_equal(got, array[first:last])
                assert got.dtype == array.dtype


def test_other_layouts_fall_back_to_zarr(small_dataset: Path) -> None:
    metadata = json.loads((small_dataset / "fixed" / "zarr.json").read_text())
    assert shard_layout(metadata) is not None
    inner = metadata["codecs"][0]["configuration"]["codecs"]
    inner.insert(1, {"name": "crc32c"})  # two checksums: not a layout synthgen writes
    assert shard_layout(metadata) is None
    del inner[1]
    metadata["codecs"][0]["configuration"]["index_location"] = "start"
    assert shard_layout(metadata) is None
    assert shard_layout({"codecs": [{"name": "bytes"}]}) is None


def test_damaged_index_is_refused(small_dataset: Path) -> None:
    objects = ObjectStore(str(small_dataset))
    dataset = open_dataset(str(small_dataset))
    layout = read_layout(objects, "fixed")
    target = small_dataset / shard_object_key("fixed", dataset.info.schema["fixed"], 0)
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        read_samples(objects, shard_object_key("fixed", dataset.info.schema["fixed"], 0), layout, 0, 2)


def test_aligned_empty_starts_on_a_page() -> None:
    array = aligned_empty((3, 5, 7), "float16")
    assert array.shape == (3, 5, 7) and array.dtype == np.float16 and array.flags.c_contiguous
    assert array.ctypes.data % 4096 == 0
