"""On-the-fly generation: a ``generate:`` spec streams the samples a stored dataset would hold,
generated on the consumer's device by DeviceStage, with no store at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from synthgen import open_dataset
from synthgen.cli import main
from synthgen.engines import get_engine
from synthgen.errors import SynthgenError
from synthgen.runner import generate
from synthgen.store.generated import parse_generated_spec
from synthgen.stream import DeviceStage, ShardStream
from tests.helpers import assert_one_line_error, run_main

CASES = {
    "random-shapes": ("random-shapes", {"size": 32}),
    "label-ensemble-views": ("label-ensemble", {"size": 32}),
    "label-ensemble-labels": ("label-ensemble", {"size": 32, "store": "labels"}),
}
N, SEED, SHARD = 6, 4, 2


def spec_of(engine: str, config: dict) -> str:
    extra = "".join(f"&{key}={value}" for key, value in config.items())
    return f"generate:{engine}?n={N}&seed={SEED}&shard_size={SHARD}{extra}"


@pytest.fixture(scope="module", params=list(CASES))
def stored_and_spec(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    engine, config = CASES[request.param]
    path = tmp_path_factory.mktemp("generated") / f"{request.param}.zarr"
    generate(get_engine(engine, **config), str(path), N, seed=SEED, shard_size=SHARD, backend="local",
             progress=False)
    return str(path), spec_of(engine, config)


def epoch(path: str, loader_workers: int = 0, **stream_args) -> list[dict[str, torch.Tensor]]:
    """One epoch of on-device batches (shuffled, cropped) through ShardStream and DeviceStage."""
    stream = ShardStream(path, seed=9, batch_size=2, crop=(16, 24, 16), **stream_args)
    stream.set_epoch(1)
    stage = DeviceStage(path, crop=(16, 24, 16))
    loader = DataLoader(stream, batch_size=None, num_workers=loader_workers)
    return [stage(batch, "cpu") for batch in loader]


def test_generated_batches_equal_the_stored_datasets(stored_and_spec: tuple[str, str]) -> None:
    stored, spec = stored_and_spec
    assert open_dataset(spec).info.shard_size == open_dataset(stored).info.shard_size
    expected, actual = epoch(stored), epoch(spec)
    assert len(actual) == len(expected) == N // 2
    for want, got in zip(expected, actual):
        assert want.keys() == got.keys()
        for name in want:
            assert want[name].dtype == got[name].dtype and torch.equal(want[name], got[name]), name
    # the epoch is shuffled: not simply index order
    assert [i for b in actual for i in b["index"].tolist()] != list(range(N))


def test_loader_workers_and_resume_give_the_same_sequence() -> None:
    spec = spec_of(*CASES["random-shapes"])
    reference = epoch(spec)
    with_workers = epoch(spec, loader_workers=2)
    assert [b["index"].tolist() for b in with_workers] == [b["index"].tolist() for b in reference]
    assert all(torch.equal(a["fixed"], b["fixed"]) for a, b in zip(reference, with_workers))
    stream = ShardStream(spec, seed=9, batch_size=2, crop=(16, 24, 16))
    stream.set_epoch(1)
    state = stream.state_dict(samples_consumed=2)
    resumed = ShardStream(spec, seed=9, batch_size=2, crop=(16, 24, 16))
    resumed.load_state_dict(state)
    assert [b["index"].tolist() for b in resumed] == [b["index"].tolist() for b in reference[1:]]


def test_a_generated_dataset_stores_nothing_and_streams_only_indices() -> None:
    spec = spec_of("label-ensemble", {"size": 32, "templates": "default"})
    dataset = open_dataset(spec)
    assert dataset.info.schema == {} and dataset[3] == {}
    assert set(dataset.derived_schema) == {"labels", "view1", "view2"}
    assert dataset.committed == [0, 1, 2] and len(dataset) == N
    batch = next(iter(ShardStream(spec, batch_size=2, shuffle=False)))
    assert set(batch) == {"index"} and batch["index"].tolist() == [0, 1]
    sample = dataset.sample_with_derived(5)
    reference = get_engine("label-ensemble", size=32).sample(SEED, 5)
    assert all(np.array_equal(sample[name], reference[name].numpy()) for name in reference)
    with pytest.raises(SynthgenError, match="rendered on the training device"):
        ShardStream(spec, fields=["view1"])
    with pytest.raises(SynthgenError, match="out of range"):
        dataset.sample_with_derived(N)


@pytest.mark.parametrize(("spec", "needle"), [
    ("generate:no-such-engine?n=4", "unknown engine 'no-such-engine'"),
    ("generate:random-shapes?size=32", "n must be an integer >= 1, got None"),
    ("generate:random-shapes?n=0", "n must be an integer >= 1, got 0"),
    ("generate:random-shapes?n=4&seed=-1", "seed must be an integer >= 0"),
    ("generate:random-shapes?n=4&shard_size=two", "shard_size must be an integer >= 1, got 'two'"),
    ("generate:random-shapes?n=4&n=5", "n given more than once"),
    ("generate:random-shapes?n=4&colour=red", "unknown random-shapes parameter(s) colour"),
])
def test_bad_specs_are_one_line_errors(spec: str, needle: str) -> None:
    with pytest.raises(SynthgenError) as caught:
        open_dataset(spec)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_spec_values_are_json_where_they_parse() -> None:
    parsed = parse_generated_spec("generate:random-shapes?n=8&amplitudes=[4,8]&multimodal=true&spacing=1.5")
    assert (parsed.num_samples, parsed.seed, parsed.shard_size) == (8, 0, None)
    assert parsed.config == {"amplitudes": [4, 8], "multimodal": True, "spacing": 1.5}


def test_cli_previews_a_spec_and_refuses_to_describe_or_verify_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    spec = "generate:random-shapes?n=4&size=32"
    code, out, _ = run_main(main, capsys, "preview", spec, "--samples", "0:2", "--out", str(tmp_path / "p.png"))
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 0
    for command, purpose in (("info", "store to describe"), ("verify", "bytes to verify")):
        code, _, err = run_main(main, capsys, command, spec)
        assert_one_line_error(code, err, "generated on the fly and stores nothing", purpose,
                              prefix=f"synthgen {command}: error:")
