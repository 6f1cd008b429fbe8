"""The optimiser and learning-rate schedule named by the ``optim`` and ``schedule`` sections."""

from __future__ import annotations

import math
from typing import Any

import torch

from pretrain.config import OptimConfig, ScheduleConfig


def build_optimizer(config: OptimConfig, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD over ``param_groups`` (a group's own ``lr`` etc. win over the config)."""
    if config.name == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.nesterov)
    cls = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
    return cls(param_groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay,
               amsgrad=config.amsgrad)


def lr_factor(step: int, config: ScheduleConfig, total_steps: int) -> float:
    """The factor on each group's learning rate for optimiser step ``step`` (0-based): linear
    warm-up from 1/warmup to 1, then constant, linear to 0 at ``total_steps``, cosine to 0, or
    polynomial per block of ``poly_every`` steps (see :class:`ScheduleConfig`)."""
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.name == "constant":
        return 1.0
    if config.name == "poly":
        blocks = max(1, math.ceil((total_steps - warmup) / config.poly_every))
        return (1.0 - min(blocks, (step - warmup) // config.poly_every) / blocks) ** config.power
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    if config.name == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig,
                    total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler applying :func:`lr_factor`; its state is only the step count, so a
    resumed run may change ``train.steps`` (the decay then ends at the new count)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, total_steps))


def apply_schedule(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set each group's learning rate for the scheduler's current step, as its ``step()`` does
    (after a resume: the same value when ``train.steps`` is unchanged, the new schedule's otherwise)."""
    for group, factor, base in zip(optimizer.param_groups, scheduler.lr_lambdas, scheduler.base_lrs):
        group["lr"] = base * factor(scheduler.last_epoch)
