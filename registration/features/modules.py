"""Feeding a loaded network: input channels, per-channel mean/std, and output checks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn

from registration.features.base import FeatureExtractor
from synthgen.errors import SynthgenError


def probe_in_channels(module: nn.Module, spatial_dims: int) -> int:
    """Input channels of ``module``'s first ``Conv{spatial_dims}d`` (TorchScript too), else 1."""
    conv = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
    for layer in module.modules():
        if isinstance(layer, conv) or getattr(layer, "original_name", "") == conv.__name__:
            weight = getattr(layer, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.ndim == spatial_dims + 2:
                return int(weight.shape[1]) * int(getattr(layer, "groups", 1))
    return 1


@dataclasses.dataclass(frozen=True)
class ModuleInput:
    """How a normalised grey image becomes the module's input: repeated to ``channels``
    (e.g. 3 for RGB foundation models), then ``(x - mean[c]) / std[c]`` per channel."""

    channels: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @classmethod
    def for_module(cls, module: nn.Module, defaults: Mapping[str, object], spatial_dims: int,
                   where: str) -> ModuleInput:
        """From a checkpoint's ``in_channels``/``mean``/``std`` defaults; ``in_channels`` is
        probed from the first convolution when the checkpoint does not give it."""
        channels = defaults.get("in_channels") or probe_in_channels(module, spatial_dims)
        mean = tuple(defaults.get("mean", (0.0,)))  # type: ignore[arg-type]
        std = tuple(defaults.get("std", (1.0,)))  # type: ignore[arg-type]
        for name, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, channels):
                raise SynthgenError(f"{where} gives {len(values)} {name} values for a module with "
                                    f"{channels} input channels; give 1 or {channels}")
        if min(std) <= 0:
            raise SynthgenError(f"{where} gives a non-positive std {std}; std values must be > 0")
        return cls(int(channels), mean, std)  # type: ignore[arg-type]

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, *S) float32 -> (B, channels, *S) float32."""
        x = image.expand(-1, self.channels, *image.shape[2:])
        if self.mean == (0.0,) and self.std == (1.0,):
            return x
        shape = (1, -1) + (1,) * (image.ndim - 2)
        mean = torch.tensor(self.mean, dtype=image.dtype, device=image.device).view(shape)
        std = torch.tensor(self.std, dtype=image.dtype, device=image.device).view(shape)
        return (x - mean) / std


def run_module(module: nn.Module, x: torch.Tensor, spatial_dims: int, what: str) -> torch.Tensor:
    """``module(x)`` for a (B, C_in, *spatial) input, checked to be one (B, C, *spatial') float
    tensor; returned as float32.

    Raises:
        SynthgenError: the module fails on the input (e.g. a 2-D network given volumes) or
            returns something else than one tensor of that layout.
    """
    axes = "(B, C, D, H, W)" if spatial_dims == 3 else "(B, C, h, w)"
    try:
        output = module(x)
    except (RuntimeError, ValueError) as exc:
        lines = str(exc).strip().splitlines()
        raise SynthgenError(f"the {what} failed on a {tuple(x.shape)} input ({lines[0] if lines else exc!r}); "
                            f"check that the checkpoint holds a network for {axes} inputs") from None
    if not isinstance(output, torch.Tensor) or output.ndim != spatial_dims + 2 or output.shape[0] != x.shape[0]:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise SynthgenError(f"the {what} returned {got} for a batch of {x.shape[0]}; a feature module must "
                            f"return one {axes} tensor (wrap it to select its feature map)")
    return output.float()


class ModuleFeatures(FeatureExtractor):
    """An extractor around a loaded network: the module (on the device, in eval mode) and how
    its input is prepared."""

    def __init__(self, module: nn.Module, module_input: ModuleInput, options: dict[str, object],
                 device: torch.device | str = "cpu") -> None:
        super().__init__(options, device)
        self.module = module.to(self.device).eval()
        self.module_input = module_input
