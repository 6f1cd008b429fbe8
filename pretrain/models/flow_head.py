"""The self-distillation registration network of random-image pretraining (Chen et al. 2025 §2,
reference/trainers.md §4; MIR's ``SSLHeadNLvl``).

The Swin encoder sees moving (+) fixed; each of its outputs, deepest first, goes through a
decoder level (conv3, InstanceNorm, LeakyReLU, trilinear upsampling to 1/2 of the input,
conv3, InstanceNorm, LeakyReLU; 16 channels), and each level predicts a Gaussian flow, a mean
and a log-sigma (:class:`GaussianFlow`). The levels' features summed predict the final flow,
the ensemble. All flows are displacements in voxels of the half-resolution grid (the published
head upsamples the final one x2, magnitude x2, to the input grid: :func:`flow_at_input`).

In training the final flow is sampled, ``mean + exp(log_sigma / 2) * eps``, and only it warps
the moving image; the levels enter the loss through the KL term alone (the published code also
samples the levels' flows and discards them). The noise is drawn by the caller from the
training step's generator, so a resumed run draws what an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pretrain.models.swin import SwinEncoder
from synthgen.ops.svf import upsample_flow

HEAD_CHANNELS = 16


class GaussianFlow(nn.Module):
    """A mean and a log-sigma convolution (3^3, 3 outputs each) with the published initialisation:
    mean weights N(0, 1e-5), log-sigma weights N(0, 1e-10) and biases -10, so training starts
    from a near-zero flow with a tiny spread."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mean = nn.Conv3d(channels, 3, kernel_size=3, padding=1)
        self.log_sigma = nn.Conv3d(channels, 3, kernel_size=3, padding=1)
        nn.init.normal_(self.mean.weight, 0.0, 1e-5)
        nn.init.zeros_(self.mean.bias)
        nn.init.normal_(self.log_sigma.weight, 0.0, 1e-10)
        nn.init.constant_(self.log_sigma.bias, -10.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(x), self.log_sigma(x)


def decoder_level(channels: int, width: int, scale: int) -> nn.Sequential:
    """conv3 -> InstanceNorm -> LeakyReLU -> trilinear x``scale`` -> conv3 -> InstanceNorm -> LeakyReLU."""
    return nn.Sequential(nn.Conv3d(channels, width, 3, padding=1), nn.InstanceNorm3d(width), nn.LeakyReLU(),
                         nn.Upsample(scale_factor=scale, mode="trilinear", align_corners=False),
                         nn.Conv3d(width, width, 3, padding=1), nn.InstanceNorm3d(width), nn.LeakyReLU())


class SelfDistillationNet(nn.Module):
    """``forward(moving, fixed)``: two (B, 1, D, H, W) float volumes, sizes multiples of the
    encoder's stride -> ``[(mean, log_sigma), ...]``, one per encoder level (deepest first) and
    the ensemble's last, each (B, 3, D/2, H/2, W/2) float.

    Args:
        encoder: :class:`SwinEncoder` arguments (``in_channels`` must be 2).
        width: channels of every decoder level.

    The constructor arguments are kept, JSON-serialisable, in :attr:`init_args`; the encoder's
    weights are ``encoder.*`` in the state dict (what fine-tuning takes).
    """

    def __init__(self, encoder: dict | None = None, width: int = HEAD_CHANNELS) -> None:
        super().__init__()
        self.encoder = SwinEncoder(**(encoder or {}))
        if self.encoder.init_args["in_channels"] != 2:
            raise ValueError("the encoder must take 2 channels (moving and fixed)")
        self.init_args = {"encoder": dict(self.encoder.init_args), "width": int(width)}
        patch, levels = self.encoder.init_args["patch_size"], len(self.encoder.channels)
        scales = [patch * 2 ** s // 2 for s in reversed(range(levels))]  # each level to 1/2 of the input
        deepest_first = reversed(self.encoder.channels)
        self.levels = nn.ModuleList([decoder_level(c, width, f) for c, f in zip(deepest_first, scales)])
        self.flows = nn.ModuleList([GaussianFlow(width) for _ in range(levels)])
        self.ensemble = GaussianFlow(width)

    @property
    def stride(self) -> int:
        return self.encoder.stride

    def displacement(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The ensemble's mean flow at the input size, (B, 3, D, H, W) in voxels (inference)."""
        return flow_at_input(self(moving, fixed)[-1][0], (2,))

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features = self.encoder(torch.cat([moving, fixed], dim=1))[::-1]
        stats, summed = [], 0
        for level, flow, x in zip(self.levels, self.flows, features):
            decoded = level(x)
            summed = summed + decoded
            stats.append(flow(decoded))
        stats.append(self.ensemble(summed))
        return stats


def sample_flow(mean: torch.Tensor, log_sigma: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``mean + exp(log_sigma / 2) * eps``, eps ~ N(0, 1) drawn on the CPU from ``generator``
    (the same numbers on any device)."""
    eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32).to(mean.device, mean.dtype)
    return mean + torch.exp(log_sigma / 2) * eps


def flow_at_input(flow: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """The half-resolution flow (B, 3, d, h, w) in voxels brought to finer grids, one trilinear
    x f upsampling (magnitude x f) per factor in turn: ``(2,)`` to the network input as the
    published head, ``(2, 2)`` on to a 2x pooled input's full resolution as the training script."""
    for factor in factors:
        flow = upsample_flow(flow, factor)
    return flow
