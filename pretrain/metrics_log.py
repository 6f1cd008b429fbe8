"""What a run reports: console lines, ``RUN/metrics.jsonl`` (one JSON object per report and kind:
``train``, ``data``, ``val``) and TensorBoard event files in ``RUN/tb`` (scalars ``KIND/NAME``).
Only rank 0 reports; on other ranks every call is a no-op."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class RunLog:
    """Reports of one run.

    Args:
        run_dir: the run directory.
        total_steps: ``train.steps`` (for ``step N/total``).
        enabled: False on ranks other than 0.
    """

    def __init__(self, run_dir: str | os.PathLike, total_steps: int, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.total_steps = int(total_steps)
        self.enabled = enabled
        self._writer: Any = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tb"))

    def train(self, step: int, scalars: dict[str, float], lr: float, s_per_step: float, wait_fraction: float,
              samples_per_s: float) -> None:
        """One training report: mean losses over the last interval, the learning rate of the
        last step (of the first parameter group), seconds per step, and the data figures
        (``data/wait_fraction`` in [0, 1], ``data/samples_per_s`` of all ranks; see
        :mod:`pretrain.intervals`)."""
        if not self.enabled:
            return
        losses = "  ".join(f"{name} {value:.4g}" for name, value in scalars.items())
        self.message(f"step {step}/{self.total_steps}  {losses}  lr {lr:.3e}  {s_per_step:.3f} s/step  "
                     f"data wait {wait_fraction:.0%}  {samples_per_s:.1f} samples/s")
        self._record("train", step, {**scalars, "lr": lr, "s_per_step": s_per_step})
        self._record("data", step, {"wait_fraction": wait_fraction, "samples_per_s": samples_per_s})

    def data_summary(self, steps: int, wait_fraction: float, samples_per_s: float) -> None:
        """The run's data figures over its ``steps`` steps (the console line at the end)."""
        self.message(f"data: wait {wait_fraction:.0%} of step time over {steps} steps, {samples_per_s:.1f} samples/s")

    def validation(self, step: int, scores: dict[str, float]) -> None:
        """One validation report: mean scores over the held-out batches."""
        if not self.enabled:
            return
        self.message(f"val step {step}/{self.total_steps}  " + "  ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        self._record("val", step, scores)

    def message(self, text: str) -> None:
        """A console line."""
        if self.enabled:
            print(text, flush=True)

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _record(self, kind: str, step: int, values: dict[str, float]) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        for name, value in values.items():
            self._writer.add_scalar(f"{kind}/{name}", value, step)
        self._writer.flush()
