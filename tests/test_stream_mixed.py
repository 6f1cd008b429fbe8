"""MixedStream: synthetic and real datasets in one stream, in exact proportions, with
ShardStream's ranks, workers and resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader

from synthgen import open_dataset
from synthgen.errors import SynthgenError
from synthgen.ingest.run import ingest
from synthgen.stream.mixed import MixSource, MixedStream, apportion, parse_mix
from tests.test_ingest import PROSTATE

pytestmark = pytest.mark.skipif(not PROSTATE.is_dir(), reason="shared data absent (see shared/data/README.md)")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mix") / "real.zarr"
    ingest(str(PROSTATE / "moving_images"), str(out), size=32, spacing=1.2, shard_size=4, backend="local",
           progress=False)
    return out


def mix(small_dataset_master: Path, real: Path, **options) -> MixedStream:
    sources = [MixSource(str(small_dataset_master), 0.75, {"image": "fixed"}), MixSource(str(real), 0.25)]
    return MixedStream(sources, fields=("image",), **options)


def items(batches) -> list[tuple[int, int]]:
    return [(int(s), int(i)) for batch in batches for s, i in zip(batch["source"], batch["index"])]


def test_parse_and_apportion() -> None:
    assert [(s.path, s.proportion) for s in parse_mix("s3://b/a.zarr:0.8, real.zarr:0.2")] == \
        [("s3://b/a.zarr", 0.8), ("real.zarr", 0.2)]
    assert parse_mix("only.zarr")[0].proportion == 1.0
    assert apportion(10, [0.75, 0.25]) == [8, 2] and sum(apportion(101, [1, 1, 1])) == 101
    with pytest.raises(SynthgenError):
        parse_mix("a.zarr:0")


def test_an_epoch_has_the_proportions_and_the_rows_of_each_source(small_dataset_master: Path, real: Path) -> None:
    stream = mix(small_dataset_master, real, seed=1, batch_size=4, epoch_size=40, drop_last=False)
    batches = list(stream)
    seen = items(batches)
    counts = Counter(s for s, _ in seen)
    assert len(seen) == 40 and counts == {0: 30, 1: 10}  # 30 of 10 synthetic samples: three orders
    assert Counter(i for s, i in seen if s == 0) == {i: 3 for i in range(10)}
    assert sorted(i for s, i in seen if s == 1) == list(range(10))
    synthetic, ingested = open_dataset(str(small_dataset_master)), open_dataset(str(real))
    batch = batches[0]
    for row in range(len(batch["index"])):
        source, index = int(batch["source"][row]), int(batch["index"][row])
        expected = synthetic[index]["fixed"] if source == 0 else ingested[index]["image"]
        assert np.array_equal(batch["image"][row].numpy(), expected)
    assert items(mix(small_dataset_master, real, seed=1, batch_size=3, epoch_size=40, drop_last=False)) == seen
    stream.set_epoch(1)
    assert items(stream) != seen


def test_ranks_workers_and_resume_give_the_single_process_sequence(small_dataset_master: Path, real: Path) -> None:
    whole = items(mix(small_dataset_master, real, seed=4, epoch_size=20))
    ranks = [items(mix(small_dataset_master, real, seed=4, epoch_size=20, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 10 and [x for pair in zip(*ranks) for x in pair] == whole
    stream = mix(small_dataset_master, real, seed=4, epoch_size=20, batch_size=2)
    consumed = []
    for batch in DataLoader(stream, batch_size=None, num_workers=2):
        consumed += items([batch])
        if len(consumed) == 6:
            break
    resumed = mix(small_dataset_master, real, seed=4, epoch_size=20, batch_size=5)
    resumed.load_state_dict(stream.state_dict(samples_consumed=6))
    assert consumed + items(resumed) == whole
    other = MixedStream([MixSource(str(small_dataset_master), 0.5, {"image": "fixed"}), MixSource(str(real), 0.5)],
                        fields=("image",), seed=4, epoch_size=20)
    with pytest.raises(SynthgenError) as excinfo:  # another mix: refused, not resumed wrongly
        other.load_state_dict(stream.state_dict(samples_consumed=6))
    assert "saved mix" in str(excinfo.value)


def test_fields_of_other_shapes_need_a_crop(small_dataset_master: Path, tmp_path: Path) -> None:
    smaller = tmp_path / "smaller.zarr"
    ingest(str(PROSTATE / "fixed_images"), str(smaller), size=24, spacing=1.0, backend="local", progress=False)
    sources = [MixSource(str(small_dataset_master), 1, {"image": "fixed"}), MixSource(str(smaller), 1)]
    with pytest.raises(SynthgenError, match="other shapes"):  # 32^3 and 24^3
        MixedStream(sources, fields=("image",))
    cropped = MixedStream(sources, fields=("image",), crop=(16, 16, 16), epoch_size=6, batch_size=6)
    batch = next(iter(cropped))
    assert batch["image"].shape == (6, 16, 16, 16) and set(batch["source"].tolist()) == {0, 1}
