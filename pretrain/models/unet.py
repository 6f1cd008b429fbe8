"""The anatomix UNet (Dey et al. App. B.2, Table 7; after Billot et al. and Ren et al.).

A stem convolution and then, per level, a double ``conv3-norm-ReLU`` with max-pooling between
levels; a double convolution bottleneck; per decoder level nearest 2x upsampling, concatenation
with the encoder level's output and a double convolution; a final 3^k convolution without norm
or activation.

Deviation: each decoder level concatenates (upsampled, skip) along channels, where the published
code concatenates (skip, upsampled). For training this is harmless (the level's first
convolution sees the same channels, permuted), but published weights do not load by position:
the input-channel axis of each ``dec{l}_conv1`` weight has its two blocks in the other order
(swap them, ``widths[l + 1]`` upsampled channels and ``widths[l]`` skip channels, to convert).

Convolutions are "same" padded with reflection and carry a bias only under instance norm (as the
published code). The paper's network, ``UNet()`` with the defaults
(widths 16-32-64-128 and a 256 bottleneck, 16 output channels, batch norm), has 5,899,344
parameters.

Every convolution has a name (``stem``, ``enc{l}_conv{k}``, ``bottleneck_conv{k}``,
``dec{l}_conv{k}``, ``output``; level ``l`` works at 1/2^l of the input), and
``forward(x, return_layers=names)`` returns those convolutions' outputs before their norm, which
is where the contrastive loss is applied (the published code addresses them by
``nn.Sequential`` index instead).

Weights are Kaiming-normal initialised (fan-in, ReLU gain), biases zero, norms at their torch
defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, overload

import torch
from torch import nn

from pretrain.models.blocks import ConvNormAct, ConvStack

NORMS = ("batch", "instance")
CONVS_PER_LEVEL = 2
_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_POOL: dict[int, type[nn.Module]] = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
_NORM: dict[tuple[str, int], type[nn.Module]] = {
    ("batch", 2): nn.BatchNorm2d, ("batch", 3): nn.BatchNorm3d,
    ("instance", 2): nn.InstanceNorm2d, ("instance", 3): nn.InstanceNorm3d}


class LayerInfo(NamedTuple):
    """A named convolution: its output channels and its downsampling factor (1 = full size)."""

    channels: int
    stride: int


class UNet(nn.Module):
    """The anatomix UNet; see the module docstring.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output features.
        widths: channels per encoder level, then the bottleneck's (``len(widths) - 1`` levels,
            so inputs must be multiples of ``2**(len(widths) - 1)``).
        dims: 2 or 3 spatial dimensions.
        norm: ``"batch"`` or ``"instance"``.
        padding_mode: the convolutions' padding (``"reflect"`` as the paper, or ``"zeros"``, ...).

    The constructor arguments are kept, JSON-serialisable, in :attr:`init_args`.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 16,
                 widths: Sequence[int] = (16, 32, 64, 128, 256), dims: int = 3, norm: str = "batch",
                 padding_mode: str = "reflect") -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths must hold at least one level and the bottleneck, all >= 1, got {widths}")
        if dims not in _CONV:
            raise ValueError(f"dims must be 2 or 3, got {dims}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        self.init_args = {"in_channels": int(in_channels), "out_channels": int(out_channels), "widths": widths,
                          "dims": int(dims), "norm": norm, "padding_mode": padding_mode}
        self.levels = len(widths) - 1
        self.dims = dims
        self.padding_mode = padding_mode
        block = {"conv_op": _CONV[dims], "bias": norm == "instance", "padding_mode": padding_mode,
                 "norm_op": _NORM[norm, dims], "nonlin": nn.ReLU, "nonlin_kwargs": {"inplace": True}}
        levels, bottleneck = widths[:-1], widths[-1]
        self.stem = ConvNormAct(in_channels=in_channels, out_channels=levels[0], **block)
        self.encoder = nn.ModuleList([ConvStack(levels[max(level - 1, 0)], width, CONVS_PER_LEVEL, **block)
                                      for level, width in enumerate(levels)])
        self.bottleneck = ConvStack(levels[-1], bottleneck, CONVS_PER_LEVEL, **block)
        self.decoder = nn.ModuleList([ConvStack(widths[level + 1] + width, width, CONVS_PER_LEVEL, **block)
                                      for level, width in enumerate(levels)])
        self.output = ConvNormAct(_CONV[dims], levels[0], out_channels, bias=block["bias"],
                                  padding_mode=padding_mode)
        self.pool = _POOL[dims](2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.layers = self._layer_table(widths, out_channels)
        self._init_weights()

    def _layer_table(self, widths: list[int], out_channels: int) -> dict[str, LayerInfo]:
        table = {"stem": LayerInfo(widths[0], 1)}
        for level in range(self.levels):
            table.update({f"enc{level}_conv{k}": LayerInfo(widths[level], 2 ** level)
                          for k in range(1, CONVS_PER_LEVEL + 1)})
        table.update({f"bottleneck_conv{k}": LayerInfo(widths[-1], 2 ** self.levels)
                      for k in range(1, CONVS_PER_LEVEL + 1)})
        for level in reversed(range(self.levels)):
            table.update({f"dec{level}_conv{k}": LayerInfo(widths[level], 2 ** level)
                          for k in range(1, CONVS_PER_LEVEL + 1)})
        table["output"] = LayerInfo(out_channels, 1)
        return table

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def check_input(self, shape: Sequence[int]) -> None:
        """Raise ValueError unless ``shape`` (B, in_channels, *S) fits: ``dims`` spatial axes, each a
        multiple of 2**levels and, with reflection padding, at least twice that (the bottleneck
        must be 2 voxels wide for its padding)."""
        shape = tuple(shape)
        factor = 2 ** self.levels
        smallest = 2 * factor if self.padding_mode == "reflect" else factor
        if len(shape) != self.dims + 2 or shape[1] != self.init_args["in_channels"]:
            raise ValueError(f"UNet expects (B, {self.init_args['in_channels']}, {self.dims} spatial axes), "
                             f"got {shape}")
        spatial = shape[2:]
        if any(s % factor or s < smallest for s in spatial):
            raise ValueError(f"UNet input spatial size {spatial} must be a multiple of {factor} "
                             f"({self.levels} poolings) and at least {smallest}; crop or pad the volume")

    @overload
    def forward(self, x: torch.Tensor, return_layers: None = None) -> torch.Tensor: ...

    @overload
    def forward(self, x: torch.Tensor, return_layers: Sequence[str]) -> dict[str, torch.Tensor]: ...

    def forward(self, x: torch.Tensor, return_layers: Sequence[str] | None = None
                ) -> torch.Tensor | dict[str, torch.Tensor]:
        """(B, in_channels, *S) float -> (B, out_channels, *S) features; with ``return_layers``,
        ``{name: (B, layers[name].channels, *S / layers[name].stride)}`` instead, each the named
        convolution's output before its norm (``"output"`` is the network's output).

        Raises:
            ValueError: an input shape the network cannot take, or an unknown layer name.
        """
        self.check_input(x.shape)
        wanted = set(return_layers or ())
        unknown = sorted(wanted - self.layers.keys())
        if unknown:
            raise ValueError(f"unknown UNet layer(s) {', '.join(unknown)}; valid: {', '.join(self.layers)}")
        taps: dict[str, torch.Tensor] = {}
        x = self._block(self.stem, "stem", x, wanted, taps)
        skips = []
        for level, stack in enumerate(self.encoder):
            x = self._stack(stack, f"enc{level}", self.pool(x) if level else x, wanted, taps)
            skips.append(x)
        x = self._stack(self.bottleneck, "bottleneck", self.pool(x), wanted, taps)
        for level in reversed(range(self.levels)):
            x = torch.cat([self.upsample(x), skips[level]], dim=1)
            x = self._stack(self.decoder[level], f"dec{level}", x, wanted, taps)
        out = self.output(x)
        if return_layers is None:
            return out
        taps["output"] = out
        return {name: taps[name] for name in return_layers}

    @staticmethod
    def _block(block: ConvNormAct, name: str, x: torch.Tensor, wanted: set[str],
               taps: dict[str, torch.Tensor]) -> torch.Tensor:
        if name not in wanted:
            return block(x)
        x, taps[name] = block.forward_with_preact(x)
        return x

    @staticmethod
    def _stack(stack: ConvStack, prefix: str, x: torch.Tensor, wanted: set[str],
               taps: dict[str, torch.Tensor]) -> torch.Tensor:
        names = [f"{prefix}_conv{k}" for k in range(1, len(stack) + 1)]
        if wanted.isdisjoint(names):
            return stack(x)
        x, preacts = stack.forward_with_preacts(x)
        taps.update((name, pre) for name, pre in zip(names, preacts) if name in wanted)
        return x
