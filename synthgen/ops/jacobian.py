"""Jacobian determinant of ``x -> x + u(x)`` for a displacement ``u`` in voxels."""

from __future__ import annotations

import torch


def jacobian_determinant(displacement: torch.Tensor) -> torch.Tensor:
    """det(I + grad u) at every voxel, by central differences (one-sided at the borders).

    Derivatives are per voxel (unit spacing), matching displacements stored in voxels.

    Args:
        displacement: (3, D, H, W) or (B, 3, D, H, W) float displacement, channel i along
            axis i; every spatial size >= 2.

    Returns:
        (D, H, W) or (B, D, H, W) float32 tensor (float64 for float64 input). Values <= 0
        mark folds.
    """
    u = displacement if displacement.dtype in (torch.float32, torch.float64) else displacement.float()
    if u.dim() not in (4, 5) or u.shape[-4] != 3:
        raise ValueError(f"displacement must be (3, D, H, W) or (B, 3, D, H, W), got {tuple(u.shape)}")
    spatial = (-3, -2, -1)
    # j[i][k] = d u_i / d x_k + delta_ik
    j = [list(torch.gradient(u.select(-4, i), dim=spatial)) for i in range(3)]
    for i in range(3):
        j[i][i] = j[i][i] + 1.0
    det = (j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
           - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
           + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]))
    return det
