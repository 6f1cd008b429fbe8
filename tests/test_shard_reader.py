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
from synthgen.store.shard_reader import read_layout, read_samples, shard_layout


@pytest.mark.parametrize("field", ["fixed", "fixed_labels", "displacement"])
def test_equal_to_zarr_for_every_run(small_dataset: Path, field: str) -> None:
    dataset = open_dataset(str(small_dataset))
    layout = read_layout(dataset.objects, field)
    assert layout is not None and layout.compressed == (field == "fixed_labels")
    array = zarr.open_array(str(small_dataset / field), mode="r")
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
