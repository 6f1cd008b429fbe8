"""Per-layer MLP projection heads of the spatial contrastive loss (anatomix ``mlp_sample``):
``depth`` x ``Linear(no bias) -> BatchNorm1d -> ReLU`` at ``width``, where the last block's
BatchNorm has no affine parameters and no ReLU follows it (as the published code; the paper's
App. B.2 describes a 128-wide MLP without norms). Heads are used only for pretraining.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def projection_mlp(in_channels: int, width: int, depth: int) -> nn.Sequential:
    """One head: (N, in_channels) -> (N, width)."""
    if depth < 1 or width < 1:
        raise ValueError(f"a projection head needs depth >= 1 and width >= 1, got {depth} and {width}")
    layers: list[nn.Module] = []
    for k in range(depth):
        last = k == depth - 1
        layers += [nn.Linear(in_channels if k == 0 else width, width, bias=False),
                   nn.BatchNorm1d(width, affine=not last)]
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ProjectionHeads(nn.Module):
    """One :func:`projection_mlp` per named layer; called with ``{name: (N, C_name)}`` samples it
    returns ``{name: (N, width)}`` projections (BatchNorm statistics over the N rows).

    Args:
        in_channels: channels of each layer's features, by layer name (names without ``.``).
        width: hidden and output width.
        depth: number of Linear-BN blocks.

    The constructor arguments are kept, JSON-serialisable, in :attr:`init_args`.
    """

    def __init__(self, in_channels: Mapping[str, int], width: int = 256, depth: int = 3) -> None:
        super().__init__()
        self.init_args = {"in_channels": {str(k): int(v) for k, v in in_channels.items()},
                          "width": int(width), "depth": int(depth)}
        self.heads = nn.ModuleDict({name: projection_mlp(channels, width, depth)
                                    for name, channels in self.init_args["in_channels"].items()})
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")

    def forward(self, samples: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{name: (N, C_name)}`` float -> ``{name: (N, width)}`` (same dtype), for any subset of
        the layers."""
        return {name: self.heads[name](x) for name, x in samples.items()}
