"""What the training loop measures between two reports (a logging interval), and over a run.

Losses are summed on the device and brought to the host only at the report. Data wait: a step's
wait is the host time from asking the DataLoader iterator for the next batch until the batch is
on the training device and through the on-device stage (DeviceStage), ready for the forward pass.
An interval's wait fraction is the sum of its steps' waits over its wall time, which runs from
the end of the previous report to the report after its last step, so it holds its steps' waits
and compute (and any validation or checkpoint save done just after the previous report, which
lowers that interval's fraction).

Reading it on a GPU: on the CPU the figure is exact. On CUDA kernels run asynchronously, so the
host may block in the reader while the GPU still works through the queued kernels of earlier
steps, and the stage's device work counts as compute (the GPU is busy doing it); the fraction is
therefore an upper bound of the share of time the GPU sat idle for want of data: near 0 the GPU
was never starved, near 1 the reader (or the stage's host side) paces training. The interval
ends after the report has brought the losses to the host, which waits for the interval's device
work, so its wall time covers the GPU's work too; that sync is the one the report always needed.
Nothing synchronises per step: that would stop the host queueing the next batch while the GPU
computes. Timing reads host clocks only, draws no random numbers and is not checkpointed, so
exact resume is unaffected.
"""

from __future__ import annotations

import time

import torch


class Window:
    """One logging interval: losses summed on the device (no host sync per step), steps,
    samples (this rank's) and the seconds the steps waited for their batches."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start a new interval now."""
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = self.samples = 0
        self.waited = 0.0
        self.started = time.perf_counter()

    def add(self, losses: dict[str, torch.Tensor], samples: int, waited: float) -> None:
        """One step: its 0-d float losses (on the device), batch size and data wait in seconds."""
        for name, value in losses.items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()
        self.steps += 1
        self.samples += samples
        self.waited += waited

    def means(self) -> dict[str, float]:
        """Each loss's mean over the interval's steps (waits for the device's work)."""
        return {name: float(total) / self.steps for name, total in self.sums.items()}

    def seconds(self) -> float:
        """Wall seconds since the interval started."""
        return time.perf_counter() - self.started

    def wait_fraction(self, seconds: float) -> float:
        """The summed waits over ``seconds`` (the interval's wall time), in [0, 1]."""
        return min(self.waited / seconds, 1.0) if seconds > 0 else 0.0


class DataTotals:
    """The reported intervals of one call of ``train``, for the run's data-wait summary."""

    def __init__(self) -> None:
        self.steps = self.samples = 0
        self.seconds = self.waited = 0.0

    def add(self, steps: int, samples: int, seconds: float, wait_fraction: float) -> None:
        """One interval: its steps, the samples of all ranks, its wall time and wait fraction."""
        self.steps += steps
        self.samples += samples
        self.seconds += seconds
        self.waited += wait_fraction * seconds

    def summary(self) -> dict[str, float] | None:
        """``wait_fraction`` (weighted by the intervals' wall time) and ``samples_per_s`` (all
        ranks); None before any interval was reported."""
        if self.seconds <= 0:
            return None
        return {"wait_fraction": self.waited / self.seconds, "samples_per_s": self.samples / self.seconds}
