"""Building blocks that take their layer types as arguments, so one class serves 2-D and 3-D,
batch and instance norm (the style of MIC-DKFZ's dynamic-network-architectures)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class ConvNormAct(nn.Module):
    """``nonlin(norm(conv(x)))``; a missing norm or nonlinearity is the identity.

    Args:
        conv_op: e.g. ``nn.Conv3d``; a ``kernel_size`` convolution with stride 1 and "same"
            padding (``kernel_size // 2`` on each side, of ``padding_mode``).
        in_channels, out_channels: channels of the input and of the output.
        kernel_size: odd kernel edge.
        bias: whether the convolution has a bias.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        norm_op: e.g. ``nn.BatchNorm3d``, called as ``norm_op(out_channels, **norm_kwargs)``.
        nonlin: e.g. ``nn.ReLU``, called as ``nonlin(**nonlin_kwargs)``.
    """

    def __init__(self, conv_op: type[nn.Module], in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 bias: bool, padding_mode: str = "zeros", norm_op: type[nn.Module] | None = None,
                 norm_kwargs: Mapping[str, Any] | None = None, nonlin: type[nn.Module] | None = None,
                 nonlin_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.conv = conv_op(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                            padding_mode=padding_mode, bias=bias)
        self.norm = norm_op(out_channels, **(norm_kwargs or {})) if norm_op is not None else nn.Identity()
        self.act = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *S) -> (B, out_channels, *S), the dtype of ``x``."""
        return self.act(self.norm(self.conv(x)))

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output, the convolution's output before the norm), both (B, out_channels, *S)."""
        pre = self.conv(x)
        return self.act(self.norm(pre)), pre


class ConvStack(nn.ModuleList):
    """Consecutive :class:`ConvNormAct` blocks (e.g. the double convolution of a UNet level):
    the first maps ``in_channels`` to ``out_channels``, the others keep ``out_channels``.

    Args:
        in_channels, out_channels: channels into the first block and out of every block.
        num_convs: number of blocks (>= 1).
        **block_kwargs: the other :class:`ConvNormAct` arguments (``conv_op``, ``bias``, ...).
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int, **block_kwargs: Any) -> None:
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        super().__init__([ConvNormAct(in_channels=in_channels if k == 0 else out_channels,
                                      out_channels=out_channels, **block_kwargs) for k in range(num_convs)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *S) -> (B, out_channels, *S)."""
        for block in self:
            x = block(x)
        return x

    def forward_with_preacts(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(output, each block's convolution output before its norm), all (B, out_channels, *S)."""
        preacts = []
        for block in self:
            x, pre = block.forward_with_preact(x)
            preacts.append(pre)
        return x, preacts
