"""The feature-checkpoint format: how a trained network travels to the ``ckpt`` and ``slice2d``
extractors.

Format ``synthgen-module/1`` is a ``torch.save``d dict::

    {"format": "synthgen-module/1",
     "module": "package.module:ClassName",     # importable class
     "args": {...},                            # constructor keyword arguments (plain Python values)
     "state_dict": {...},                      # CPU tensors, loaded with strict=True
     "features": {...}}                        # extractor defaults, e.g. scale, mind, window, overlap,
                                               # norm, pca, every, in_channels, mean, std

It is read with ``torch.load(weights_only=True)``, so it may hold only tensors and plain Python
values; the class is imported by name, so its package must be installed. A TorchScript file
(``torch.jit.save``) is accepted too; its defaults, if any, are the JSON extra file
``synthgen_features.json`` (written by :func:`save_feature_torchscript`).

Defaults apply under the spec's options: built-in default < checkpoint default < spec option.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from registration.features.options import check_feature_defaults
from synthgen.atomic_files import write_atomically
from synthgen.errors import SynthgenError, first_line

FORMAT = "synthgen-module/1"
TORCHSCRIPT_DEFAULTS = "synthgen_features.json"
_CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def save_feature_checkpoint(path: str | os.PathLike, module_class_path: str, args: Mapping[str, object],
                            state_dict: Mapping[str, torch.Tensor], **feature_defaults: object) -> Path:
    """Write a ``synthgen-module/1`` checkpoint (atomically) and return its path.

    Args:
        path: output file.
        module_class_path: ``"package.module:ClassName"``; ``ClassName(**args)`` must rebuild
            the network and accept ``state_dict``.
        args: constructor keyword arguments (plain Python values).
        state_dict: the network's parameters and buffers (saved as CPU tensors).
        **feature_defaults: extractor defaults, checked against the ``ckpt``/``slice2d``
            options and ``in_channels``, ``mean``, ``std``.

    Raises:
        SynthgenError: a malformed class path or an unknown/invalid default.
    """
    if not _CLASS_PATH.match(module_class_path):
        raise SynthgenError(f"module class path {module_class_path!r} is not 'package.module:ClassName'; "
                            f"give the importable module and the class name separated by ':'")
    path = Path(path)
    defaults = check_feature_defaults(feature_defaults, "save_feature_checkpoint")
    payload = {"format": FORMAT, "module": module_class_path, "args": dict(args),
               "state_dict": {key: value.detach().cpu() for key, value in state_dict.items()},
               "features": defaults}
    return write_atomically(path, lambda target: torch.save(payload, target))


def save_feature_torchscript(path: str | os.PathLike, module: nn.Module, **feature_defaults: object) -> Path:
    """Script ``module`` (unless it already is a ScriptModule) and ``torch.jit.save`` it with its
    feature defaults as the extra file ``synthgen_features.json``; returns the path."""
    defaults = check_feature_defaults(feature_defaults, "save_feature_torchscript")
    extra = {TORCHSCRIPT_DEFAULTS: json.dumps(defaults)}
    with warnings.catch_warnings():  # TorchScript is deprecated in recent torch, but supported here
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
        return write_atomically(path, lambda target: torch.jit.save(scripted, str(target),
                                                                            _extra_files=extra))


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _load_torchscript(path: Path) -> tuple[nn.Module, dict[str, object]]:
    extra = {TORCHSCRIPT_DEFAULTS: ""}
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in recent torch, but supported here
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        defaults = json.loads(extra[TORCHSCRIPT_DEFAULTS]) if extra[TORCHSCRIPT_DEFAULTS] else {}
    except (RuntimeError, ValueError) as exc:
        raise SynthgenError(f"could not load TorchScript feature module {path} ({first_line(exc, with_type=True)}); "
                            f"re-export it with torch.jit.save") from None
    if not isinstance(defaults, dict):
        raise SynthgenError(f"{TORCHSCRIPT_DEFAULTS} in {path} is not a JSON object; "
                            f"re-export it with save_feature_torchscript")
    return module, check_feature_defaults(defaults, str(path))


def import_class(class_path: str, where: Path) -> type:
    module_name, _, qualname = class_path.partition(":")
    try:
        target: object = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise SynthgenError(f"cannot import {class_path!r} named by checkpoint {where} ({first_line(exc, with_type=True)}); "
                            f"install the package that defines it") from None
    if not isinstance(target, type) or not issubclass(target, nn.Module):
        raise SynthgenError(f"{class_path!r} named by checkpoint {where} is not a torch.nn.Module class; "
                            f"export the network's class")
    return target


def _load_payload(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for unreadable or foreign files
        raise SynthgenError(f"could not read feature checkpoint {path} ({first_line(exc, with_type=True)}); expected a "
                            f"{FORMAT} checkpoint (save_feature_checkpoint) or a TorchScript file") from None
    keys = {"format", "module", "args", "state_dict"}
    if isinstance(payload, dict) and payload.get("format") == "synthgen-regnet/1":
        raise SynthgenError(f"{path} is a registration network (it reads the moving and fixed images together, "
                            f"so it has no features of one image); register with --method net:{path}")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not keys <= payload.keys():
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise SynthgenError(f"{path} is not a {FORMAT} feature checkpoint (found {found!r}); "
                            f"export the network with save_feature_checkpoint or torch.jit.save")
    return payload


def _state_dict_problems(expected: Mapping[str, torch.Tensor], given: object) -> str:
    """What differs between a module's state_dict and a checkpoint's ("" when they match)."""
    if not isinstance(given, dict):
        return f"it is a {type(given).__name__}, not a dict"

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    reshaped = sorted(key for key in expected.keys() & given.keys()
                      if not isinstance(given[key], torch.Tensor) or given[key].shape != expected[key].shape)
    parts = [f"{label} {listed(keys)}" for label, keys in
             (("missing", missing), ("unexpected", unexpected), ("wrong shape for", reshaped)) if keys]
    return "; ".join(parts)


def build_module(payload: Mapping[str, object], path: Path) -> nn.Module:
    """``module(**args)`` with ``state_dict`` loaded (strict), from a checkpoint's payload.

    Raises:
        SynthgenError: a class that does not import or construct, or a state_dict that does
            not match it (naming the keys).
    """
    cls = import_class(str(payload["module"]), path)
    try:
        module = cls(**payload["args"])  # type: ignore[arg-type]
    except Exception as exc:  # any constructor error means args and class disagree
        raise SynthgenError(f"{payload['module']}(**args) from checkpoint {path} failed ({first_line(exc, with_type=True)}); "
                            f"the checkpoint's args do not fit its class") from None
    problems = _state_dict_problems(module.state_dict(), payload["state_dict"])
    if problems:
        raise SynthgenError(f"the state_dict in {path} does not match {payload['module']}(**args): "
                            f"{problems}; export the checkpoint from the same class and args")
    module.load_state_dict(payload["state_dict"], strict=True)  # type: ignore[arg-type]
    return module


def load_feature_module(path: str | os.PathLike) -> tuple[nn.Module, dict[str, object]]:
    """The network in a feature checkpoint (on the CPU, eval mode) and its typed feature defaults.

    Raises:
        SynthgenError: a missing or unreadable file, another format, a class that does not
            import or construct, or a state_dict that does not match the class.
    """
    path = Path(path)
    if not path.is_file():
        raise SynthgenError(f"feature checkpoint {path} does not exist; give the path of a file written "
                            f"by save_feature_checkpoint or torch.jit.save")
    if _is_torchscript(path):
        module, defaults = _load_torchscript(path)
        return module.eval(), defaults
    payload = _load_payload(path)
    module = build_module(payload, path)
    defaults = payload.get("features", {})
    if not isinstance(defaults, dict):
        raise SynthgenError(f"the 'features' entry of {path} is not a dict; re-export it with "
                            f"save_feature_checkpoint")
    return module.eval(), check_feature_defaults(defaults, str(path))
