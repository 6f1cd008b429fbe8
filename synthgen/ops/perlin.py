"""Gradient (Perlin) noise in 3-D, multi-channel, evaluated on separable grids.

Perlin (2002), "Improving noise": a random unit gradient vector at every integer lattice point;
the noise at x is the quintic-fade (6t^5 - 15t^4 + 10t^3) trilinear blend of the eight corner
ramps ``g_corner . (x - corner)``. It is zero at every lattice point.

Deliberate deviation from the published code (perlin-numpy, used by Chen et al.): gradient
directions are uniform on the sphere (normalised Gaussian triples) instead of the angles
(theta, phi) = (2 pi r1, 2 pi r2) with r uniform, which over-weights directions near the poles.

Evaluation exploits the separable grid: the noise is a sum over the gradient's three components
of separable two-tap contractions of the lattice, done axis by axis (no per-point corner
gathers), so cost is ~ channels x points x small constant. Coordinates are in lattice units and
arbitrary (non-integer steps, any offset), which lets callers evaluate the same random field on a
domain extended by margins. Random draws happen on the CPU from the caller's
``torch.Generator``; evaluation runs on the lattice tensor's device.

MONAI and TorchIO ship no gradient noise (their "Perlin-like" fields are upsampled Gaussian
noise), hence this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def fade(t: torch.Tensor) -> torch.Tensor:
    """Perlin's quintic interpolant 6t^5 - 15t^4 + 10t^3 (elementwise, any shape and dtype)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def lattice_shape(extent: Sequence[float]) -> tuple[int, int, int]:
    """Lattice points needed to evaluate noise at coordinates in ``[0, extent_i]`` per axis."""
    return tuple(int(math.floor(e)) + 2 for e in extent)  # type: ignore[return-value]


def random_gradients(channels: int, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Random unit gradient vectors, uniform on the sphere, drawn on the CPU.

    Args:
        channels: number of independent noise channels C.
        shape: lattice shape (L0, L1, L2), each >= 2.
        generator: CPU generator all draws come from.

    Returns:
        (C, L0, L1, L2, 3) float32 CPU tensor of unit vectors; component i along axis i.
    """
    if any(n < 2 for n in shape):
        raise ValueError(f"lattice needs at least 2 points per axis, got {tuple(shape)}")
    g = torch.randn((channels, *shape, 3), generator=generator, dtype=torch.float32)
    norm = (g[..., 0] * g[..., 0] + g[..., 1] * g[..., 1] + g[..., 2] * g[..., 2]).sqrt_()
    return g / norm.clamp_(min=1e-12).unsqueeze(-1)


def random_octave_gradients(channels: int, extent: Sequence[float], octaves: int,
                            generator: torch.Generator, *, lacunarity: float = 2.0) -> list[torch.Tensor]:
    """Gradient lattices for :func:`fractal_noise`, octave o covering ``extent * lacunarity**o``.

    Returns:
        ``octaves`` CPU tensors (C, L0, L1, L2, 3), drawn in octave order.
    """
    return [random_gradients(channels, lattice_shape([e * lacunarity ** o for e in extent]), generator)
            for o in range(octaves)]


def _contract(x: torch.Tensor, dim: int, taps: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Two-tap contraction along ``dim``: ``x[i0] * k0 + x[i0 + 1] * k1`` for every output point."""
    i0, k0, k1 = taps
    shape = [1] * x.dim()
    shape[dim] = i0.numel()
    return (x.index_select(dim, i0) * k0.view(shape)).add_(x.index_select(dim, i0 + 1) * k1.view(shape))


def perlin_noise(gradients: torch.Tensor, coords: Sequence[torch.Tensor]) -> torch.Tensor:
    """Gradient noise on the separable grid ``coords[0] x coords[1] x coords[2]``.

    Args:
        gradients: (C, L0, L1, L2, 3) float unit gradients (from :func:`random_gradients`), on
            the device to evaluate on.
        coords: three 1-D float tensors (N_i,), coordinates along axis i in lattice units,
            within [0, L_i - 1].

    Returns:
        (C, N0, N1, N2) tensor of ``gradients``' dtype and device; 0 at integer coordinates,
        |value| < sqrt(3) (each ramp is at most the distance to its corner; typically < 1).
    """
    lattice = gradients.shape[1:4]
    device, dtype = gradients.device, gradients.dtype
    blend, ramp = [], []
    for axis, c in enumerate(coords):
        c = c.detach().to("cpu", torch.float64)
        if c.numel() and (c.min() < 0 or c.max() > lattice[axis] - 1):
            raise ValueError(f"axis {axis} coordinates must lie in [0, {lattice[axis] - 1}], "
                             f"got [{c.min().item():.3f}, {c.max().item():.3f}]")
        i0 = c.floor().clamp(max=lattice[axis] - 2)
        t = c - i0
        f = fade(t)
        i0 = i0.long().to(device)
        blend.append((i0, (1 - f).to(device, dtype), f.to(device, dtype)))
        ramp.append((i0, ((1 - f) * t).to(device, dtype), (f * (t - 1)).to(device, dtype)))
    total = None
    for component in range(3):
        x = gradients[..., component]
        for axis in (2, 1, 0):
            x = _contract(x, axis + 1, ramp[axis] if axis == component else blend[axis])
        total = x if total is None else total.add_(x)
    return total


def fractal_noise(gradients: Sequence[torch.Tensor], coords: Sequence[torch.Tensor], *,
                  lacunarity: float = 2.0, persistence: float = 0.5) -> torch.Tensor:
    """Sum of octaves: octave o is :func:`perlin_noise` at ``coords * lacunarity**o`` times
    ``persistence**o``.

    Args:
        gradients: one lattice (C, L0, L1, L2, 3) per octave (:func:`random_octave_gradients`).
        coords: three 1-D float tensors, coordinates of octave 0 in lattice units.

    Returns:
        (C, N0, N1, N2) tensor on the lattices' device.
    """
    total = None
    for octave, lattice in enumerate(gradients):
        scale = lacunarity ** octave
        noise = perlin_noise(lattice, [c * scale for c in coords])
        noise = noise.mul_(persistence ** octave)
        total = noise if total is None else total.add_(noise)
    if total is None:
        raise ValueError("fractal_noise needs at least one octave")
    return total
