"""Registration-network checkpoints: how a trained network that maps a (moving, fixed) pair to
a displacement travels from ``synthgen-pretrain`` to fine-tuning and the harness.

Format ``synthgen-regnet/1`` is a ``torch.save``d dict of plain values and CPU tensors::

    {"format": "synthgen-regnet/1",
     "module": "package.module:ClassName",   # importable nn.Module class
     "args": {...},                          # constructor keyword arguments
     "state_dict": {...},
     "network": {"input_scale": 2}}          # the pair is average-pooled this much for the network

It differs from the feature format (:mod:`registration.features.checkpoint`) in what the module
does, not in how it is rebuilt: the same class import, construction and strict state check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from registration.features.checkpoint import build_module
from synthgen.atomic_files import write_atomically
from synthgen.errors import SynthgenError, first_line

FORMAT = "synthgen-regnet/1"


def save_network_checkpoint(path: str | os.PathLike, module_class_path: str, args: Mapping[str, object],
                            state_dict: Mapping[str, torch.Tensor], input_scale: int = 1) -> Path:
    """Write a ``synthgen-regnet/1`` checkpoint atomically; returns its path."""
    payload = {"format": FORMAT, "module": module_class_path, "args": dict(args),
               "state_dict": {key: value.detach().cpu() for key, value in state_dict.items()},
               "network": {"input_scale": int(input_scale)}}
    return write_atomically(Path(path), lambda target: torch.save(payload, target))


def load_network(path: str | os.PathLike) -> tuple[nn.Module, dict[str, int]]:
    """The network of a ``synthgen-regnet/1`` checkpoint (CPU, eval mode) and its settings.

    Raises:
        SynthgenError: a missing or unreadable file, another format, or a class, args and
            state_dict that do not fit together.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for unreadable or foreign files
        raise SynthgenError(f"could not read registration network {path} ({first_line(exc, with_type=True)}); "
                            f"give a checkpoint written by synthgen-pretrain randreg (RUN/features.pt)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise SynthgenError(f"{path} is not a {FORMAT} registration network (found {found!r}); "
                            f"give a checkpoint written by synthgen-pretrain randreg")
    return build_module(payload, path).eval(), dict(payload.get("network", {}))
