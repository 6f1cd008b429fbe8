"""ShardStream: coverage, order independent of ranks and workers, equal counts, exact resume,
damaged shards, growing datasets, and storage-mode independence after the device stage."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from synthgen.engines import get_engine
from synthgen.errors import SynthgenError
from synthgen.runner import generate
from synthgen.store.layout import COMMITS_DIR, shard_object_key
from synthgen.stream import DeviceStage, ShardStream
from synthgen.stream.crop import apply_crop, crop_start
from tests.helpers import assert_one_line_error, flip_chunk_byte

N, SHARD = 45, 4  # 12 shards, the last with one sample
FIELDS = ("fixed_labels",)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stream") / "shapes.zarr"
    generate(get_engine("random-shapes", size=32), str(out), N, seed=2, shard_size=SHARD,
             backend="local", progress=False)
    return out


def rank_sequence(path: Path, rank: int, world: int, workers: int, batch: int, state: dict | None = None,
                  epoch: int = 0, **kwargs) -> list[int]:
    stream = ShardStream(str(path), fields=FIELDS, seed=9, rank=rank, world_size=world, batch_size=batch, **kwargs)
    stream.set_epoch(epoch)
    if state is not None:
        stream.load_state_dict(state)
    loader = DataLoader(stream, batch_size=None, num_workers=workers)
    return [int(i) for b in loader for i in b["index"]]


def interleave(sequences: list[list[int]]) -> list[int]:
    return [s[i] for i in range(len(sequences[0])) for s in sequences]


@pytest.mark.parametrize("world, workers, batch", [(1, 0, 4), (1, 2, 4), (2, 2, 3), (4, 1, 2), (8, 0, 1), (3, 2, 2)])
def test_every_sample_once_same_order_equal_counts(shapes: Path, world: int, workers: int, batch: int) -> None:
    order = ShardStream(str(shapes), fields=FIELDS, seed=9).epoch_order().tolist()
    assert sorted(order) == list(range(N))
    sequences = [rank_sequence(shapes, r, world, workers, batch) for r in range(world)]
    assert len({len(s) for s in sequences}) == 1, "every rank yields the same count"
    assert len(sequences[0]) == N // world
    assert interleave(sequences) == order[: (N // world) * world], "the epoch order is the same for any ranks x workers"


def test_padding_repeats_only_as_needed(shapes: Path) -> None:
    order = ShardStream(str(shapes), fields=FIELDS, seed=9).epoch_order().tolist()
    sequences = [rank_sequence(shapes, r, 4, 1, 2, drop_last=False) for r in range(4)]
    assert {len(s) for s in sequences} == {12}
    merged = interleave(sequences)
    assert merged[:N] == order and merged[N:] == order[: 48 - N]


def test_epochs_differ_and_repeat(shapes: Path) -> None:
    a = ShardStream(str(shapes), fields=FIELDS, seed=9)
    first = a.epoch_order().tolist()
    a.set_epoch(1)
    assert a.epoch_order().tolist() != first and sorted(a.epoch_order().tolist()) == sorted(first)
    a.set_epoch(0)
    assert a.epoch_order().tolist() == first
    assert ShardStream(str(shapes), fields=FIELDS, seed=9, shuffle=False).epoch_order().tolist() == list(range(N))


@pytest.mark.parametrize("before, after, consumed", [((1, 2, 4), (1, 0, 4), 8), ((2, 2, 3), (3, 1, 2), 6),
                                                     ((4, 1, 2), (2, 2, 5), 3), ((1, 0, 1), (8, 2, 1), 17)])
def test_resume_yields_exactly_the_rest_of_the_epoch(shapes: Path, before: tuple, after: tuple, consumed: int) -> None:
    world, workers, batch = before
    stream = ShardStream(str(shapes), fields=FIELDS, seed=9, rank=0, world_size=world, batch_size=batch)
    stream.set_epoch(3)
    order = stream.epoch_order().tolist()
    done = interleave([rank_sequence(shapes, r, world, workers, batch, epoch=3)[:consumed] for r in range(world)])
    state = stream.state_dict(samples_consumed=consumed)
    assert state["position"] == consumed * world and state["epoch"] == 3
    world2, workers2, batch2 = after
    rest = [rank_sequence(shapes, r, world2, workers2, batch2, state=state) for r in range(world2)]
    assert len({len(s) for s in rest}) == 1
    remaining = N - consumed * world
    assert done + interleave(rest) == order[: consumed * world + (remaining // world2) * world2]
    assert ShardStream(str(shapes), fields=FIELDS, seed=9, rank=0, world_size=world2).num_samples == N // world2
    resumed = ShardStream(str(shapes), fields=FIELDS, seed=9, rank=0, world_size=world2, batch_size=batch2)
    resumed.load_state_dict(state)
    assert resumed.num_samples == remaining // world2
    assert len(resumed) == -(-(remaining // world2) // batch2)


def test_state_from_other_settings_is_refused(shapes: Path) -> None:
    state = ShardStream(str(shapes), fields=FIELDS, seed=9).state_dict(4)
    with pytest.raises(SynthgenError, match="saved with"):
        ShardStream(str(shapes), fields=FIELDS, seed=10).load_state_dict(state)


def test_state_counts_outside_the_epoch_are_refused(shapes: Path) -> None:
    """samples_consumed counts within the epoch: beyond what this rank yields from its start (or
    negative) would resume into an empty epoch, so it is refused, naming the maximum."""
    stream = ShardStream(str(shapes), fields=FIELDS, seed=9, rank=1, world_size=2)
    most = N // 2
    assert stream.state_dict(most)["position"] == most * 2
    resumed = ShardStream(str(shapes), fields=FIELDS, seed=9, rank=1, world_size=2)
    resumed.load_state_dict(stream.state_dict(8))
    assert resumed.state_dict(most - 8)["position"] == most * 2
    for source, bad, limit in ((stream, most + 1, most), (stream, -1, most), (resumed, most - 7, most - 8)):
        with pytest.raises(SynthgenError, match="the count is per epoch") as err:
            source.state_dict(bad)
        message = str(err.value)
        assert f"samples_consumed={bad} is outside 0..{limit}" in message and "\n" not in message


def test_items_have_schema_dtypes_crops_and_float32(shapes: Path) -> None:
    batches = list(ShardStream(str(shapes), fields=("fixed", "displacement", "fixed_labels"), seed=1,
                               shuffle=False, crop=(16, 8, 24), batch_size=4))
    first = batches[0]
    assert first["fixed"].dtype == torch.float16 and first["fixed_labels"].dtype == torch.uint8
    assert tuple(first["fixed"].shape) == (4, 16, 8, 24) and tuple(first["displacement"].shape) == (4, 3, 16, 8, 24)
    assert len(batches) == 12 and tuple(batches[-1]["index"].shape) == (1,), "the last batch holds the remainder"
    for row, index in enumerate(first["index"].tolist()):
        corner = crop_start((32, 32, 32), (16, 8, 24), seed=1, epoch=0, index=index)
        stored = ShardStream(str(shapes), fields=("fixed",)).dataset[index]["fixed"]
        np.testing.assert_array_equal(first["fixed"][row].numpy(), apply_crop(stored, corner, (16, 8, 24)))
    again = list(ShardStream(str(shapes), fields=("fixed",), seed=1, shuffle=False, crop=(16, 8, 24), batch_size=4))
    assert all(torch.equal(a["fixed"], b["fixed"]) for a, b in zip(batches, again))
    wide = next(iter(ShardStream(str(shapes), fields=("fixed",), seed=1, float32=True)))
    assert wide["fixed"].dtype == torch.float32 and tuple(wide["fixed"].shape) == (1, 32, 32, 32)


@pytest.mark.parametrize("damage", ["truncate", "delete", "flip"])
def test_damaged_shard_raises_or_is_skipped(shapes: Path, tmp_path: Path, damage: str) -> None:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(shapes, copy)
    info = ShardStream(str(copy), fields=FIELDS).dataset.info
    target = copy / shard_object_key("fixed_labels", info.schema["fixed_labels"], 5)
    bad = set(range(5 * SHARD, 6 * SHARD))
    if damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:50])
    else:  # one byte of one compressed label chunk: its crc32c names the sample
        flip_chunk_byte(copy, "fixed_labels", 5 * SHARD + 1)
        bad = {5 * SHARD + 1}
    match = r"shard 5 .*corrupt at sample 21 .*synthgen verify" if damage == "flip" else r"shard 5 .*synthgen verify"
    with pytest.raises(SynthgenError, match=match):
        rank_sequence(copy, 0, 1, 0, 4)
    before = []  # iterated directly, batch size 1: every batch before the damaged one arrives first
    with pytest.raises(SynthgenError, match=match):
        for batch in ShardStream(str(copy), fields=FIELDS, shuffle=False):
            before += batch["index"].tolist()
    assert before == list(range(min(bad)))

    def skipping() -> tuple[list[list[int]], list[int]]:
        sequences, warned = [], []
        for rank in range(2):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sequences.append(rank_sequence(copy, rank, 2, 0, 3, on_error="skip"))
            warned.append(sum("shard 5" in str(w.message) for w in caught))
        return sequences, warned

    sequences, warned = skipping()
    assert sum(warned) >= 1 and max(warned) == 1, "a warning, once per stream"
    assert len(sequences[0]) == len(sequences[1]) == N // 2, "skipping keeps the counts equal"
    assert skipping()[0] == sequences, "stand-ins do not depend on the reader threads' timing"
    order = ShardStream(str(copy), fields=FIELDS, seed=9).epoch_order()[: N // 2 * 2]
    seen = set(sequences[0]) | set(sequences[1])
    assert seen == set(order.tolist()) - bad, "every readable sample, no unreadable one"


def test_reading_while_generate_adds_shards(tmp_path: Path) -> None:
    out = tmp_path / "growing.zarr"
    args = [sys.executable, "-m", "synthgen.cli", "generate", "--engine", "random-shapes", "--size", "32",
            "--n", "60", "--shard-size", "1", "--backend", "local", "--quiet", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / COMMITS_DIR).exists() or len(list((out / COMMITS_DIR).glob("shard-*"))) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stream = ShardStream(str(out), fields=("fixed_labels",), seed=0)
    seen_sizes = []
    epoch = 0
    while True:
        stream.set_epoch(epoch)
        committed = set(stream.dataset.committed)
        indices = [int(i) for batch in stream for i in batch["index"]]
        assert sorted(indices) == sorted(committed), "an epoch reads exactly the shards committed at its start"
        seen_sizes.append(len(indices))
        epoch += 1
        if proc.poll() is not None and len(indices) == 60:
            break
        assert time.monotonic() < deadline
    assert proc.returncode == 0 and seen_sizes[0] < 60 and seen_sizes == sorted(seen_sizes)


@pytest.fixture(scope="module")
def ensembles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    """The same label-ensemble samples stored with views (default label codec), and compact
    (``--store labels``) with the label codecs "none" and "zstd"."""
    root = tmp_path_factory.mktemp("ensembles")
    paths = []
    for store, codec in (("views", None), ("labels", "none"), ("labels", "zstd")):
        path = root / f"{store}-{codec}.zarr"
        generate(get_engine("label-ensemble", size=32, store=store), str(path), 6, seed=4, shard_size=2,
                 backend="local", progress=False, label_codec=codec)
        paths.append(path)
    return tuple(paths)


@pytest.mark.parametrize("crop", [None, (24, 16, 32)])
def test_compact_and_materialised_give_equal_batches_after_device_stage(
        ensembles: tuple[Path, ...], crop: tuple | None) -> None:
    batches = []
    for path, fields in zip(ensembles, (("labels", "view1", "view2"), ("labels",), ("labels",))):
        stream = ShardStream(str(path), fields=fields, seed=5, batch_size=3, crop=crop)
        stage = DeviceStage(str(path), crop=crop, augment=True, seed=5)
        batches.append([stage(batch, "cpu") for batch in DataLoader(stream, batch_size=None, num_workers=1)])
    for a, *others in zip(*batches):
        for b in others:
            assert set(a) == set(b) == {"labels", "view1", "view2", "index"}
            for key in a:
                assert torch.equal(a[key], b[key]), key
    shape = (3, 1, *(crop or (32, 32, 32)))
    assert tuple(batches[0][0]["view1"].shape) == shape and batches[0][0]["labels"].dtype == torch.int64


def test_device_stage_takes_a_deferred_crop_from_the_stream(ensembles: tuple[Path, ...]) -> None:
    """A ``--store labels`` stream defers its crop; a DeviceStage without ``crop`` takes the size
    from the batches and gives what a stage told the crop gives; a different crop is refused."""
    path, crop = str(ensembles[1]), (24, 16, 32)
    batches = list(ShardStream(path, fields=("labels",), seed=5, batch_size=3, crop=crop))
    assert all(b["crop_size"].tolist() == [list(crop)] * len(b["index"]) for b in batches)
    told, untold = DeviceStage(path, crop=crop, augment=True, seed=5), DeviceStage(path, augment=True, seed=5)
    for batch in batches:
        want, got = told(dict(batch), "cpu"), untold(dict(batch), "cpu")
        assert set(want) == set(got) == {"labels", "view1", "view2", "index"}
        assert all(torch.equal(want[key], got[key]) for key in want)
        assert tuple(got["view1"].shape) == (len(batch["index"]), 1, *crop)
    with pytest.raises(SynthgenError, match=r"differs from the stream's crop \(24, 16, 32\)"):
        DeviceStage(path, crop=(16, 16, 16))(dict(batches[0]), "cpu")


def test_bad_arguments(shapes: Path) -> None:
    with pytest.raises(SynthgenError, match="unknown field"):
        ShardStream(str(shapes), fields=("nope",))
    with pytest.raises(SynthgenError, match="on_error"):
        ShardStream(str(shapes), on_error="ignore")
    with pytest.raises(SynthgenError, match="crop"):
        ShardStream(str(shapes), crop=(64, 8, 8))
    with pytest.raises(SynthgenError, match="rank and world_size"):
        ShardStream(str(shapes), rank=2, world_size=2)
    with pytest.raises(SynthgenError, match="not a synthgen dataset"):
        ShardStream(str(shapes / "fixed"))


def test_stream_bench_command(shapes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from synthgen.cli import main

    assert main(["stream-bench", str(shapes), "--workers", "0", "--fields", "fixed_labels", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert f"{N} samples" in out and "samples/s" in out and "MB/s" in out


def test_stream_bench_reports_a_worker_error_in_one_line(shapes: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from synthgen.cli import main

    copy = tmp_path / "copy.zarr"
    shutil.copytree(shapes, copy)
    info = ShardStream(str(copy), fields=FIELDS).dataset.info
    (copy / shard_object_key("fixed_labels", info.schema["fixed_labels"], 1)).unlink()
    code = main(["stream-bench", str(copy), "--workers", "1", "--fields", "fixed_labels"])
    err = capsys.readouterr().err
    assert_one_line_error(code, err, "shard 1 of field fixed_labels is missing", "synthgen verify",
                          prefix="synthgen stream-bench: error:")
