"""The store: format, commit protocol, reader errors, verify, resume and overwrite rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from synthgen import open_dataset
from synthgen.engines import get_engine
from synthgen.errors import SynthgenError
from synthgen.cli import main
from synthgen.runner import generate
from synthgen.store.layout import commit_record_key, shard_object_key
from synthgen.store.shard_reader import read_layout
from synthgen.stream import ShardStream
from tests.conftest import SMALL, SMALL_N, SMALL_SHARD, make_small, shard_bytes, tree_snapshot
from tests.helpers import assert_one_line_error, flip_chunk_byte, run_main, write_legacy_copy


def test_format_is_one_zarr_v3_group_with_sharded_arrays(small_dataset: Path) -> None:
    group = zarr.open_group(str(small_dataset), mode="r")
    attrs = dict(group.attrs)["synthgen"]
    assert attrs["format_version"] == 1 and attrs["engine"] == "random-shapes" and attrs["label_codec"] == "lz4"
    assert attrs["seed"] == 3 and attrs["num_samples"] == SMALL_N and attrs["shard_size"] == SMALL_SHARD
    assert attrs["config"]["size"] == 32 and attrs["shape"] == [32, 32, 32]
    assert set(attrs["schema"]) == {"fixed", "moving", "fixed_labels", "moving_labels", "displacement"}
    for name, spec in attrs["schema"].items():
        meta = json.loads((small_dataset / name / "zarr.json").read_text())
        assert meta["zarr_format"] == 3 and meta["shape"] == [SMALL_N, *spec["shape"]]
        assert meta["data_type"] == spec["dtype"]
        sharding = meta["codecs"][0]
        assert sharding["name"] == "sharding_indexed"
        assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [SMALL_SHARD, *spec["shape"]]
        assert sharding["configuration"]["chunk_shape"] == [1, *spec["shape"]]
        inner = [c["name"] for c in sharding["configuration"]["codecs"]]
        if spec["kind"] == "labels":  # the default label codec: lz4 (blosc lz4hc), then each chunk's crc32c
            assert inner == ["bytes", "blosc", "crc32c"], inner
            blosc = sharding["configuration"]["codecs"][1]
            assert blosc["configuration"]["cname"] == "lz4hc" and blosc["configuration"]["shuffle"] == "shuffle"
        else:
            assert inner == ["bytes", "crc32c"], f"{name} should be stored raw with its checksum, got {inner}"
    # one shard object per field per shard, nothing else
    for name, spec in attrs["schema"].items():
        objects = sorted(p for p in (small_dataset / name / "c").rglob("*") if p.is_file())
        assert len(objects) == 3


def test_samples_read_back_with_schema_dtypes(small_dataset: Path) -> None:
    dataset = open_dataset(str(small_dataset))
    assert len(dataset) == SMALL_N and dataset.is_complete
    sample = dataset[9]
    for name, spec in dataset.info.schema.items():
        assert sample[name].dtype == np.dtype(spec.dtype) and sample[name].shape == spec.shape
    engine = get_engine("random-shapes", **SMALL)
    direct = engine.sample(3, 9)
    for name in sample:
        np.testing.assert_array_equal(sample[name], direct[name].numpy())
    shard = dataset.read_shard(2)
    assert shard["fixed"].shape == (2, 32, 32, 32)
    np.testing.assert_array_equal(shard["fixed_labels"][1], sample["fixed_labels"])


def test_uncommitted_shard_is_invisible_even_if_its_bytes_exist(small_dataset: Path) -> None:
    (small_dataset / commit_record_key(1)).unlink()
    dataset = open_dataset(str(small_dataset))
    assert dataset.committed == [0, 2] and not dataset.is_complete
    with pytest.raises(SynthgenError, match="shard 1 .*not committed"):
        dataset[5]
    report = dataset.verify()
    assert not report.ok and report.missing_shards == 1 and not report.problems


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_damaged_shard_reported_by_verify_and_reader(small_dataset: Path, damage: str) -> None:
    dataset = open_dataset(str(small_dataset))
    spec = dataset.info.schema["fixed_labels"]
    target = small_dataset / shard_object_key("fixed_labels", spec, 1)
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        target.unlink()
    else:
        target.write_bytes(data[:10] + bytes([data[10] ^ 0xFF]) + data[11:])
    report = open_dataset(str(small_dataset)).verify()
    assert not report.ok
    assert len(report.problems) == 1 and report.problems[0].startswith("shard 1 field fixed_labels")
    with pytest.raises(SynthgenError, match="shard 1 of field fixed_labels"):  # flip: the chunk's crc32c
        open_dataset(str(small_dataset))[4]
    assert open_dataset(str(small_dataset))[0]["fixed_labels"].any()  # other shards still read


@pytest.mark.parametrize("field", ["fixed", "fixed_labels"])  # a raw chunk, a blosc-compressed one
def test_one_flipped_byte_is_detected_by_every_read_path(small_dataset: Path, small_dataset_master: Path,
                                                          field: str) -> None:
    flip_chunk_byte(small_dataset, field, 5)
    dataset = open_dataset(str(small_dataset))
    needles = rf"shard 1 of field {field} in {small_dataset} is corrupt at sample 5 .*synthgen verify {small_dataset}"
    with pytest.raises(SynthgenError, match=needles) as caught:
        dataset[5]
    assert "\n" not in str(caught.value)
    with pytest.raises(SynthgenError, match=needles):
        dataset.read_shard(1)
    with pytest.raises(SynthgenError, match=needles):
        dataset.read_sample_into(field, 5, np.empty(dataset.info.schema[field].shape, dataset.info.schema[field].dtype))
    with pytest.raises(ValueError, match="checksum"):  # zarr checks the same crc32c
        zarr.open_group(str(small_dataset), mode="r")[field][5]
    with pytest.raises(SynthgenError, match=needles):
        list(ShardStream(str(small_dataset), fields=(field,)))
    with pytest.warns(RuntimeWarning, match=needles):
        rows = [i for b in ShardStream(str(small_dataset), fields=(field,), batch_size=2, on_error="skip")
                for i in b["index"].tolist()]
    assert len(rows) == SMALL_N and set(rows) == set(range(SMALL_N)) - {5}
    # the shard's other samples still read, unchanged
    np.testing.assert_array_equal(dataset[4][field], open_dataset(str(small_dataset_master))[4][field])
    problems = dataset.verify().problems
    assert len(problems) == 1 and problems[0].startswith(f"shard 1 field {field}")


def test_rerun_finishes_only_missing_shards_and_is_identical(small_dataset_master: Path, tmp_path: Path) -> None:
    partial = make_small(tmp_path / "partial.zarr")
    for shard in (0, 2):
        (partial / commit_record_key(shard)).unlink()
    committed_mtime = (partial / commit_record_key(1)).stat().st_mtime
    report = generate(get_engine("random-shapes", **SMALL), str(partial), SMALL_N, seed=3,
                      shard_size=SMALL_SHARD, backend="local", progress=False)
    assert (report.written_shards, report.skipped_shards) == (2, 1)
    assert (partial / commit_record_key(1)).stat().st_mtime == committed_mtime
    assert shard_bytes(partial) == shard_bytes(small_dataset_master)


def test_different_config_is_refused_with_the_difference(small_dataset: Path) -> None:
    before = tree_snapshot(small_dataset)
    with pytest.raises(SynthgenError, match=r"seed: 3 \(existing\) vs 4 \(requested\)"):
        generate(get_engine("random-shapes", **SMALL), str(small_dataset), SMALL_N, seed=4,
                 shard_size=SMALL_SHARD, backend="local", progress=False)
    with pytest.raises(SynthgenError, match=r"config.num_labels: 16 \(existing\) vs 8"):
        generate(get_engine("random-shapes", size=32, num_labels=8), str(small_dataset), SMALL_N,
                 seed=3, shard_size=SMALL_SHARD, backend="local", progress=False)
    assert tree_snapshot(small_dataset) == before


def test_overwrite_replaces_a_synthgen_dataset(small_dataset: Path) -> None:
    generate(get_engine("random-shapes", **SMALL), str(small_dataset), 3, seed=5, shard_size=2,
             backend="local", overwrite=True, progress=False)
    dataset = open_dataset(str(small_dataset))
    assert (len(dataset), dataset.info.seed, dataset.committed) == (3, 5, [0, 1])
    assert dataset.verify().ok


def test_refuses_foreign_directory_and_file_even_with_overwrite(tmp_path: Path) -> None:
    foreign = tmp_path / "mydata"
    foreign.mkdir()
    (foreign / "precious.nii.gz").write_bytes(b"patient data")
    a_file = tmp_path / "file.zarr"
    a_file.write_text("not a directory")
    engine = get_engine("random-shapes", **SMALL)
    with pytest.raises(SynthgenError, match="not a synthgen dataset"):
        generate(engine, str(foreign), 2, backend="local", overwrite=True, progress=False)
    with pytest.raises(SynthgenError, match="is a file"):
        generate(engine, str(a_file), 2, backend="local", overwrite=True, progress=False)
    assert (foreign / "precious.nii.gz").read_bytes() == b"patient data"
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.nii.gz"]
    assert a_file.read_text() == "not a directory"


def test_rewriting_a_shard_removes_temporaries_of_an_interrupted_write(small_dataset: Path,
                                                                       small_dataset_master: Path) -> None:
    spec_key = shard_object_key("fixed", open_dataset(str(small_dataset)).info.schema["fixed"], 1)
    stale = [small_dataset / f"{spec_key}.0123abcd.partial", small_dataset / f"{spec_key}.4567ef.tmp"]
    for path in stale:
        path.write_bytes(b"half a shard")
    (small_dataset / commit_record_key(1)).unlink()
    generate(get_engine("random-shapes", **SMALL), str(small_dataset), SMALL_N, seed=3,
             shard_size=SMALL_SHARD, backend="local", progress=False)
    assert not any(path.exists() for path in stale)
    assert shard_bytes(small_dataset) == shard_bytes(small_dataset_master)


@pytest.mark.parametrize("codec, inner", [("lz4", ["bytes", "blosc", "crc32c"]), ("zstd", ["bytes", "blosc", "crc32c"]),
                                          ("none", ["bytes", "crc32c"])])
def test_label_codec_is_recorded_read_verified_and_kept_on_resume(small_dataset_master: Path, tmp_path: Path,
                                                                 codec: str, inner: list[str]) -> None:
    out = make_small(tmp_path / "codec.zarr", label_codec=codec)
    dataset = open_dataset(str(out))
    assert dataset.info.label_codec == codec and dataset.verify().ok
    codecs = json.loads((out / "fixed_labels" / "zarr.json").read_text())["codecs"][0]["configuration"]["codecs"]
    assert [c["name"] for c in codecs] == inner
    if codec != "none":
        assert codecs[1]["configuration"]["cname"] == {"lz4": "lz4hc", "zstd": "zstd"}[codec]
    reference, group = open_dataset(str(small_dataset_master)), zarr.open_group(str(out), mode="r")
    for index in (0, 5, 9):
        for field, value in dataset[index].items():
            np.testing.assert_array_equal(value, reference[index][field])
        np.testing.assert_array_equal(group["fixed_labels"][index], reference[index]["fixed_labels"])
    before = shard_bytes(out)
    (out / commit_record_key(2)).unlink()
    assert make_small(out) and shard_bytes(out) == before, "a resume without --label-codec keeps the recorded one"
    other = "zstd" if codec != "zstd" else "none"
    with pytest.raises(SynthgenError, match=rf"label_codec: {codec} \(existing\) vs {other} \(requested\)"):
        make_small(out, label_codec=other)


def test_unknown_label_codec_is_one_line_error_and_writes_nothing(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.zarr"
    code, _, err = run_main(main, capsys, "generate", "--engine", "random-shapes", "--size", "32", "--n", "2",
                            "--backend", "local", "--quiet", "--label-codec", "gzip", "--out", str(out))
    assert_one_line_error(code, err, "--label-codec must be one of lz4, zstd, none, got 'gzip'",
                          prefix="synthgen generate: error:")
    assert not out.exists()


def test_dataset_written_before_chunk_checksums_reads_streams_verifies_and_resumes(small_dataset_master: Path,
                                                                                  tmp_path: Path) -> None:
    legacy = write_legacy_copy(small_dataset_master, tmp_path / "legacy.zarr")
    assert "label_codec" not in json.loads((legacy / "zarr.json").read_text())["attributes"]["synthgen"]
    dataset, reference = open_dataset(str(legacy)), open_dataset(str(small_dataset_master))
    assert dataset.info.label_codec == "zstd" and dataset.verify().ok
    assert [read_layout(dataset.objects, f).checksummed for f in ("fixed", "fixed_labels")] == [False, False]
    for index in range(SMALL_N):
        for field, value in dataset[index].items():
            np.testing.assert_array_equal(value, reference[index][field])
    stream = ShardStream(str(legacy), fields=("fixed", "fixed_labels"), shuffle=False, batch_size=3, drop_last=False)
    for batch in stream:
        for row, index in enumerate(batch["index"].tolist()):
            np.testing.assert_array_equal(batch["fixed_labels"][row].numpy(), reference[index]["fixed_labels"])
    before = shard_bytes(legacy)
    (legacy / commit_record_key(1)).unlink()
    report = make_small(legacy)  # today's code, no --label-codec: resumes in the dataset's own layout
    assert report and shard_bytes(legacy) == before
