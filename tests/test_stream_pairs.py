"""PairStream: deterministic random pairs of a single-volume (ingested) dataset, with
ShardStream's partitioning, worker and resume guarantees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from synthgen import open_dataset
from synthgen.ingest.run import ingest
from synthgen.stream.pairs import PairStream, partners
from tests.test_ingest import PROSTATE

pytestmark = pytest.mark.skipif(not PROSTATE.is_dir(), reason="shared data absent (see shared/data/README.md)")


@pytest.fixture(scope="module")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "prostate.zarr"
    ingest(str(PROSTATE / "moving_images"), str(out), labels=str(PROSTATE / "moving_labels"), size=24,
           spacing=1.6, shard_size=3, backend="local", progress=False)
    return out


def pairs_of(batches) -> list[tuple[int, int]]:
    return [(int(i), int(j)) for batch in batches for i, j in zip(batch["index"], batch["partner"])]


def test_partners_never_pair_a_sample_with_itself() -> None:
    for count in (2, 3, 10, 101):
        mapping = partners(count, 5, 1)
        assert sorted(mapping) == list(range(count)) and not np.any(mapping == np.arange(count))
    assert not np.array_equal(partners(50, 5, 1), partners(50, 5, 2))


def test_an_epoch_fixes_and_moves_every_sample_once_with_its_rows(volumes: Path) -> None:
    stream = PairStream(str(volumes), fields=("image", "labels"), seed=3, batch_size=4, drop_last=False)
    batches = list(stream)
    seen = pairs_of(batches)
    assert sorted(i for i, _ in seen) == list(range(10)) and sorted(j for _, j in seen) == list(range(10))
    assert all(i != j for i, j in seen)
    dataset = open_dataset(str(volumes))
    first = batches[0]
    assert set(first) == {"fixed", "moving", "fixed_labels", "moving_labels", "index", "partner"}
    i, j = int(first["index"][1]), int(first["partner"][1])
    assert np.array_equal(first["fixed"][1].numpy(), dataset[i]["image"])
    assert np.array_equal(first["moving_labels"][1].numpy(), dataset[j]["labels"])
    assert pairs_of(PairStream(str(volumes), fields=("image",), seed=3, batch_size=4, drop_last=False)) == seen
    stream.set_epoch(1)
    assert pairs_of(stream) != seen


def test_ranks_workers_and_resume_give_the_single_process_sequence(volumes: Path) -> None:
    whole = pairs_of(PairStream(str(volumes), fields=("image",), seed=7, batch_size=1))
    ranks = [pairs_of(PairStream(str(volumes), fields=("image",), seed=7, rank=r, world_size=2, batch_size=1))
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 5
    assert [p for pair in zip(*ranks) for p in pair] == whole
    stream = PairStream(str(volumes), fields=("image",), seed=7, batch_size=2)
    loader = DataLoader(stream, batch_size=None, num_workers=2)
    consumed = []
    for batch in loader:
        consumed += pairs_of([batch])
        if len(consumed) == 4:
            break
    state = stream.state_dict(samples_consumed=4)
    resumed = PairStream(str(volumes), fields=("image",), seed=7, batch_size=3)
    resumed.load_state_dict(state)
    assert consumed + pairs_of(resumed) == whole


def test_crops_take_the_same_box_from_both_sides(volumes: Path) -> None:
    stream = PairStream(str(volumes), fields=("image",), seed=2, crop=(16, 16, 16), batch_size=2)
    batch = next(iter(stream))
    dataset = open_dataset(str(volumes))
    i, j = int(batch["index"][0]), int(batch["partner"][0])
    start = stream._crop_start(i)
    box = tuple(slice(s, s + 16) for s in start)
    assert torch.equal(batch["fixed"][0], torch.from_numpy(dataset[i]["image"][box]))
    assert torch.equal(batch["moving"][0], torch.from_numpy(dataset[j]["image"][box]))
