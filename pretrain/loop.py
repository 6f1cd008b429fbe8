"""The shared training loop: everything a recipe (:mod:`pretrain.recipe`) does not do.

``train(recipe, config, out_dir)`` checks the dataset and the run directory, builds the
recipe's modules, optimiser, schedule and gradient scaler, streams batches (ShardStream in a
DataLoader, DeviceStage on the training device), trains with mixed precision and gradient
clipping, validates on held-out shards, logs, checkpoints (``last.pt`` at every save, ``best.pt``
whenever the validation loss improves), and at the end exports the recipe's feature checkpoint
to ``RUN/features.pt`` from ``best.pt`` where there is one (anatomix keeps its best-validation
model), else from ``last.pt`` (see :mod:`pretrain.export`).

Exact resume: a checkpoint holds the modules, optimiser, scheduler, scaler, step, every rank's
random states and the stream position, and each step's generator is seeded from (train.seed,
step, rank); so on the CPU a run saved at step k and resumed to step n ends bitwise equal to an
uninterrupted run to n. Validation runs under a forked RNG and never changes what training sees.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is created from the environment (NCCL
on CUDA, else gloo), modules with parameters are wrapped in DistributedDataParallel, the stream
partitions samples by rank, and only rank 0 writes logs, checkpoints and features.

Data wait (see :mod:`pretrain.intervals`): per logging interval the host time each step waited
for its batch (reader, transfer and on-device stage) as a fraction of the interval's wall time,
and samples/s, in the console line, TensorBoard (``data/wait_fraction``, ``data/samples_per_s``)
and the returned summary. Timing draws no random numbers and is not checkpointed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pretrain import checkpoint as ckpt
from pretrain.batches import TrainBatches, validation_batches
from pretrain.config import RunConfig, differing_keys, from_dict
from pretrain.distributed import Distributed, init_distributed, wrap_modules
from pretrain.export import export_features
from pretrain.intervals import DataTotals, Window
from pretrain.metrics_log import RunLog
from pretrain.optim import apply_schedule, build_optimizer, build_scheduler
from pretrain.recipe import Recipe
from pretrain.registry import get_recipe
from pretrain.sources import RunData
from synthgen.config_values import field_names, unknown_keys
from synthgen.errors import SynthgenError
from synthgen.ops.augment.online import OnlineAugmentConfig
from synthgen.seeding import (BUILD_STREAM, GLOBAL_STREAM, STEP_STREAM, VALIDATION_STREAM, named_generator,
                               named_seed)
from synthgen.store.output_paths import check_output_path

CONFIG_FILE = "config.json"
FEATURES_FILE = "features.pt"
_WAIT_KEY = "data/wait_fraction"  # averaged over ranks with the losses, in the same all-reduce


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint at ``step``."""

    def __init__(self, step: int, checkpoint: Path | None, signal_name: str) -> None:
        super().__init__(f"interrupted by {signal_name} at step {step}")
        self.step, self.checkpoint, self.signal_name = step, checkpoint, signal_name


