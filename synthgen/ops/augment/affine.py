"""Random affine warp, TorchIO ``RandomAffine(p=0.5, scales=0.4, degrees=45)`` (anatomix loader),
shared by both views and the label map.

Parameters as TorchIO draws them: scales s_i ~ U(1 - 0.4, 1 + 0.4) per axis (not isotropic),
angles theta_i ~ U(-45, 45) degrees per axis, translation t_i ~ U(-t, t) (0 here), rotation and
scaling about the volume centre c = (n - 1) / 2. TorchIO resamples with SimpleITK through the
inverse of ``Scale o Rigid``; with the identity affine of the loader's images (TorchIO's RAS
world, ITK's LPS = RAS with the first two axes negated) that is, in voxel coordinates,

    out(x) = in(R^-1 (S^-1 (x - c) - t) + c),   R = Rz(theta_2) Rx(theta_0) Ry(theta_1)

(ITK's Euler3D order Z X Y; the LPS sign flips cancel under the conjugation) with S =
diag(s), axis 0/1/2 = x/y/z = D/H/W. Views are sampled trilinearly and padded with their own
minimum (TorchIO's ``default_pad_value='minimum'``, per channel); label maps with nearest
neighbour and 0 outside (``default_pad_label=0``), so they stay integer and within the original
label set plus 0.

Own kernel (TorchIO goes through SimpleITK on the CPU, ~0.15 s per image + labels): the voxel
displacement is built separably and resampled with :mod:`synthgen.ops.grids` (the project's only
voxel <-> grid_sample conversion) on the batch's device; labels go through
:func:`synthgen.ops.warp.warp_labels` (index arithmetic, no float round trip). Minor difference:
``grid_sample`` blends with the pad value within half a voxel outside the volume, where ITK
extends the edge voxel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from synthgen.ops.augment._common import apply_where, apply_where_many, as_batch, bernoulli, to_range, uniform
from synthgen.ops.grids import displacement_to_grid, resample
from synthgen.ops.warp import warp_labels


@dataclasses.dataclass(frozen=True)
class AffineParams:
    """fire: (B,) bool; scales, degrees, translation: (B, 3) float64 along (D, H, W)
    (translation in voxels)."""

    fire: torch.Tensor
    scales: torch.Tensor
    degrees: torch.Tensor
    translation: torch.Tensor


def sample_params(generator: torch.Generator, batch_size: int = 1, *, p: float = 0.5,
                  scales: float | tuple[float, float] = 0.4, degrees: float | tuple[float, float] = 45.0,
                  translation: float | tuple[float, float] = 0.0) -> AffineParams:
    """Draw fire (B), scales (B, 3), degrees (B, 3), translation (B, 3), in that order.
    A single number x means U(1 - x, 1 + x) for scales and U(-x, x) for the others (TorchIO)."""
    fire = bernoulli(generator, p, (batch_size,))
    s_low, s_high = to_range(scales, 1.0)
    d_low, d_high = to_range(degrees, 0.0)
    t_low, t_high = to_range(translation, 0.0)
    return AffineParams(fire, uniform(generator, s_low, s_high, (batch_size, 3)),
                        uniform(generator, d_low, d_high, (batch_size, 3)),
                        uniform(generator, t_low, t_high, (batch_size, 3)))


def identity_params(batch_size: int = 1) -> AffineParams:
    """Firing params that describe the identity (unit scales, no rotation or translation)."""
    zeros = torch.zeros(batch_size, 3, dtype=torch.float64)
    return AffineParams(torch.ones(batch_size, dtype=torch.bool), torch.ones(batch_size, 3, dtype=torch.float64),
                        zeros, zeros.clone())


def rotation_matrix(degrees: torch.Tensor) -> torch.Tensor:
    """ITK Euler3D rotation ``Rz(a_2) Rx(a_0) Ry(a_1)`` for (N, 3) angles in degrees along
    (D, H, W) = (x, y, z); returns (N, 3, 3) float64."""
    radians = degrees.to(torch.float64) * (math.pi / 180.0)
    cos, sin = radians.cos(), radians.sin()
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def stack(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    rx = stack([[one, zero, zero], [zero, cos[:, 0], -sin[:, 0]], [zero, sin[:, 0], cos[:, 0]]])
    ry = stack([[cos[:, 1], zero, sin[:, 1]], [zero, one, zero], [-sin[:, 1], zero, cos[:, 1]]])
    rz = stack([[cos[:, 2], -sin[:, 2], zero], [sin[:, 2], cos[:, 2], zero], [zero, zero, one]])
    return rz @ rx @ ry


def sampling_transform(scales: torch.Tensor, degrees: torch.Tensor,
                       translation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) such that output voxel x samples the input at ``A (x - c) + c + b``:
    ``A = R^-1 S^-1``, ``b = -R^-1 t``. Inputs (N, 3); outputs (N, 3, 3), (N, 3) float64."""
    inverse_rotation = rotation_matrix(degrees).transpose(1, 2)
    matrix = inverse_rotation @ torch.diag_embed(1.0 / scales.to(torch.float64))
    offset = -(inverse_rotation @ translation.to(torch.float64).unsqueeze(-1)).squeeze(-1)
    return matrix, offset


