"""Voxel coordinates <-> ``grid_sample``'s normalised coordinates: the only place that converts.

Convention (project-wide): ``align_corners=True``. Along an axis of ``n`` voxels, voxel index
``i`` (the centre of voxel ``i``) has the normalised coordinate ``-1 + 2 * i / (n - 1)``; -1 and +1
are the centres of the first and last voxels (an axis of one voxel maps everything to 0).

Voxel coordinates are channel-first like displacements: ``(B, 3, D, H, W)`` or ``(3, D, H, W)``,
channel ``i`` along array axis ``i`` (D, H, W). ``grid_sample`` grids are channel-last,
``(B, D, H, W, 3)``, with the last dimension ordered (x=W, y=H, z=D); the flip happens here and
nowhere else. :func:`voxel_to_normalized` also converts coordinates into 2-D images (two
channels along (H, W), grid last dimension (x=W, y=H)). Every call of ``grid_sample`` in the
project goes through :func:`resample`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

Shape3 = Sequence[int]

MODES = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")


def _scales(shape: Sequence[int], dims: tuple[int, ...] = (2, 3)) -> list[float]:
    """Per-axis factor from voxel index to normalised coordinate (0 for a one-voxel axis) of a
    spatial ``shape`` with one of ``dims`` axes."""
    if len(shape) not in dims:
        names = " or ".join(f"{n}-D" for n in dims)
        raise ValueError(f"expected a {names} spatial shape, got {tuple(shape)}")
    return [2.0 / (n - 1) if n > 1 else 0.0 for n in shape]


def identity_grid(shape: Shape3, *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Voxel coordinates of every voxel of a volume of spatial ``shape``.

    Returns:
        (3, D, H, W) tensor of ``dtype``; channel i holds the index along axis i.
    """
    axes = [torch.arange(n, device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))


def voxel_to_normalized(coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Voxel coordinates into a volume (or 2-D image) of spatial ``shape`` -> a ``grid_sample``
    grid.

    Args:
        coords: float voxel coordinates, channel i along axis i: (B, 3, *S) or (3, *S) into a
            volume, (B, 2, *S) or (2, *S) into an image; batched when ``coords`` has
            ``len(shape) + 2`` dimensions.
        shape: spatial shape (D, H, W) of the volume or (H, W) of the image the coordinates
            index.

    Returns:
        (B, *S, 3) or (*S, 3) normalised coordinates, last dim ordered (x=W, y=H, z=D); for an
        image (B, *S, 2) or (*S, 2), ordered (x=W, y=H). Same dtype as ``coords``.
    """
    channel_dim = 1 if coords.dim() == len(shape) + 2 else 0
    scales = _scales(shape)
    parts = [coords.select(channel_dim, axis) * scales[axis] - 1.0
             for axis in reversed(range(len(shape)))]
    return torch.stack(parts, dim=-1)


def normalized_to_voxel(grid: torch.Tensor, shape: Shape3) -> torch.Tensor:
    """Inverse of :func:`voxel_to_normalized`.

    Args:
        grid: (B, *S, 3) or (*S, 3) normalised coordinates ordered (x=W, y=H, z=D).
        shape: spatial shape (D, H, W) of the volume the grid indexes.

    Returns:
        (B, 3, *S) or (3, *S) voxel coordinates, channel i along axis i.
    """
    if len(shape) != 3:
        raise ValueError(f"expected a 3-D spatial shape, got {tuple(shape)}")
    channel_dim = 1 if grid.dim() == 5 else 0
    halves = [(n - 1) / 2.0 for n in shape]
    parts = [(grid[..., 2 - axis] + 1.0) * halves[axis] for axis in range(3)]
    return torch.stack(parts, dim=channel_dim)


def displacement_to_grid(displacement: torch.Tensor, source_shape: Shape3,
                         offset: Sequence[float] = (0.0, 0.0, 0.0),
                         scale: float | Sequence[float] = 1.0) -> torch.Tensor:
    """The grid that samples a source volume at ``(x + u(x)) * scale + offset`` for every voxel
    x of the displacement's (target) grid.

    Equivalent to ``voxel_to_normalized((identity_grid + u) * scale + offset, source_shape)``
    but written channel by channel into the output, so no coordinate volume is materialised
    (except for a displacement that requires grad, whose grid is stacked through autograd).

    Args:
        displacement: (B, 3, D, H, W) float displacement in target voxels.
        source_shape: spatial shape (D', H', W') of the volume to be sampled.
        offset: source voxel position of the target grid's voxel (0, 0, 0), per axis.
        scale: source voxels per target voxel (e.g. 0.5 when the source is twice as coarse),
            one value or one per axis.

    Returns:
        (B, D, H, W, 3) normalised grid, same dtype and device as ``displacement``.
    """
    if displacement.dim() != 5 or displacement.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, D, H, W) displacement, got {tuple(displacement.shape)}")
    batch, _, *target = displacement.shape
    scales = _scales(source_shape, (3,))
    factors = [float(scale)] * 3 if isinstance(scale, (int, float)) else [float(v) for v in scale]
    differentiable = torch.is_grad_enabled() and displacement.requires_grad
    grid = None if differentiable else torch.empty((batch, *target, 3), dtype=displacement.dtype,
                                                   device=displacement.device)
    channels = [None, None, None]
    for axis in range(3):
        view = [1, 1, 1]
        view[axis] = target[axis]
        step = factors[axis] * scales[axis]
        ramp = torch.arange(target[axis], device=displacement.device, dtype=torch.float64)
        ramp = (ramp * step + (offset[axis] * scales[axis] - 1.0)).to(displacement.dtype).view(view)
        if differentiable:  # the same arithmetic, through autograd (training warps)
            channels[2 - axis] = torch.add(ramp, displacement[:, axis], alpha=step)
        else:
            torch.add(ramp, displacement[:, axis], alpha=step, out=grid[..., 2 - axis])
    return torch.stack(channels, dim=-1) if differentiable else grid


def resample(volume: torch.Tensor, grid: torch.Tensor, *, mode: str = "bilinear",
             padding: str = "border") -> torch.Tensor:
    """``grid_sample`` under the project convention (``align_corners=True``).

    Args:
        volume: (B, C, D', H', W') float volume.
        grid: (B, D, H, W, 3) normalised grid from this module.
        mode: "bilinear" (trilinear in 3-D) or "nearest".
        padding: "zeros", "border" or "reflection".

    Returns:
        (B, C, D, H, W) tensor of ``volume``'s dtype.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return F.grid_sample(volume, grid, mode=mode, padding_mode=padding, align_corners=True)


def sample(volume: torch.Tensor, coords: torch.Tensor, *, mode: str = "bilinear",
           padding: str = "border") -> torch.Tensor:
    """Sample ``volume`` at voxel coordinates.

    Args:
        volume: (B, C, D', H', W') float volume.
        coords: (B, 3, D, H, W) voxel coordinates into ``volume``, channel i along axis i.
        mode: "bilinear" or "nearest".
        padding: "zeros", "border" or "reflection".

    Returns:
        (B, C, D, H, W) tensor of ``volume``'s dtype.
    """
    grid = voxel_to_normalized(coords, volume.shape[2:])
    return resample(volume, grid, mode=mode, padding=padding)
