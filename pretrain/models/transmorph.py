"""TransMorph-TVF, the full registration network that random-image pretraining fine-tunes
(Chen et al. 2025 App. C; MIR's ``TransMorphTVF(config, SVF=True, composition="composition")``).

The Swin encoder (:class:`SwinEncoder`) sees moving (+) fixed at the network's input size. A
decoder climbs from its deepest output with its skips (1/16 -> 1/8 -> 1/4 -> 1/2; the 1/2 skip is
a convolution of the 3^3 average-pooled input), then ``time_steps`` refinements at the input
size: step t sees the moving image warped by the flow so far beside the fixed one (a convolution
of the pair as the skip), decodes a flow increment with its own head (weights N(0, 1e-5), bias
0) and composes it with the flow so far, ``u <- u + w(u)``; the final flow is a stationary
velocity integrated by scaling and squaring (``svf_steps``, 7) and clamped to +-100 voxels.

Convolution blocks are conv (no bias) -> InstanceNorm -> LeakyReLU, except the two kinds of
pair skips, whose norm is BatchNorm (the published ``Conv3dReLU`` default they are built with);
upsampling is trilinear x2. 17,714,092 parameters at the paper's size: the published model's
17,716,639 less its unused ``reg_head`` (1,299). Deviation: flow compositions and the velocity
integration use the project's border padding (:mod:`synthgen.ops.svf`) where MIR's
``SpatialTransformer`` pads with zeros (the moving image is warped with zeros, as published);
only samples beyond the grid's edge differ.
"""

from __future__ import annotations

import torch
from torch import nn

from pretrain.models.blocks import ConvNormAct
from pretrain.models.swin import SwinEncoder
from synthgen.ops.svf import compose, integrate_svf
from synthgen.ops.warp import warp_image

CLAMP_VOXELS = 100.0


def conv_norm_lrelu(in_channels: int, out_channels: int, norm_op: type[nn.Module] = nn.InstanceNorm3d
                    ) -> ConvNormAct:
    """TransMorph's ``Conv3dReLU``: conv3 without bias, a norm, LeakyReLU."""
    return ConvNormAct(nn.Conv3d, in_channels, out_channels, 3, bias=False, norm_op=norm_op,
                       nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


class DecoderBlock(nn.Module):
    """Trilinear x2 upsampling, concatenation with the skip (if any), two :func:`conv_norm_lrelu`."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
        self.conv1 = conv_norm_lrelu(in_channels + skip_channels, out_channels)
        self.conv2 = conv_norm_lrelu(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


def flow_head(channels: int) -> nn.Conv3d:
    """A conv3 to 3 channels with weights N(0, 1e-5) and zero bias (TransMorph's RegistrationHead)."""
    conv = nn.Conv3d(channels, 3, 3, padding=1)
    nn.init.normal_(conv.weight, 0.0, 1e-5)
    nn.init.zeros_(conv.bias)
    return conv


class TransMorphTVF(nn.Module):
    """``forward(moving, fixed)``: (B, 1, D, H, W) float each, sizes multiples of the encoder's
    stride -> (B, 3, D, H, W) displacement in voxels (``warped = moving(x + u(x))``).

    Args:
        encoder: :class:`SwinEncoder` arguments (``in_channels`` must be 2); its weights are
            ``encoder.*`` in the state dict, where fine-tuning loads the pretrained ones.
        time_steps: flow refinements (MIR's default 12).
        svf_steps: scaling-and-squaring steps of the final velocity (0: use it as a displacement).
        head_width: channels of each refinement's decoder.

    The constructor arguments are kept, JSON-serialisable, in :attr:`init_args`.
    """

    def __init__(self, encoder: dict | None = None, time_steps: int = 12, svf_steps: int = 7,
                 head_width: int = 16) -> None:
        super().__init__()
        self.encoder = SwinEncoder(**(encoder or {}))
        if self.encoder.init_args["in_channels"] != 2 or len(self.encoder.channels) != 3:
            raise ValueError("the encoder must take 2 channels (moving and fixed) and have 3 stages")
        if time_steps < 1 or svf_steps < 0:
            raise ValueError(f"time_steps must be >= 1 and svf_steps >= 0, got {time_steps}, {svf_steps}")
        self.init_args = {"encoder": dict(self.encoder.init_args), "time_steps": int(time_steps),
                          "svf_steps": int(svf_steps), "head_width": int(head_width)}
        c = self.encoder.init_args["embed_dim"]
        self.up0 = DecoderBlock(4 * c, 2 * c, 2 * c)
        self.up1 = DecoderBlock(2 * c, c, c)
        self.up2 = DecoderBlock(c, c // 2, c // 2)
        self.pool = nn.AvgPool3d(3, stride=2, padding=1)
        self.skip_half = conv_norm_lrelu(2, c // 2, nn.BatchNorm3d)
        self.skips = nn.ModuleList([conv_norm_lrelu(2, c // 2, nn.BatchNorm3d) for _ in range(time_steps)])
        self.refine = nn.ModuleList([DecoderBlock(c // 2, head_width, c // 2) for _ in range(time_steps)])
        self.heads = nn.ModuleList([flow_head(head_width) for _ in range(time_steps)])

    @property
    def stride(self) -> int:
        return self.encoder.stride

    def displacement(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        """The flow at the input size (the same as calling the network)."""
        return self(moving, fixed)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        pair = torch.cat([moving, fixed], dim=1)
        quarter, eighth, deepest = self.encoder(pair)
        x = self.up2(self.up1(self.up0(deepest, eighth), quarter), self.skip_half(self.pool(pair)))
        flow = torch.zeros_like(moving).expand(-1, 3, -1, -1, -1)
        warped = moving
        for skip, refine, head in zip(self.skips, self.refine, self.heads):
            step = head(refine(x, skip(torch.cat([warped, fixed], dim=1))))
            flow = compose(step, flow)
            warped = warp_image(moving, flow, padding="zeros")
        if self.init_args["svf_steps"]:
            flow = integrate_svf(flow, self.init_args["svf_steps"]).clamp(-CLAMP_VOXELS, CLAMP_VOXELS)
        return flow
