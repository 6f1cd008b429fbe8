"""The shared training loop (pretrain.loop) and its CLI, with a tiny test recipe on real tiny
label-ensemble datasets (CPU): learning, exact resume (in process and after SIGKILL), one-line
errors, checkpoints that rebuild their modules, TensorBoard events, the data-wait figure, and a
2-process gloo DDP run."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from pretrain.checkpoint import load_checkpoint, load_module
from pretrain.cli import main
from pretrain.config import ScheduleConfig, build_config
from pretrain import sources
from pretrain.loop import train
from pretrain.optim import lr_factor
from pretrain.recipe import Recipe
from pretrain.registry import register_recipe, unregister_recipe
from synthgen.engines import get_engine
from synthgen.errors import SynthgenError
from synthgen.runner import generate
from synthgen.store import Dataset
from synthgen.stream import ShardStream
from tests.helpers import assert_one_line_error, free_port, make_label_ensemble, run_main

PRETRAIN_ERROR = "synthgen-pretrain: error: "
EXPORT_ERROR = "synthgen-pretrain export: error: "

SIZE = 32
STEPS = 10  # 8 training samples (shards 0, 1) in batches of 2: 4 steps per epoch; shard 2 held out
SLEEP_ENV = "TEST_PRETRAIN_SLEEP"  # seconds per step (outside the config: a resume may drop it)
SIGINT_ENV = "TEST_PRETRAIN_SIGINT_AT"  # the recipe sends SIGINT to its own process in this training step
READER_SLEEP = 0.5  # seconds: a slow reader's extra time per batch
BUSY_STEP = 0.5  # seconds: a slow step's compute (reading and staging a batch takes ~0.01-0.15 s here)


@dataclasses.dataclass(frozen=True)
class TinyModelConfig:
    channels: int = 4


@dataclasses.dataclass(frozen=True)
class TinyLossConfig:
    voxels: int = 512


class TinyNet(nn.Module):
    """Conv-BN-ReLU-dropout-conv: buffers (BN) and global-RNG draws (dropout) in the state."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.init_args = {"channels": channels}
        self.body = nn.Sequential(nn.Conv3d(1, channels, 3, padding=1), nn.BatchNorm3d(channels), nn.ReLU(),
                                  nn.Dropout(0.1), nn.Conv3d(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TinyRecipe(Recipe):
    """Predict view 2 from view 1 on voxels drawn from the step generator (L2)."""

    name: ClassVar[str] = "test-tiny"
    ModelConfig: ClassVar[type] = TinyModelConfig
    LossConfig: ClassVar[type] = TinyLossConfig

    def __init__(self, model: Any, recipe: Any) -> None:
        super().__init__(model, recipe)
        self.seen: list[list[int]] = []
        self.built: dict[str, nn.Module] = {}

    @classmethod
    def defaults(cls) -> dict[str, dict[str, Any]]:
        return {"optim": {"name": "adam", "lr": 1e-2}, "schedule": {"name": "linear", "warmup_steps": 2}}

    @classmethod
    def presets(cls) -> dict[str, dict[str, dict[str, Any]]]:
        return {"tiny": {"data": {"crop": 16, "batch_size": 2, "workers": 0},
                         "train": {"steps": STEPS, "log_every": 1, "val_every": 5, "val_batches": 2,
                                   "ckpt_every": 5}}}

    @property
    def fields(self) -> tuple[str, ...]:
        return ("view1", "view2", "labels")

    @property
    def augment(self) -> bool:
        return True

    def check_dataset(self, dataset: Dataset) -> None:
        if dataset.info.engine != "label-ensemble":
            raise SynthgenError(f"test-tiny needs a label-ensemble dataset; {dataset.path} was made by "
                                f"{dataset.info.engine}")

    def build(self) -> dict[str, nn.Module]:
        self.built = {"model": TinyNet(self.model_config.channels)}
        return self.built

    def training_step(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                      generator: torch.Generator) -> dict[str, torch.Tensor]:
        if modules["model"].training:
            self.seen.append(batch["index"].tolist())
            if os.environ.get(SIGINT_ENV) == str(len(self.seen)):
                os.kill(os.getpid(), signal.SIGINT)
        time.sleep(float(os.environ.get(SLEEP_ENV, "0")))
        prediction = modules["model"](batch["view1"]).flatten(1)
        voxels = torch.randint(0, prediction.shape[1], (self.loss_config.voxels,), generator=generator)
        loss = F.mse_loss(prediction[:, voxels], batch["view2"].flatten(1)[:, voxels])
        return {"loss": loss, "mean_prediction": prediction.mean().detach()}

    def export_features(self, modules: dict[str, nn.Module], path: str) -> str:
        torch.save({"weights": modules["model"].state_dict()}, path)
        return path


# -- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def registered() -> Any:
    register_recipe(TinyRecipe.name, TinyRecipe)
    yield
    unregister_recipe(TinyRecipe.name)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 label-ensemble samples at 32^3 in shards of 4 (shard 2 is the held-out one)."""
    return make_label_ensemble(tmp_path_factory.mktemp("loop") / "le.zarr", 12, size=SIZE, seed=5, shard_size=4)


def tiny_config(dataset: Path, **overrides: Any) -> Any:
    return build_config(TinyRecipe, "tiny", {"data.path": str(dataset), **overrides})


@pytest.fixture(scope="module")
def run_a(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted reference run to STEPS."""
    out = tmp_path_factory.mktemp("runs") / "a"
    summary = train(TinyRecipe.name, tiny_config(dataset), out)
    assert summary["finished"] and summary["step"] == STEPS and summary["epoch"] == 2
    return out


@pytest.fixture(scope="module")
def run_still(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference run with a learning rate of 1e-12: the same initial weights, batches and
    draws as ``run_a``, no learning (the control of its learning check)."""
    out = tmp_path_factory.mktemp("runs") / "still"
    train(TinyRecipe.name, tiny_config(dataset, **{"optim.lr": 1e-12}), out)
    return out


def states(run: Path) -> dict[str, Any]:
    saved = load_checkpoint(run)
    return {"model": saved["modules"]["model"]["state_dict"], "optimizer": saved["optimizer"],
            "scheduler": saved["scheduler"], "step": saved["step"], "stream": saved["stream"]}


def assert_bitwise_equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# -- learning, logs, checkpoints --------------------------------------------------------------------


def test_reference_run_learns_validates_logs_and_exports(run_a: Path, run_still: Path) -> None:
    records = [json.loads(line) for line in (run_a / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == STEPS
    # per-step losses swing with the batch; validation sees the same batches and voxels in both runs
    still = [json.loads(line) for line in (run_still / "metrics.jsonl").read_text().splitlines()]
    val_loss = [r["loss"] for r in records if r["kind"] == "val"]
    assert val_loss[-1] < 0.95 * [r["loss"] for r in still if r["kind"] == "val"][-1]  # 0.72 vs 0.83 here
    lrs = [r["lr"] for r in records if r["kind"] == "train"]
    assert lrs[:4] == pytest.approx([5e-3, 1e-2, 1e-2, 8.75e-3])  # 2 warm-up steps to 1e-2, then linear to 0 at 10
    assert lrs[-1] == pytest.approx(1.25e-3)
    assert [r["step"] for r in records if r["kind"] == "val"] == [5, 10]
    events = list((run_a / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"train/loss" in events[0].read_bytes() and b"val/loss" in events[0].read_bytes()
    saved = json.loads((run_a / "config.json").read_text())
    assert saved["data"]["crop"] == 16 and saved["optim"]["betas"] == [0.9, 0.999]
    assert set(torch.load(run_a / "features.pt", weights_only=True)["weights"]) == set(TinyNet(4).state_dict())
    checkpoint = load_checkpoint(run_a)
    assert checkpoint["split"] == {"train": [0, 1], "val": [2]} and checkpoint["epoch"] == 2


class SlowReaderStream(ShardStream):
    """The real stream of the dataset, taking READER_SLEEP seconds longer per batch."""

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in super().__iter__():
            time.sleep(READER_SLEEP)
            yield batch


def data_figures(run: Path, capsys: pytest.CaptureFixture[str], config: Any) -> dict[str, Any]:
    """Train ``config`` into ``run``; its data figures from the console, TensorBoard and the summary."""
    summary = train(TinyRecipe.name, config, run)
    out = capsys.readouterr().out
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"summary": summary["data"], "jsonl": [r for r in records if r["kind"] == "data"],
            "console": [float(m) / 100 for m in re.findall(r"  data wait (\d+)%  [\d.]+ samples/s$", out, re.M)],
            "run_line": re.search(r"^data: wait (\d+)% of step time over (\d+) steps, ([\d.]+) samples/s$", out, re.M),
            "tb": {name: [(e.step, e.value) for e in events.Scalars(f"data/{name}")]
                   for name in ("wait_fraction", "samples_per_s")}}


def test_data_wait_is_reported_per_interval_and_for_the_run(dataset: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow compute step gives a low wait fraction, a slow reader (sleeping in its DataLoader
    worker) a high one: in the console line, TensorBoard (data/wait_fraction, data/samples_per_s),
    metrics.jsonl and the run's summary."""
    overrides = {"train.steps": 3, "train.val_every": 0, "train.ckpt_every": 0}
    monkeypatch.setenv(SLEEP_ENV, str(BUSY_STEP))
    busy = data_figures(tmp_path / "busy", capsys, tiny_config(dataset, **overrides))
    monkeypatch.setenv(SLEEP_ENV, "0")
    monkeypatch.setattr(sources, "ShardStream", SlowReaderStream)
    starved = data_figures(tmp_path / "starved", capsys, tiny_config(dataset, **overrides, **{"data.workers": 1}))
    for figures in (busy, starved):
        fractions = [r["wait_fraction"] for r in figures["jsonl"]]
        assert [step for step, _ in figures["tb"]["wait_fraction"]] == [1, 2, 3]
        assert all(0 <= f <= 1 for f in fractions) and all(v > 0 for _, v in figures["tb"]["samples_per_s"]), figures
        assert figures["console"] == pytest.approx(fractions, abs=0.006)  # printed as whole percents
        summary = figures["summary"]
        assert 0 <= summary["wait_fraction"] <= 1 and min(fractions) <= summary["wait_fraction"] <= max(fractions)
        assert figures["run_line"].group(2) == "3"
        assert float(figures["run_line"].group(1)) / 100 == pytest.approx(summary["wait_fraction"], abs=0.006)
        assert float(figures["run_line"].group(3)) == pytest.approx(summary["samples_per_s"], abs=0.06)
        assert [value for _, value in figures["tb"]["wait_fraction"]] == pytest.approx(fractions)
    assert busy["summary"]["wait_fraction"] < 0.5 < starved["summary"]["wait_fraction"], (busy, starved)
    # 2 samples per step of (READER_SLEEP + a little) seconds
    assert starved["summary"]["samples_per_s"] < 2 / READER_SLEEP


def test_checkpoint_rebuilds_its_module_without_architecture_args(run_a: Path) -> None:
    model = load_module(run_a)
    assert isinstance(model, TinyNet) and not model.training and model.init_args == {"channels": 4}
    assert_bitwise_equal(model.state_dict(), load_checkpoint(run_a / "last.pt")["modules"]["model"]["state_dict"])
    assert model(torch.zeros(1, 1, 8, 8, 8)).shape == (1, 1, 8, 8, 8)
    with pytest.raises(SynthgenError, match="no module 'heads'; it has model"):
        load_module(run_a, name="heads")


@pytest.mark.parametrize(("workers", "stop"), [(0, 3), (2, 4)])
def test_paused_and_resumed_run_is_bitwise_the_uninterrupted_one(dataset: Path, run_a: Path, tmp_path: Path,
                                                                 workers: int, stop: int) -> None:
    config = tiny_config(dataset, **{"data.workers": workers})
    paused = train(TinyRecipe.name, config, tmp_path / "b", stop_after=stop)
    assert paused["step"] == stop and not paused["finished"] and paused["features"] is None
    assert load_checkpoint(tmp_path / "b")["step"] == stop
    resumed = train(TinyRecipe.name, config, tmp_path / "b", resume=True)
    assert resumed["finished"] and resumed["step"] == STEPS
    assert_bitwise_equal(states(tmp_path / "b"), states(run_a))


def test_ctrl_c_saves_exits_130_and_resumes_exactly(capsys: pytest.CaptureFixture[str], dataset: Path, run_a: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "c"
    monkeypatch.setenv(SIGINT_ENV, "3")
    code, _, err = run_main(main, capsys, "test-tiny", "--data", str(dataset), "--out", str(run), "--config", "tiny")
    assert code == 130 and err.strip() == (f"synthgen-pretrain: SIGINT at step 3; checkpoint saved to "
                                           f"{run / 'last.pt'}; continue with --resume")
    assert load_checkpoint(run)["step"] == 3 and not (run / "features.pt").exists()
    monkeypatch.delenv(SIGINT_ENV)
    code, out, err = run_main(main, capsys, "test-tiny", "--out", str(run), "--resume")
    assert code == 0 and "resuming at step 3" in out, err
    assert_bitwise_equal(states(run), states(run_a))


def test_killed_cli_run_resumes_to_the_uninterrupted_weights(dataset: Path, run_a: Path, tmp_path: Path) -> None:
    """SIGKILL the CLI (one DataLoader worker) after its first checkpoint, then --resume."""
    run = tmp_path / "killed"
    module = TinyRecipe.__module__
    code = (f"import sys; from pretrain.registry import register_recipe; "
            f"register_recipe('test-tiny', '{module}:TinyRecipe'); from pretrain.cli import run; run()")
    paths = [str(Path(__file__).parent), str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    argv = [sys.executable, "-c", code, "test-tiny", "--data", str(dataset), "--out", str(run), "--config", "tiny",
            "--set", "train.ckpt_every=2", "--set", "data.workers=1"]
    process = subprocess.Popen(argv, env={**env, SLEEP_ENV: "0.25"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    _, err = process.communicate()
    assert process.returncode == -signal.SIGKILL, err.decode()
    assert load_checkpoint(run)["step"] < STEPS
    resumed = subprocess.run(argv[:4] + ["--data", str(dataset), "--out", str(run), "--resume"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at step" in resumed.stdout and f"step {STEPS}/{STEPS} (finished)" in resumed.stdout
    assert_bitwise_equal(states(run)["model"], states(run_a)["model"])
    assert_bitwise_equal(states(run)["optimizer"], states(run_a)["optimizer"])


def test_labels_only_dataset_renders_views_and_crops_on_the_device(tmp_path: Path) -> None:
    path = tmp_path / "labels.zarr"
    generate(get_engine("label-ensemble", size=SIZE, store="labels"), str(path), 4, seed=2, shard_size=4,
             backend="local", progress=False)
    recipe = TinyRecipe(TinyModelConfig(), TinyLossConfig())
    config = build_config(TinyRecipe, "tiny", {"data.path": str(path), "data.val_shards": 0, "train.steps": 2})
    assert train(recipe, config, tmp_path / "run")["finished"]
    assert len(recipe.seen) == 2 and all(len(indices) == 2 for indices in recipe.seen)


def test_training_on_a_generate_spec_is_bitwise_the_stored_datasets_run(run_a: Path, tmp_path: Path) -> None:
    """Online generation (nothing stored, samples made by DeviceStage on the training device)
    trains exactly as the dataset ``synthgen generate`` would have written."""
    spec = f"generate:label-ensemble?n=12&size={SIZE}&seed=5&shard_size=4"
    summary = train(TinyRecipe.name, tiny_config(spec), tmp_path / "online")
    assert summary["finished"] and summary["step"] == STEPS
    assert_bitwise_equal(states(run_a), states(tmp_path / "online"))


# -- one-line errors --------------------------------------------------------------------------------


def test_config_layers_and_key_errors(tmp_path: Path) -> None:
    config = build_config(TinyRecipe, "tiny", {"optim.lr": 0.5, "data.augment.p_flip": 0.0})
    assert (config.optim.name, config.optim.lr, config.schedule.name) == ("adam", 0.5, "linear")
    assert (config.crop, config.train.steps, config.data.augment) == ((16, 16, 16), STEPS, {"p_flip": 0.0})
    assert build_config(TinyRecipe).optim.lr == 1e-2 and build_config(TinyRecipe).data.crop is None
    (tmp_path / "run.yaml").write_text("optim:\n  betas: [0.5, 0.9]\ntrain:\n  grad_clip: 1\n")
    config = build_config(TinyRecipe, str(tmp_path / "run.yaml"))
    assert config.optim.betas == (0.5, 0.9) and config.train.grad_clip == 1.0
    with pytest.raises(SynthgenError, match=r"optim.betas must be a list of 2 numbers, got \[1\]"):
        build_config(TinyRecipe, None, {"optim.betas": [1]})
    with pytest.raises(SynthgenError, match="unknown config key model.width in --set; valid keys of model: channels"):
        build_config(TinyRecipe, None, {"model.width": 3})


def test_schedules_warm_up_and_decay_to_zero_at_train_steps() -> None:
    def factors(name: str, warmup: int) -> list[float]:
        return [lr_factor(step, ScheduleConfig(name, warmup), 6) for step in range(6)]

    assert factors("constant", 2) == [0.5, 1, 1, 1, 1, 1]
    assert factors("linear", 2) == pytest.approx([0.5, 1, 1, 0.75, 0.5, 0.25])  # 0 at step 6
    assert factors("cosine", 0) == pytest.approx([1, 0.9330, 0.75, 0.5, 0.25, 0.0670], abs=1e-4)


@pytest.mark.parametrize(("argv", "needles"), [
    (["--set", "optim.lrr=1"], ["unknown config key optim.lrr", "valid keys of optim: name, lr,"]),
    (["--set", "foo.bar=1"], ["unknown config section 'foo'", "sections: data, optim, schedule"]),
    (["--set", "train.steps=ten"], ["train.steps must be an integer, got 'ten'"]),
    (["--set", "data.crop=64"], ["data.crop (64, 64, 64) is larger than the volumes of", "(32, 32, 32)"]),
    (["--config", "huge"], ["unknown preset 'huge'; test-tiny presets are default, tiny"]),
])
def test_bad_config_is_one_line_error(capsys: pytest.CaptureFixture[str], dataset: Path, tmp_path: Path,
                                      argv: list[str], needles: list[str]) -> None:
    full = ["test-tiny", "--data", str(dataset), "--out", str(tmp_path / "run"), "--config", "tiny", *argv]
    code, _, err = run_main(main, capsys, *full)
    assert code == 2
    assert_one_line_error(code, err, *needles, prefix=PRETRAIN_ERROR)
    assert not (tmp_path / "run").exists()


def test_wrong_engine_and_existing_run_are_one_line_errors(capsys: pytest.CaptureFixture[str], dataset: Path,
                                                           run_a: Path, tmp_path: Path) -> None:
    shapes = tmp_path / "shapes.zarr"
    generate(get_engine("random-shapes", size=32), str(shapes), 1, seed=0, shard_size=1, backend="local",
             progress=False)
    code, _, err = run_main(main, capsys, "test-tiny", "--data", str(shapes), "--out", str(tmp_path / "x"))
    assert code == 2
    assert_one_line_error(code, err, "needs a label-ensemble dataset", "random-shapes", prefix=PRETRAIN_ERROR)
    code, _, err = run_main(main, capsys, "test-tiny", "--data", str(dataset), "--out", str(run_a), "--config", "tiny")
    assert code == 2
    assert_one_line_error(code, err, f"{run_a} is not empty", "--resume", prefix=PRETRAIN_ERROR)
    code, _, err = run_main(main, capsys, "nope", "--data", str(dataset), "--out", str(tmp_path / "y"))
    assert code == 2
    assert_one_line_error(code, err, "unknown recipe 'nope'", "test-tiny", prefix=PRETRAIN_ERROR)


def test_resume_with_a_different_config_names_the_keys(capsys: pytest.CaptureFixture[str], run_a: Path) -> None:
    before = (run_a / "last.pt").stat().st_mtime_ns
    code, _, err = run_main(main, capsys, "test-tiny", "--out", str(run_a), "--resume", "--set", "optim.lr=0.5",
                           "--set", "data.seed=3", "--set", "train.log_every=2")
    assert_one_line_error(code, err, "cannot resume", "data.seed (saved 0, now 3)",
                          "optim.lr (saved 0.01, now 0.5)", "config.json", prefix=PRETRAIN_ERROR)
    assert "log_every" not in err and (run_a / "last.pt").stat().st_mtime_ns == before


def test_export_command_rewrites_features(capsys: pytest.CaptureFixture[str], run_a: Path, tmp_path: Path) -> None:
    code, out, err = run_main(main, capsys, "export", str(run_a), "--out", str(tmp_path / "f.pt"))
    assert code == 0, err
    best = load_checkpoint(run_a / "best.pt")["best"]
    assert out.strip() == (f"{tmp_path / 'f.pt'} from {run_a / 'best.pt'} (step {best['step']}, "
                           f"val loss {best['val_loss']:.4g})")
    assert_bitwise_equal(torch.load(tmp_path / "f.pt", weights_only=True),
                         torch.load(run_a / "features.pt", weights_only=True))


class ScriptedValidation(TinyRecipe):
    """TinyRecipe whose validation loss at its k-th validation is ``script[k]`` (registered as
    test-tiny, whose export it shares)."""

    def __init__(self, model: Any, recipe: Any, script: tuple[float, ...] = ()) -> None:
        super().__init__(model, recipe)
        self.script, self.calls = script, 0

    def validation_step(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                        generator: torch.Generator) -> dict[str, float]:
        scores = super().validation_step(modules, batch, generator)
        scores["loss"] = self.script[self.calls // VAL_BATCHES]
        self.calls += 1
        return scores


VAL_BATCHES = 2  # the tiny preset's train.val_batches (the held-out shard gives 2 batches of 2)
SCRIPT = (3.0, 2.0, 2.5, 1.0, 1.5)  # validations at steps 2, 4, 6, 8, 10: the best is step 8's


def scripted_run(dataset: Path, out: Path, script: tuple[float, ...], **train_args: Any) -> dict[str, Any]:
    recipe = ScriptedValidation(TinyModelConfig(), TinyLossConfig(), script)
    config = tiny_config(dataset, **{"train.val_every": 2, "train.keep_every": 2, "train.ckpt_every": 0})
    return train(recipe, config, out, **train_args)


@pytest.fixture(scope="module")
def scripted(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "scripted"
    summary = scripted_run(dataset, out, SCRIPT)
    assert summary["finished"] and summary["best"] == {"step": 8, "val_loss": 1.0}
    return out


def test_best_checkpoint_is_the_lowest_validation_loss_and_last_the_final_step(scripted: Path) -> None:
    records = [json.loads(line) for line in (scripted / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["loss"] for r in records if r["kind"] == "val"}
    assert logged == dict(zip((2, 4, 6, 8, 10), SCRIPT))
    best, last = load_checkpoint(scripted / "best.pt"), load_checkpoint(scripted / "last.pt")
    assert best["step"] == min(logged, key=logged.__getitem__) == 8 and last["step"] == STEPS
    assert best["best"] == last["best"] == {"step": 8, "val_loss": 1.0}
    assert_bitwise_equal(best["modules"], load_checkpoint(scripted / "step-00000008.pt")["modules"])
    assert not torch.equal(best["modules"]["model"]["state_dict"]["body.0.weight"],
                           last["modules"]["model"]["state_dict"]["body.0.weight"])
    assert_bitwise_equal(torch.load(scripted / "features.pt", weights_only=True)["weights"],
                         best["modules"]["model"]["state_dict"])


def test_resumed_run_keeps_its_best_and_ends_with_the_same_checkpoints(dataset: Path, scripted: Path,
                                                                       tmp_path: Path) -> None:
    """Paused at step 5 (best so far step 4), resumed: step 6's worse loss leaves best.pt alone,
    step 8's replaces it, and best.pt and last.pt end bitwise those of the uninterrupted run."""
    run = tmp_path / "paused"
    scripted_run(dataset, run, SCRIPT[:2], stop_after=5)
    assert load_checkpoint(run / "best.pt")["best"] == load_checkpoint(run / "last.pt")["best"] == {
        "step": 4, "val_loss": 2.0}
    summary = scripted_run(dataset, run, SCRIPT[2:], resume=True)
    assert summary["best"] == {"step": 8, "val_loss": 1.0}
    for name in ("best.pt", "last.pt"):
        assert_bitwise_equal(states(run / name), states(scripted / name), name)


def test_export_picks_best_by_default_and_last_on_request(capsys: pytest.CaptureFixture[str], scripted: Path,
                                                          tmp_path: Path) -> None:
    exported = {}
    for which in (None, "best", "last"):
        out = tmp_path / f"{which}.pt"
        code, printed, err = run_main(main, capsys, "export", str(scripted), "--out", str(out),
                                      *(["--which", which] if which else []))
        assert code == 0, err
        source = "last.pt (step 10)" if which == "last" else "best.pt (step 8, val loss 1)"
        assert printed.strip() == f"{out} from {scripted / source}"
        exported[which] = torch.load(out, weights_only=True)["weights"]
    assert_bitwise_equal(exported[None], exported["best"])
    assert_bitwise_equal(exported["last"], load_checkpoint(scripted / "last.pt")["modules"]["model"]["state_dict"])
    assert not torch.equal(exported["best"]["body.0.weight"], exported["last"]["body.0.weight"])


def test_export_without_best_uses_last_and_refuses_which_best(capsys: pytest.CaptureFixture[str], dataset: Path,
                                                             tmp_path: Path) -> None:
    """A run without validation (as runs from before best.pt) exports its last.pt; --which best
    and --which with a checkpoint file are one-line errors."""
    run = tmp_path / "noval"
    train(TinyRecipe.name, tiny_config(dataset, **{"train.steps": 2, "train.val_every": 0}), run)
    assert not (run / "best.pt").exists() and load_checkpoint(run)["best"] is None
    capsys.readouterr()
    code, printed, err = run_main(main, capsys, "export", str(run), "--out", str(tmp_path / "f.pt"))
    assert code == 0 and printed.strip() == f"{tmp_path / 'f.pt'} from {run / 'last.pt'} (step 2)", err
    code, _, err = run_main(main, capsys, "export", str(run), "--out", str(tmp_path / "g.pt"), "--which", "best")
    assert_one_line_error(code, err, f"{run} has no best.pt", "--which last", prefix=EXPORT_ERROR)
    code, _, err = run_main(main, capsys, "export", str(run / "last.pt"), "--out", str(tmp_path / "h.pt"),
                            "--which", "last")
    assert_one_line_error(code, err, "--which picks best.pt or last.pt of a run directory", prefix=EXPORT_ERROR)
    assert not (tmp_path / "g.pt").exists() and not (tmp_path / "h.pt").exists()


# -- DDP --------------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, port: int, dataset: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    recipe = TinyRecipe(TinyModelConfig(), TinyLossConfig())
    config = build_config(TinyRecipe, "tiny", {"data.path": dataset, "train.steps": 3, "train.val_every": 3,
                                               "train.val_batches": 1, "train.ckpt_every": 0})
    summary = train(recipe, config, Path(out) / "run")
    model = recipe.built["model"]
    torch.save({"seen": recipe.seen, "state": model.state_dict(), "val": summary["val"],
                "weights": {name: p.detach() for name, p in model.named_parameters()}},
               Path(out) / f"rank{rank}.pt")


def test_two_process_gloo_ddp_sees_disjoint_samples_and_keeps_weights_equal(dataset: Path, tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, free_port(), str(dataset), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    first_epoch = [sum(r["seen"][:2], []) for r in ranks]  # 8 samples over 2 ranks: 2 steps of 2 per rank
    assert not set(first_epoch[0]) & set(first_epoch[1])
    assert sorted(first_epoch[0] + first_epoch[1]) == list(range(8))
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 3
    assert_bitwise_equal(ranks[0]["weights"], ranks[1]["weights"])  # BN statistics are rank 0's at each forward
    assert ranks[0]["val"] == ranks[1]["val"] and "loss" in ranks[0]["val"]
    saved = load_checkpoint(tmp_path / "run")
    assert saved["step"] == 3 and saved["world_size"] == 2 and len(saved["rng"]) == 2
    assert_bitwise_equal(saved["modules"]["model"]["state_dict"], ranks[0]["state"])
    assert (tmp_path / "run" / "features.pt").is_file()


# -- the contrastive recipe through the CLI -------------------------------------------------------


def test_contrastive_tiny_preset_through_the_cli(capsys: pytest.CaptureFixture[str], dataset: Path,
                                                 tmp_path: Path) -> None:
    pytest.importorskip("pretrain.recipes.contrastive")
    code, out, err = run_main(main, capsys, "contrastive", "--data", str(dataset), "--out", str(tmp_path / "run"),
                             "--config", "tiny", "--steps", "1", "--set", "data.crop=32",
                             "--set", "data.batch_size=1", "--set", "data.workers=0", "--set", "train.val_every=0")
    assert code == 0, err
    assert "step 1/1 (finished)" in out and (tmp_path / "run" / "features.pt").is_file()
    assert sorted(load_checkpoint(tmp_path / "run")["modules"]) == ["heads", "model"]
