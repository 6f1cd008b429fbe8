"""The TransMorph Swin encoder (Chen et al. 2022; the encoder of random-image pretraining, Chen
et al. 2025; reference/trainers.md §4), built from MONAI's Swin blocks.

A 4^3 patch embedding (convolution, LayerNorm), then stages of Swin blocks (window attention
with a relative position bias, shifted by half a window in every other block, MLP ratio 4),
with patch merging between stages that takes 8 * C channels to 2 * C (TransMorph's
``pat_merg_rf=4``), and a LayerNorm on each stage's output, taken *before* its merging: with
the paper's three stages the outputs have 96, 192 and 384 channels at 1/4, 1/8 and 1/16 of the
input. Stochastic depth grows linearly from 0 to ``drop_path`` over all blocks.

MONAI's ``SwinTransformerBlock`` and ``PatchMergingV2`` are TransMorph's blocks (the same
padding to whole windows, cyclic shift, attention mask and relative position table); MONAI's
own ``SwinTransformer`` is not this encoder (patch 2, outputs after merging, no reduction
factor). Differences from the published code, none of which changes the architecture or its
parameter count: the 8 sub-grids are concatenated in MONAI's order before the merge (published
weights need their merge rows permuted), and where a token grid is no larger than the window
MONAI shrinks the window to it and does not shift (the published code pads to the window;
this only happens at inputs below 3 x 16 voxels, e.g. the CPU test presets).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets.swin_unetr import PatchMergingV2, SwinTransformerBlock, compute_mask, get_window_size
from torch import nn


class SwinEncoder(nn.Module):
    """``forward(x)``: (B, in_channels, D, H, W) float, each size a multiple of :attr:`stride`
    -> one (B, embed_dim * 2**s, D / (patch * 2**s), ...) map per stage s.

    Args:
        in_channels: input channels (2: moving and fixed).
        patch_size: the patch embedding's size and stride.
        embed_dim: channels of the first stage (doubled at each merge).
        depths: Swin blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window (tokens per axis).
        mlp_ratio: MLP hidden width / channels.
        qkv_bias: a bias on the query, key and value projections (TransMorph: none).
        drop_path: the last block's stochastic depth rate.

    The constructor arguments are kept, JSON-serialisable, in :attr:`init_args`.
    """

    def __init__(self, in_channels: int = 2, patch_size: int = 4, embed_dim: int = 96,
                 depths: Sequence[int] = (4, 4, 5), num_heads: Sequence[int] = (8, 8, 8), window_size: int = 3,
                 mlp_ratio: float = 4.0, qkv_bias: bool = False, drop_path: float = 0.3) -> None:
        super().__init__()
        depths, num_heads = [int(d) for d in depths], [int(h) for h in num_heads]
        if len(depths) != len(num_heads) or not depths or min(depths) < 1:
            raise ValueError(f"depths and num_heads need one positive entry per stage, got {depths}, {num_heads}")
        if any(embed_dim * 2 ** s % h for s, h in enumerate(num_heads)):
            raise ValueError(f"each stage's channels (embed_dim {embed_dim} doubled per stage) must divide by its "
                             f"heads {num_heads}")
        self.init_args = {"in_channels": int(in_channels), "patch_size": int(patch_size), "embed_dim": int(embed_dim),
                          "depths": depths, "num_heads": num_heads, "window_size": int(window_size),
                          "mlp_ratio": float(mlp_ratio), "qkv_bias": bool(qkv_bias), "drop_path": float(drop_path)}
        self.channels = [embed_dim * 2 ** s for s in range(len(depths))]
        self.stride = patch_size * 2 ** (len(depths) - 1)
        self.window = (int(window_size),) * 3
        self.patch_embed = nn.Conv3d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        shift = tuple(w // 2 for w in self.window)
        self.stages = nn.ModuleList()
        first = 0
        for dim, depth, heads in zip(self.channels, depths, num_heads):
            self.stages.append(nn.ModuleList([
                SwinTransformerBlock(dim, heads, self.window, (0, 0, 0) if k % 2 == 0 else shift, mlp_ratio=mlp_ratio,
                                     qkv_bias=qkv_bias, drop_path=rates[first + k]) for k in range(depth)]))
            first += depth
        self.merges = nn.ModuleList([PatchMergingV2(dim, spatial_dims=3) for dim in self.channels[:-1]])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for dim in self.channels])

    def check_input(self, shape: Sequence[int]) -> None:
        """Raise ValueError unless a (B, in_channels, D, H, W) input of ``shape`` fits."""
        if len(shape) != 5 or shape[1] != self.init_args["in_channels"]:
            raise ValueError(f"input must be (B, {self.init_args['in_channels']}, D, H, W), got {tuple(shape)}")
        if any(n % self.stride for n in shape[2:]):
            raise ValueError(f"spatial sizes must be multiples of the encoder's stride {self.stride}, "
                             f"got {tuple(shape[2:])}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.check_input(x.shape)
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 4, 1))  # (B, D, H, W, C): MONAI's block layout
        outputs = []
        for s, blocks in enumerate(self.stages):
            mask = self._attention_mask(x.shape[1:4], x.device)
            for block in blocks:
                x = block(x, mask)
            outputs.append(self.norms[s](x).permute(0, 4, 1, 2, 3).contiguous())
            if s < len(self.merges):
                x = self.merges[s](x)
        return outputs

    def _attention_mask(self, grid: Sequence[int], device: torch.device) -> torch.Tensor:
        """The shifted windows' mask for a token grid (as MONAI's BasicLayer computes it)."""
        window, shift = get_window_size(tuple(grid), self.window, tuple(w // 2 for w in self.window))
        padded = [-(-n // w) * w for n, w in zip(grid, window)]
        return compute_mask(padded, window, shift, device)