def affine_displacement(matrix: torch.Tensor, offset: torch.Tensor, shape: tuple[int, int, int],
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Voxel displacement ``u(x) = (A - I)(x - c) + b`` of the map ``x -> A (x - c) + c + b``.

    Args:
        matrix: (N, 3, 3); offset: (N, 3); shape: spatial (D, H, W).

    Returns:
        (N, 3, D, H, W) float32 displacement (channel i along axis i) on ``device``.
    """
    n = matrix.shape[0]
    linear = (matrix.to(torch.float64) - torch.eye(3, dtype=torch.float64)).to(device=device, dtype=torch.float32)
    bias = offset.to(device=device, dtype=torch.float32)
    ramps = [(torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2.0).to(torch.float32)
             for size in shape]
    r0 = ramps[0].view(1, -1, 1, 1)
    r1 = ramps[1].view(1, 1, -1, 1)
    r2 = ramps[2].view(1, 1, 1, -1)
    out = torch.empty((n, 3, *shape), dtype=torch.float32, device=device)
    for i in range(3):
        coef = linear[:, i].view(n, 3, 1, 1, 1)
        plane = coef[:, 1] * r1 + coef[:, 2] * r2 + bias[:, i].view(n, 1, 1, 1)  # (N, 1, H, W)
        torch.add(plane, coef[:, 0] * r0, out=out[:, i])
    return out


def warp_intensity(volume: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """Trilinear warp of (N, C, D, H, W) ``volume`` by an (N, 3, D, H, W) voxel displacement,
    padded with each channel's minimum (TorchIO's 'minimum')."""
    low = volume.flatten(2).amin(2).view(*volume.shape[:2], 1, 1, 1)
    grid = displacement_to_grid(displacement, volume.shape[2:])
    return resample(volume - low, grid, mode="bilinear", padding="zeros").add_(low)


def _warp(sub: torch.Tensor, displacement: torch.Tensor, is_labels: bool) -> torch.Tensor:
    if is_labels:
        return warp_labels(sub, displacement, padding="zeros")
    return warp_intensity(sub.to(torch.float32), displacement)


def apply_shared(volumes: Sequence[torch.Tensor], params: AffineParams) -> list[torch.Tensor]:
    """Warp several (B, C, D, H, W) batches with the same per-sample affines (one displacement
    per sample for all of them): integer dtypes as label maps (nearest, 0 padding), float ones
    as intensities (trilinear, min padding, returned float32)."""
    volumes = list(volumes)
    shape = tuple(volumes[0].shape[2:])
    if any(tuple(v.shape[2:]) != shape for v in volumes):
        raise ValueError(f"spatial shapes differ: {[tuple(v.shape) for v in volumes]}")

    def run(subs: list[torch.Tensor], idx: torch.Tensor) -> list[torch.Tensor]:
        matrix, offset = sampling_transform(params.scales[idx], params.degrees[idx], params.translation[idx])
        displacement = affine_displacement(matrix, offset, shape, subs[0].device)
        return [_warp(sub, displacement, not sub.dtype.is_floating_point) for sub in subs]

    return [v if not v.dtype.is_floating_point else v.to(torch.float32)
            for v in apply_where_many(volumes, params.fire, run)]


def apply(volume: torch.Tensor, params: AffineParams, *, labels: bool | None = None) -> torch.Tensor:
    """Warp the firing samples of a (B, C, D, H, W) batch (or a (D, H, W) volume, B = 1).

    Args:
        volume: float views (trilinear, min padding) or an integer label map (nearest, 0 padding).
        params: from :func:`sample_params`.
        labels: force label handling (default: integer dtypes are labels).

    Returns:
        Tensor of ``volume``'s shape; label maps keep their dtype, views come back float32.
    """
    x, restore = as_batch(volume)
    is_labels = (not x.dtype.is_floating_point) if labels is None else labels
    shape = tuple(x.shape[2:])

    def run(sub: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        matrix, offset = sampling_transform(params.scales[idx], params.degrees[idx], params.translation[idx])
        return _warp(sub, affine_displacement(matrix, offset, shape, sub.device), is_labels)

    out = apply_where(x, params.fire, run)
    return restore(out if is_labels else out.to(torch.float32))
