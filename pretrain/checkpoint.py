"""Training checkpoints: everything a run needs to continue exactly, written atomically.

Format ``synthgen-pretrain/1`` is a ``torch.save``d dict of tensors and plain Python values
(read back with ``weights_only=True``)::

    {"format": "synthgen-pretrain/1", "recipe": name, "config": nested config dict,
     "modules": {name: {"class": "package.module:Name", "args": init_args, "state_dict": ...}},
     "optimizer": ..., "scheduler": ..., "scaler": ..., "step": completed steps, "epoch": stream epoch,
     "rng": [per rank: {"torch", "cuda", "numpy", "python"}], "stream": ShardStream state,
     "split": {"train": shard ids, "val": shard ids},
     "best": {"step", "val_loss"} of the lowest validation loss up to this step, or None}

A run directory keeps ``last.pt`` (replaced at every save; what ``--resume`` continues), every
``train.keep_every`` steps a hard-linked copy ``step-NNNNNNNN.pt``, and ``best.pt``, the state at
the step with the lowest validation loss so far (replaced when validation improves on it; its
``"best"`` names its own step). Runs from before ``best.pt`` have ``last.pt`` only and no
``"best"`` entry; they resume and export as before.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from synthgen.atomic_files import write_atomically
from synthgen.errors import SynthgenError, first_line

FORMAT = "synthgen-pretrain/1"
LAST, BEST = "last.pt", "best.pt"
PARTIAL_PREFIX = ".partial-"


def class_path(module: nn.Module) -> str:
    """``"package.module:Name"`` of ``module``'s class (which must be importable by that name)."""
    cls = type(module)
    if "<locals>" in cls.__qualname__:
        raise SynthgenError(f"module class {cls.__qualname__} is defined inside a function; define it at "
                            f"module level so that checkpoints can rebuild it")
    return f"{cls.__module__}:{cls.__qualname__}"


def module_entry(name: str, module: nn.Module) -> dict[str, Any]:
    """``{"class", "args", "state_dict"}`` of one module (state on the CPU)."""
    args = getattr(module, "init_args", None)
    if not isinstance(args, dict):
        raise SynthgenError(f"module {name!r} ({type(module).__name__}) has no init_args dict; a recipe's "
                            f"modules must record their constructor arguments (see pretrain.recipe)")
    state = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    return {"class": class_path(module), "args": dict(args), "state_dict": state}


def build_module(entry: dict[str, Any], where: Path) -> nn.Module:
    """Rebuild a module from a :func:`module_entry` of checkpoint ``where``: import the class,
    construct it from its arguments and load the weights (strict), as feature checkpoints do."""
    from registration.features.checkpoint import build_module as build  # heavy; off the CLI's start-up path

    return build({"module": entry["class"], "args": entry["args"], "state_dict": entry["state_dict"]}, where)


def rng_state() -> dict[str, Any]:
    """This process's random states: torch CPU, CUDA (all devices, if CUDA is in use), numpy's
    global generator and Python's ``random``."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda,
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where the device count matches)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(state["python"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (with ``"format"`` set) to ``path`` atomically: a partial file in the
    same directory, flushed to disk, then renamed over ``path``."""
    path = Path(path)

    def write(partial: Path) -> None:
        with open(partial, "wb") as handle:
            torch.save({"format": FORMAT, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())

    return write_atomically(path, write, _partial_for(path))


def keep_copy(path: str | os.PathLike, step: int) -> Path:
    """A lasting copy ``step-NNNNNNNN.pt`` of checkpoint ``path`` (a hard link where possible)."""
    path = Path(path)
    target = path.with_name(f"step-{step:08d}.pt")

    def write(partial: Path) -> None:
        try:
            os.link(path, partial)
        except OSError:
            shutil.copyfile(path, partial)

    return write_atomically(target, write, _partial_for(target))


def _partial_for(path: Path) -> Path:
    """This process's partial file for ``path`` (:func:`remove_partials` finds it by its prefix)."""
    return path.with_name(f"{PARTIAL_PREFIX}{path.name}.{os.getpid()}")


def remove_partials(run_dir: str | os.PathLike) -> None:
    """Delete partial files an interrupted save left in ``run_dir``."""
    for partial in Path(run_dir).glob(f"{PARTIAL_PREFIX}*"):
        partial.unlink(missing_ok=True)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/last.pt`` for a run directory."""
    path = Path(path)
    return path / LAST if path.is_dir() else path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``synthgen-pretrain/1`` checkpoint (a file or a run directory) on the CPU.

    Raises:
        SynthgenError: missing, unreadable, or not this format.
    """
    path = resolve_checkpoint(path)
    if not path.is_file():
        raise SynthgenError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as err:
        raise SynthgenError(f"{path} is not a readable checkpoint ({first_line(err)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise SynthgenError(f"{path} is not a {FORMAT} checkpoint (format {found!r})")
    return payload


def load_module(path: str | os.PathLike, name: str = "model") -> nn.Module:
    """Rebuild module ``name`` of a checkpoint (file or run directory) with its saved class,
    constructor arguments and weights, on the CPU, in eval mode."""
    path = resolve_checkpoint(path)
    modules = load_checkpoint(path)["modules"]
    if name not in modules:
        raise SynthgenError(f"checkpoint {path} has no module {name!r}; it has {', '.join(modules)}")
    return build_module(modules[name], path).eval()
