"""Turning a user's device name into a torch device, with one-line errors."""

from __future__ import annotations

import torch

from synthgen.errors import SynthgenError


def resolve_device(name: torch.device | str, option: str = "device") -> torch.device:
    """``"auto"`` (CUDA when torch has it, else the CPU) or any torch device name, e.g. ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``.

    Raises:
        SynthgenError: naming ``option`` (e.g. ``"--device"``), when ``name`` is not a device or
            asks for CUDA where torch has none.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SynthgenError(f"{option} {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SynthgenError(f"{option} {device} asks for CUDA, but CUDA is not available; use auto or cpu")
    return device
