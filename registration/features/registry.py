"""Extractor names and :func:`get_extractor`, which builds one from a spec string."""

from __future__ import annotations

import torch

from registration.features import options
from registration.features.base import FeatureExtractor
from registration.features.checkpoint import load_feature_module
from registration.features.handcrafted import IntensityFeatures, MindFeatures
from registration.features.modules import ModuleInput
from registration.features.slicewise import SliceFeatures
from registration.features.spec import parse_spec, resolve_options
from registration.features.volume import CheckpointFeatures
from synthgen.devices import resolve_device
from synthgen.errors import SynthgenError

_PLAIN: dict[str, type[FeatureExtractor]] = {"mind": MindFeatures, "intensity": IntensityFeatures}
_NETWORK: dict[str, tuple[type[CheckpointFeatures] | type[SliceFeatures], int]] = {
    "ckpt": (CheckpointFeatures, 3), "slice2d": (SliceFeatures, 2)}

EXTRACTOR_NAMES: tuple[str, ...] = ("mind", "intensity", "ckpt", "slice2d")

_SUMMARIES = {
    "mind": "MIND-SSC of each image (12 channels)",
    "intensity": "the normalised image (1 channel)",
    "ckpt": "a 3-D network from a checkpoint, sliding-window inference",
    "slice2d": "a 2-D encoder from a checkpoint, applied slice-wise",
}
_TABLES = {"mind": options.MIND, "intensity": options.INTENSITY, "ckpt": options.CKPT,
           "slice2d": options.SLICE2D}


def _shown(value: object) -> str:
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe_extractors() -> str:
    """Each extractor's spec with its defaults and a summary, then one indented line per option,
    for ``--help`` texts."""
    lines = []
    for name in EXTRACTOR_NAMES:
        head = f"{name}:PATH" if name in _NETWORK else name
        table = _TABLES[name]
        defaults = ",".join(f"{key}={_shown(option.default)}" for key, option in table.items())
        lines.append(f"{head}[,{defaults}]: {_SUMMARIES[name]}")
        lines.extend(f"    {key}: {option.help}" for key, option in table.items())
    return "\n".join(lines)


def get_extractor(spec: str, device: torch.device | str = "cpu") -> FeatureExtractor:
    """Build the extractor a spec names, on ``device``.

    ``spec`` is ``NAME[:ARG][,key=value...]`` (see :mod:`registration.features`), e.g. ``mind``,
    ``intensity,norm=minmax``, ``ckpt:model.pt,scale=0.1,mind=true``, ``slice2d:enc.pt,every=4,pca=12``.

    Raises:
        SynthgenError: an unknown name (listing the valid ones), a missing or unexpected
            argument, an unknown or invalid option, or a checkpoint that does not load.
    """
    parsed = parse_spec(spec)
    device = resolve_device(device)
    if parsed.name in _PLAIN:
        if parsed.arg is not None:
            raise SynthgenError(f"extractor {parsed.name!r} takes no argument, got {parsed.name}:{parsed.arg}; "
                                f"write {parsed.name}[,key=value...]")
        cls = _PLAIN[parsed.name]
        return cls(resolve_options(parsed.name, cls.OPTIONS, parsed.options), device)
    if parsed.name not in _NETWORK:
        raise SynthgenError(f"unknown feature extractor {parsed.name!r}; choose one of "
                            f"{', '.join(EXTRACTOR_NAMES)}")
    network_cls, spatial_dims = _NETWORK[parsed.name]
    if parsed.arg is None:
        raise SynthgenError(f"extractor {parsed.name!r} needs a checkpoint path; write {parsed.name}:PATH")
    module, defaults = load_feature_module(parsed.arg)
    applicable = {key: value for key, value in defaults.items() if key in network_cls.OPTIONS}
    resolved = resolve_options(parsed.name, network_cls.OPTIONS, applicable, parsed.options,
                               source=[f"checkpoint {parsed.arg}", "the spec"])
    module_input = ModuleInput.for_module(module, defaults, spatial_dims, f"checkpoint {parsed.arg}")
    return network_cls(module, module_input, resolved, device)
