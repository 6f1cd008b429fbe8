"""Devices and DDP: which device a rank trains on, the process group under ``torchrun``, module
wrapping and the few collectives the loop needs (all no-ops in a single process)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from synthgen.devices import resolve_device
from synthgen.errors import SynthgenError


@dataclasses.dataclass
class Distributed:
    """This process's place in the run.

    Attributes:
        rank, world_size, local_rank: from the process group (0, 1, 0 without one).
        device: the rank's training device.
        owns_group: the loop created the process group (and destroys it at the end).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over ranks (every rank must call this with the same keys)."""
        if not self.active or not values:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return {key: float(v) / self.world_size for key, v in zip(values, tensor.tolist())}

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any rank."""
        if not self.active:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def shutdown(self) -> None:
        """Destroy the process group if the loop created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``train.device``: "auto" (CUDA device ``local_rank`` when CUDA is present, else the CPU),
    "cpu", "cuda" (device ``local_rank``) or "cuda:N"."""
    device = resolve_device(name, "train.device")
    if device.type == "cuda":
        return torch.device("cuda", local_rank if device.index is None else device.index)
    if device.type != "cpu":
        raise SynthgenError(f"train.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device


def init_distributed(device_name: str) -> Distributed:
    """Join the run's process group: an existing one, or one created from the ``torchrun``
    environment (``WORLD_SIZE`` > 1; NCCL on CUDA, else gloo); else a single process."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        device = select_device(device_name, local_rank)
        return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = select_device(device_name, local_rank)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, device, owns_group=True)
    return Distributed(0, 1, 0, select_device(device_name, 0))


def wrap_modules(modules: dict[str, nn.Module], ctx: Distributed,
                 find_unused_parameters: bool = False) -> dict[str, nn.Module]:
    """Modules with trainable parameters wrapped in DistributedDataParallel when the run is
    distributed (rank 0's weights are broadcast); the others, and every module of a single
    process, as they are."""
    if not ctx.active:
        return dict(modules)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return {name: DistributedDataParallel(module, device_ids=device_ids,
                                          find_unused_parameters=find_unused_parameters)
            if any(p.requires_grad for p in module.parameters()) else module
            for name, module in modules.items()}
