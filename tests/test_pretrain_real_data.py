"""Real volumes in training: an ingested folder of NIfTI files streamed alone or mixed with a
synthgen dataset into `synthgen-pretrain contrastive`, with workers, validation and exact resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.checkpoint import load_checkpoint
from pretrain.cli import main as pretrain_main
from pretrain.config import build_config
from pretrain.recipes.contrastive import ContrastiveRecipe
from pretrain.sources import RunData
from synthgen import open_dataset
from synthgen.cli import main as synthgen_main
from synthgen.errors import SynthgenError
from synthgen.ingest.run import ingest
from synthgen.stream import DeviceStage
from synthgen.stream.mixed import MixedStream, MixSource, apportion
from tests.helpers import make_label_ensemble, run_main
from tests.ray_processes import fresh_shell_env, home_with_token, stop_ray_processes
from tests.test_pretrain_loop import assert_bitwise_equal, states

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROSTATE = SHARED / "prostate-mr-us"
CLI = [sys.executable, "-m", "synthgen.cli"]
TINY = ["--config", "tiny", "--set", "data.crop=32", "--set", "data.batch_size=2", "--set", "train.val_every=2",
        "--set", "train.val_batches=1", "--set", "train.ckpt_every=2"]

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data absent (see shared/data/README.md)")


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 10 prostate MR volumes with their 4-D one-hot labels, ingested at 48^3 (3 shards)."""
    out = tmp_path_factory.mktemp("real") / "real.zarr"
    ingest(str(PROSTATE / "moving_images"), str(out), labels=str(PROSTATE / "moving_labels"), size=48, spacing=1.6,
           backend="local", shard_size=4, progress=False)
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-sample label ensemble at 32^3 (3 shards)."""
    return make_label_ensemble(tmp_path_factory.mktemp("synth") / "le.zarr", 12, size=32, seed=5, shard_size=4)


def run_data(path: str, **overrides: object) -> RunData:
    config = build_config(ContrastiveRecipe, preset="tiny", overrides={"data.path": path, "data.crop": 32,
                                                                       **overrides})
    recipe = ContrastiveRecipe(model=config.model, recipe=config.recipe)
    return RunData(recipe, config, None)


def test_folder_to_preview_to_contrastive_alone_and_mixed_with_resume(
        capsys: pytest.CaptureFixture[str], synthetic: Path, tmp_path: Path, ray_tmpdir: Path) -> None:
    """The issue's "done when": a folder of NIfTI files ingested on Ray, previewed, trained on
    alone and mixed 1:1 with a synthgen dataset (two DataLoader workers), paused and resumed to
    the uninterrupted run's weights."""
    real = tmp_path / "real.zarr"
    env = fresh_shell_env(ray_tmpdir, home_with_token(tmp_path / "home", None))
    done = subprocess.run(CLI + ["ingest", "--images", str(PROSTATE / "fixed_images"), "--labels",
                                 str(PROSTATE / "fixed_labels"), "--out", str(real), "--size", "48", "--spacing", "1.6",
                                 "--shard-size", "4", "--workers", "2", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    stop_ray_processes(ray_tmpdir)
    assert done.returncode == 0, done.stderr
    assert open_dataset(str(real)).verify().ok and open_dataset(str(real)).info.engine == "ingest"
    code, _, err = run_main(synthgen_main, capsys, "preview", str(real), "--samples", "0:2",
                            "--out", str(tmp_path / "real.png"))
    assert code == 0 and (tmp_path / "real.png").stat().st_size > 1000, err

    code, out, err = run_main(pretrain_main, capsys, "contrastive", "--data", str(real), "--out",
                              str(tmp_path / "alone"), *TINY, "--steps", "2", "--set", "data.workers=2")
    assert code == 0 and "step 2/2 (finished)" in out, err
    assert f"{real} (8 training samples this epoch, shards [2] held out" in out

    mix = f"{synthetic}:0.5,{real}:0.5"
    args = ["contrastive", "--data", mix, *TINY, "--set", "data.workers=2"]
    code, out, err = run_main(pretrain_main, capsys, *args, "--out", str(tmp_path / "whole"), "--steps", "4")
    assert code == 0 and "step 4/4 (finished)" in out, err
    assert "(16 training samples this epoch" in out and f"{real} shards [2]" in out
    saved = load_checkpoint(tmp_path / "whole")
    assert saved["split"] == [{"train": [0, 1], "val": [2]}, {"train": [0, 1], "val": [2]}]
    assert saved["stream"]["mix"]["sources"][1][2] == {"view1": "image", "view2": "image"}
    paused = tmp_path / "paused"
    code, out, err = run_main(pretrain_main, capsys, *args, "--out", str(paused), "--steps", "4",
                              "--set", "train.ckpt_every=1", "--stop-after", "3")
    assert code == 0 and load_checkpoint(paused)["step"] == 3, err
    code, out, err = run_main(pretrain_main, capsys, "contrastive", "--out", str(paused), "--resume")
    assert code == 0 and "resuming at step 3" in out and "step 4/4 (finished)" in out, err
    assert_bitwise_equal(states(paused), states(tmp_path / "whole"))


def test_an_ingested_image_fills_both_views_and_the_augmentation_separates_them(real: Path) -> None:
    data = run_data(str(real))
    assert data.mixed and data.sources[0].fields == {"view1": "image", "view2": "image", "labels": "labels"}
    stream = data.train_stream
    batch = next(iter(stream))
    assert batch["view1"].shape == (2, 32, 32, 32) and torch.equal(batch["view1"], batch["view2"])
    dataset = open_dataset(str(real))
    index, start = int(batch["index"][0]), stream.children[0]._crop_start(int(batch["index"][0]))
    box = tuple(slice(s, s + 32) for s in start)
    assert np.array_equal(batch["view1"][0].numpy(), dataset[index]["image"][box])
    assert np.array_equal(batch["labels"][0].numpy(), dataset[index]["labels"][box])
    staged = data.stage(stream, None)(batch, "cpu")
    assert staged["view1"].shape == (2, 1, 32, 32, 32) and staged["labels"].dtype == torch.int64
    assert not torch.equal(staged["view1"], staged["view2"]), "per-view appearance augmentation"


def test_a_mix_takes_exact_shares_and_validates_on_each_datasets_held_out_shards(synthetic: Path, real: Path) -> None:
    data = run_data(f"{synthetic}:3,{real}:1", **{"data.seed": 1})
    train = data.train_stream
    sources = torch.cat([batch["source"] for batch in train])
    assert np.bincount(sources.numpy()).tolist() == apportion(8 + 8, [3, 1]) == [12, 4]
    val = data.stream(validation=True)
    seen = [(int(s), int(i)) for batch in val for s, i in zip(batch["source"], batch["index"])]
    assert {i // 4 for _, i in seen} == {2} and {s for s, _ in seen} == {0, 1}
    stage = data.stage(val, None)
    assert isinstance(stage, DeviceStage) and set(stage.volume_fields) == {"view1", "view2", "labels"}


def test_what_a_recipe_cannot_read_is_refused_in_one_line(synthetic: Path, real: Path, tmp_path: Path) -> None:
    unlabelled = tmp_path / "unlabelled.zarr"
    ingest(str(PROSTATE / "moving_images" / "case000000.nii.gz"), str(unlabelled), size=32, backend="local",
           progress=False)
    stored_labels = make_label_ensemble(tmp_path / "labels.zarr", 8, size=32, store="labels")
    cases = [(str(unlabelled), {}, "an image and its label map.*synthgen ingest --images DIR --labels DIR"),
             (f"{real}:1,{stored_labels}:1", {}, r"every dataset's volumes must have one shape .*\(32, 32, 32\), "
                                                 r"\(48, 48, 48\).*one --size"),
             (f"{synthetic}:1,{real}:1", {"data.crop": 40}, "data.crop .* is larger than the volumes of .*le.zarr"),
             (f"{synthetic}:1,{unlabelled}:1", {"train.val_every": 0}, "unlabelled.zarr was made by engine 'ingest'")]
    for path, overrides, message in cases:
        with pytest.raises(SynthgenError, match=message) as err:
            run_data(path, **overrides)
        assert "\n" not in str(err.value)
    with pytest.raises(SynthgenError, match="data.on_error skip is for one unmapped dataset"):
        run_data(f"{synthetic}:1,{real}:1", **{"data.on_error": "skip", "data.batch_size": 1})


def test_mixed_stream_reads_a_field_once_for_every_batch_field_it_fills(real: Path) -> None:
    stream = MixedStream([MixSource(str(real), 1.0, {"view1": "image", "view2": "image"})],
                         fields=["view1", "view2", "labels"], shuffle=False, batch_size=10)
    batch = next(iter(stream))
    dataset = open_dataset(str(real))
    for row, index in enumerate(batch["index"].tolist()):
        assert np.array_equal(batch["view1"][row].numpy(), dataset[index]["image"])
        assert np.array_equal(batch["view2"][row].numpy(), dataset[index]["image"])


@pytest.fixture(scope="module")
def synthetic_48(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One 4-sample label ensemble at 48^3 three ways: views stored, label maps only, a spec."""
    root = tmp_path_factory.mktemp("synth48")
    return {"views": str(make_label_ensemble(root / "views.zarr", 4, size=48, seed=9, shard_size=2)),
            "labels": str(make_label_ensemble(root / "labels.zarr", 4, size=48, seed=9, shard_size=2, store="labels")),
            "spec": "generate:label-ensemble?n=4&size=48&seed=9&shard_size=2"}


@pytest.mark.parametrize("kind", ["labels", "spec"])
def test_a_mix_renders_views_on_the_device_as_the_stored_dataset_holds_them(
        synthetic_48: dict[str, str], real: Path, kind: str) -> None:
    """Mixed with real volumes, a --store labels dataset (views rendered on the device) and a
    generate: spec (everything generated there) give, row for row and bit for bit, the batches
    of the same mix with the views stored: the same items, crops and appearance."""
    fields = ["view1", "view2", "labels"]
    real_source = MixSource(str(real), 1.0, {"view1": "image", "view2": "image"})

    def staged(path: str) -> list[dict[str, torch.Tensor]]:
        stream = MixedStream([MixSource(path, 2.0), real_source], fields=fields, crop=(32, 32, 32), seed=3,
                             epoch_size=9, batch_size=3)
        stage = DeviceStage(stream)
        return [stage(batch, "cpu") for batch in stream]

    stored, rendered = staged(synthetic_48["views"]), staged(synthetic_48[kind])
    assert len(stored) == len(rendered) == 3 and sum(int((b["source"] == 0).sum()) for b in stored) == 6
    for a, b in zip(stored, rendered):
        assert set(a) == set(b) == {"index", "source", *fields}, "the stage applied the deferred crop"
        for name in ("index", "source", *fields):
            assert torch.equal(a[name], b[name]), name
        assert a["view1"].shape == (3, 1, 32, 32, 32)
    trainer = run_data(f"{synthetic_48[kind]}:2,{real}:1")
    assert trainer.mixed and trainer.sources[0].fields == {name: name for name in fields}