def train(recipe: str | type[Recipe] | Recipe, config: RunConfig | dict[str, Any], out_dir: str | os.PathLike,
          resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``recipe`` with ``config`` into run directory ``out_dir``.

    Args:
        recipe: a registered name, a Recipe class, or an instance (whose ``model``/``recipe``
            configs then replace the config's sections).
        config: a :class:`RunConfig` or a nested dict of sections (see :mod:`pretrain.config`).
        out_dir: the run directory; must be empty or absent unless ``resume``.
        resume: continue from ``out_dir/last.pt`` (a run directory without a checkpoint starts
            afresh). The config may differ from the saved one only in ``RESUMABLE_KEYS``.
        stop_after: pause after this many steps in total (checkpoint saved, no export); the
            schedule still spans ``train.steps``. Continue later with ``resume=True``.

    Returns:
        A summary: ``step``, ``epoch``, ``finished``, ``train`` and ``val`` (last reported means),
        ``checkpoint`` (last.pt) and ``features`` paths (None where not written), ``best`` (``step``
        and ``val_loss`` of the lowest validation loss, the step of best.pt; None without
        validation), ``seconds``, and ``data``:
        ``wait_fraction`` and ``samples_per_s`` over the steps of this call (None if it ran none).

    Raises:
        SynthgenError: an unusable dataset, config, run directory or checkpoint.
        TrainingInterrupted: SIGINT/SIGTERM (the checkpoint is saved first).
    """
    if isinstance(recipe, Recipe):
        instance = recipe
        nested = config.to_dict() if isinstance(config, RunConfig) else dict(config)
        nested.update(model=dataclasses.asdict(recipe.model_config), recipe=dataclasses.asdict(recipe.loss_config))
        config = from_dict(type(recipe), nested)
    else:
        recipe_cls = get_recipe(recipe) if isinstance(recipe, str) else recipe
        if not isinstance(config, RunConfig):
            config = from_dict(recipe_cls, config)
        instance = recipe_cls(model=config.model, recipe=config.recipe)
    if config.data.path is None:
        raise SynthgenError("data.path is not set; give the dataset with --data PATH")
    ctx = init_distributed(config.train.device)
    try:
        return _Run(instance, config, Path(out_dir), ctx).run(resume, stop_after)
    finally:
        ctx.shutdown()


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None: full precision)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


class _Run:
    """One invocation of :func:`train` on one rank."""

    def __init__(self, recipe: Recipe, config: RunConfig, run_dir: Path, ctx: Distributed) -> None:
        self.recipe, self.config, self.run_dir, self.ctx = recipe, config, run_dir, ctx
        self.device = ctx.device
        self.stop_signal: str | None = None
        self.step_lr = 0.0
        self.last_train: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        self.best: dict[str, Any] | None = None
        self.data = DataTotals()

    # -- set-up -------------------------------------------------------------------------------------

    def run(self, resume: bool, stop_after: int | None) -> dict[str, Any]:
        started = time.perf_counter()
        saved = self._open_run_dir(resume)
        self.sources = RunData(self.recipe, self.config, saved["split"] if saved else None)
        augment = self._augment_config() if self.recipe.augment else None
        self._write_config()
        self.log = RunLog(self.run_dir, self.config.train.steps, enabled=self.ctx.is_main)
        try:
            self._build(saved)
            self._build_data(augment, saved)
            if saved:
                self._restore_rng(saved["rng"])
            self._announce(saved)
            with self._stop_on_signals():
                self._loop(stop_after)
            finished = self.step >= self.config.train.steps
            data = self.data.summary()
            if data is not None:
                self.log.data_summary(self.data.steps, data["wait_fraction"], data["samples_per_s"])
            features = self._export() if finished else None
        finally:
            self.log.close()
            if hasattr(self, "batches"):
                self.batches.close()
        return {"step": self.step, "epoch": self.batches.epoch, "finished": finished, "train": self.last_train,
                "val": self.last_val, "checkpoint": str(self.run_dir / ckpt.LAST) if self.ctx.is_main else None,
                "best": self.best, "features": features, "seconds": time.perf_counter() - started, "data": data}

    def _open_run_dir(self, resume: bool) -> dict[str, Any] | None:
        """Check the run directory (every rank, before any rank writes); the checkpoint to resume."""
        run_dir = self.run_dir
        check_output_path(run_dir, "run", folder=True, example=".run")
        last = run_dir / ckpt.LAST
        saved = None
        if resume and last.is_file():
            saved = ckpt.load_checkpoint(last)
            if saved["recipe"] != self.recipe.name:
                raise SynthgenError(f"{run_dir} is a {saved['recipe']} run, not {self.recipe.name}; "
                                    f"resume it with `synthgen-pretrain {saved['recipe']}`")
            differ = differing_keys(saved["config"], self.config)
            if differ:
                listed = ", ".join(f"{key} (saved {old!r}, now {new!r})" for key, (old, new) in differ.items())
                raise SynthgenError(f"cannot resume {run_dir} with a different config: {listed}; resume with "
                                    f"the saved config ({run_dir / CONFIG_FILE}) or start a new --out")
        elif not resume and run_dir.is_dir() and any(run_dir.iterdir()):
            raise SynthgenError(f"{run_dir} is not empty (an earlier run?); continue it with --resume or "
                                f"choose a new --out")
        self.ctx.barrier()
        return saved

    def _write_config(self) -> None:
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_partials(self.run_dir)
            (self.run_dir / CONFIG_FILE).write_text(self.config.to_json() + "\n")
        self.ctx.barrier()

    def _augment_config(self) -> dict[str, Any] | None:
        overrides = self.config.data.augment
        unknown = unknown_keys(OnlineAugmentConfig, overrides)
        if unknown:
            raise SynthgenError(f"unknown config key data.augment.{unknown[0]}; valid keys of data.augment: "
                                f"{', '.join(field_names(OnlineAugmentConfig))}")
        return overrides or None

    def _build(self, saved: dict[str, Any] | None) -> None:
        train = self.config.train
        if train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        _seed_everything(named_seed(train.seed, BUILD_STREAM, 0))  # the same initial weights on every rank
        self.modules = {name: module.to(self.device) for name, module in self.recipe.build().items()}
        if saved:
            names, expected = sorted(saved["modules"]), sorted(self.modules)
            if names != expected:
                raise SynthgenError(f"the checkpoint holds modules {names}, the recipe builds {expected}")
            for name, module in self.modules.items():
                module.load_state_dict(saved["modules"][name]["state_dict"])
        self.optimizer = build_optimizer(self.config.optim, self.recipe.param_groups(self.modules))
        self.scheduler = build_scheduler(self.optimizer, self.config.schedule, train.steps)
        self.amp = amp_dtype(train.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.step = 0
        if saved:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.scheduler.load_state_dict(saved["scheduler"])
            apply_schedule(self.optimizer, self.scheduler)
            self.scaler.load_state_dict(saved["scaler"])
            self.step = int(saved["step"])
            self.best = saved.get("best")  # absent in checkpoints from before best.pt
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]  # for grad_clip
        self.wrapped = wrap_modules(self.modules, self.ctx, train.find_unused_parameters)
        _seed_everything(named_seed(train.seed, GLOBAL_STREAM, self.ctx.rank))

    def _build_data(self, augment: dict[str, Any] | None, saved: dict[str, Any] | None) -> None:
        data = self.config.data
        stream = self.sources.train_stream
        self.batches = TrainBatches(stream, data.workers, data.prefetch, pin_memory=self.device.type == "cuda")
        if saved:
            self.batches.load_state_dict(saved["stream"])
        self.stage = self.sources.stage(stream, augment)
        self.val_stream = None
        if self.sources.has_validation and self.config.train.val_every:
            self.val_stream = self.sources.stream(validation=True)
            self.val_stage = self.sources.stage(self.val_stream, augment)

    def _restore_rng(self, states: list[dict[str, Any]]) -> None:
        """This rank's saved random states, or fresh seeds after a change of world size."""
        if len(states) == self.ctx.world_size:
            ckpt.set_rng_state(states[self.ctx.rank])
        else:
            _seed_everything(named_seed(self.config.train.seed, GLOBAL_STREAM, self.ctx.rank, self.step))

    def _announce(self, saved: dict[str, Any] | None) -> None:
        train_count = self.batches.stream.num_samples * self.ctx.world_size
        held_out = self.sources.held_out()
        held = f", {held_out} held out for validation" if held_out else ""
        path = self.sources.path
        amp = "off" if self.amp is None else str(self.amp).removeprefix("torch.")
        start = f"resuming at step {self.step}" if saved else "starting"
        self.log.message(f"{self.recipe.name}: {path} ({train_count} training samples this epoch{held}) -> "
                         f"{self.run_dir}; {self.device}, amp {amp}, {self.ctx.world_size} rank(s); {start}")

    # -- training -----------------------------------------------------------------------------------

    def _loop(self, stop_after: int | None) -> None:
        train = self.config.train
        stop = train.steps if stop_after is None else min(stop_after, train.steps)
        window = Window()
        saved_at = validated_at = self.step  # a resumed step was validated (if due) and saved
        for module in self.modules.values():
            module.train()
        seeded_epoch = None
        while self.step < stop:
            asked = time.perf_counter()
            batch = next(self.batches)
            if self.batches.epoch != seeded_epoch:
                seeded_epoch = self.batches.epoch
                self.stage.set_epoch(seeded_epoch)
            ready = self.stage(batch, self.device)
            waited = time.perf_counter() - asked
            losses = self._train_step(ready)
            self.step += 1
            window.add(losses, int(batch["index"].shape[0]), waited)
            if self.step % train.log_every == 0 or self.step == stop:
                self._report(window)
            if train.val_every and self.step % train.val_every == 0:
                self._validate()
                validated_at = self.step
            keep = bool(train.keep_every) and self.step % train.keep_every == 0
            if keep or (train.ckpt_every and self.step % train.ckpt_every == 0):
                self._save(ckpt.LAST, keep)
                saved_at = self.step
            if self.ctx.any(self.stop_signal is not None):
                if saved_at != self.step:
                    self._save(ckpt.LAST)
                raise TrainingInterrupted(self.step, self.run_dir / ckpt.LAST, self.stop_signal or "a signal")
        if self.step == train.steps and validated_at != self.step:
            self._validate()
        if saved_at != self.step:
            self._save(ckpt.LAST)

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        generator = named_generator(self.config.train.seed, STEP_STREAM, self.step, self.ctx.rank)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            losses = self.recipe.training_step(self.wrapped, batch, generator)
        if "loss" not in losses:
            raise SynthgenError(f"recipe {self.recipe.name} returned no 'loss' (got {', '.join(losses)})")
        self.scaler.scale(losses["loss"]).backward()
        reported = {name: value.detach().float() for name, value in losses.items()}
        if self.config.train.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            reported["grad_norm"] = nn.utils.clip_grad_norm_(self.params, self.config.train.grad_clip).detach().float()
        self.step_lr = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return reported

    def _report(self, window: Window) -> None:
        local = window.means()  # brings the losses to the host: the interval's device work is done
        seconds = window.seconds()
        means = self.ctx.mean({**local, _WAIT_KEY: window.wait_fraction(seconds)})
        wait_fraction = means.pop(_WAIT_KEY)
        if not np.isfinite(means["loss"]):
            raise SynthgenError(f"the loss is not finite at step {self.step} ({means['loss']}); lower optim.lr, set "
                                f"train.grad_clip or check the data")
        samples = window.samples * self.ctx.world_size
        self.data.add(window.steps, samples, seconds, wait_fraction)
        self.log.train(self.step, means, self.step_lr, seconds / window.steps, wait_fraction,
                       samples / seconds if seconds > 0 else 0.0)
        self.last_train = means
        window.reset()

    def _validate(self) -> None:
        if self.val_stream is None:
            return
        count = min(self.config.train.val_batches, len(self.val_stream))
        if count == 0:
            self.log.message(f"validation skipped: the held-out {self.sources.held_out()} give no batch per rank")
            return
        totals: dict[str, float] = {}
        for module in self.modules.values():
            module.eval()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for i, batch in enumerate(validation_batches(self.val_stream, count)):
                generator = named_generator(self.config.train.seed, VALIDATION_STREAM, i, self.ctx.rank)
                with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                    scores = self.recipe.validation_step(self.modules, self.val_stage(batch, self.device), generator)
                for name, value in scores.items():
                    totals[name] = totals.get(name, 0.0) + float(value)
            extras = self.recipe.validation_extras(self.modules, self.device)
        for module in self.modules.values():
            module.train()
        self.last_val = {**self.ctx.mean({name: total / count for name, total in totals.items()}), **extras}
        self.log.validation(self.step, self.last_val)
        loss = self.last_val.get("loss")
        if loss is not None and (self.best is None or loss < self.best["val_loss"]):
            self.best = {"step": self.step, "val_loss": float(loss)}
            self._save(ckpt.BEST)

    def _save(self, name: str, keep: bool = False) -> None:
        """Write checkpoint ``RUN/name`` (``last.pt`` or ``best.pt``; every rank calls this); with
        ``keep``, also its lasting copy ``step-NNNNNNNN.pt``."""
        rng = self.ctx.gather(ckpt.rng_state())
        if not self.ctx.is_main:
            return
        payload = {"recipe": self.recipe.name, "config": self.config.to_dict(),
                   "modules": {name: ckpt.module_entry(name, m) for name, m in self.modules.items()},
                   "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                   "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.batches.epoch,
                   "rng": rng, "stream": self.batches.state_dict(), "split": self.sources.split_state(),
                   "world_size": self.ctx.world_size, "best": self.best}
        path = ckpt.save_checkpoint(self.run_dir / name, payload)
        if keep:
            ckpt.keep_copy(path, self.step)

    def _export(self) -> str | None:
        path = None
        if self.ctx.is_main:
            exported = export_features(self.run_dir, self.run_dir / FEATURES_FILE, recipe=self.recipe)
            path = exported.features
            self.log.message(f"features: {exported.describe()}")
        self.ctx.barrier()
        return path

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask the loop to stop after the current step (a second SIGINT stops at
        once); handlers are installed only in the main thread."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, _frame: Any) -> None:
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop_signal = signal.Signals(signum).name

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
