"""Trilinear sampling of a multi-channel volume at ``x + u(x)``, and the exact gradient of the
trilinear interpolant there, through 2-D ``grid_sample``.

On the CPU, 3-D ``grid_sample`` is a scalar loop (~40 ms for 12 channels at 64^3) while the 2-D
kernel is vectorised, and both parallelise over the batch only. A trilinear interpolant is
bilinear on every plane, so the volume is laid out once as 2-D images of stacked slices, each
slice with one replicated row above and below (bilinear weights never reach a neighbouring
slice):

- the slices along axis 0 (rows y, columns x), channels [values | step to the next slice],
  sampled at (z0, y, x) with z0 = floor(z): the value on the lower slice and the derivative
  along axis 0 (the step, interpolated along axes 1 and 2), blended along axis 0 into the value;
- the forward difference along axis 1, ``m[:, :, j + 1] - m[:, :, j]``, one slice per j (rows z,
  columns x), sampled at (floor(y), z, x): the derivative along axis 1;
- the forward difference along axis 2, one slice per i (rows z, columns y), sampled at
  (floor(x), z, y): the derivative along axis 2.

These are the derivatives autograd gives through ``grid_sample`` with border padding: the
forward difference of the cell the coordinate lies in, linearly interpolated along the other
two axes, and 0 where the coordinate is clamped, on the boundary included. At an interior node
(an integer coordinate) this takes the cell above; autograd's choice there depends on the
rounding of its normalised coordinate. The floor is clamped to n - 2, so the last cell covers
the last node. Each output slice is one batch element of an expanded (not copied) image, so the
kernel can use all intra-op threads.

Coordinates go through :mod:`synthgen.ops.grids` (as (row, column) coordinates into a 2-D
image) and sampling through its ``resample`` (border padding).
The row coordinate spans up to ~n^2 rows, so float32 rounding of the normalised coordinate moves
a sample along the axis of its rows by up to ~1e-7 * n^2 voxels (4e-4 voxel at 64^3), never into
another slice.

Sampling runs in slabs of slices into buffers the caller owns and reuses: on the CPU, fresh
multi-megabyte allocations page-fault and cost more than the arithmetic.
"""

from __future__ import annotations

import torch

from synthgen.ops.grids import identity_grid, resample, voxel_to_normalized


def _stacked(slices: torch.Tensor) -> torch.Tensor:
    """The 2-D image of slices stacked along the rows, each with its first and last row
    replicated above and below.

    Args:
        slices: (S, R, W, C) slices of R rows and W columns.

    Returns:
        (1, C, S * (R + 2), W) image, a view of channels-last memory.
    """
    count, rows, width, channels = slices.shape
    layout = torch.empty((count, rows + 2, width, channels), dtype=slices.dtype,
                         device=slices.device)
    layout[:, 1:-1] = slices
    layout[:, 0] = slices[:, 0]
    layout[:, -1] = slices[:, -1]
    return layout.view(1, count * (rows + 2), width, channels).permute(0, 3, 1, 2)


def _forward_difference(volume: torch.Tensor, dim: int) -> torch.Tensor:
    """``volume[j + 1] - volume[j]`` along ``dim``, n - 1 entries (one zero entry when n = 1)."""
    n = volume.shape[dim]
    if n < 2:
        return torch.zeros_like(volume)
    return volume.narrow(dim, 1, n - 1) - volume.narrow(dim, 0, n - 1)


class SliceSampler:
    """Samples a fixed (C, D, H, W) volume and the gradient of its trilinear interpolant at
    displaced positions of its own grid, in slabs of slices (from several threads at once if
    wanted, each with its own output buffer).

    Args:
        volume: (C, D, H, W) float tensor; kept (re-laid out) for later calls.
    """

    def __init__(self, volume: torch.Tensor) -> None:
        if volume.dim() != 4:
            raise ValueError(f"volume must be (C, D, H, W), got {tuple(volume.shape)}")
        channels, depth, height, width = volume.shape
        self.channels = channels
        self.shape = (depth, height, width)
        values = torch.empty((depth, height, width, 2 * channels), dtype=volume.dtype,
                             device=volume.device)
        values[..., :channels] = volume.permute(1, 2, 3, 0)
        torch.sub(values[1:, ..., :channels], values[:-1, ..., :channels],
                  out=values[:-1, ..., channels:])
        values[-1, ..., channels:] = 0
        # Images for the value and the axis-0 derivative (a slice per z: rows y, columns x), the
        # axis-1 derivative (a slice per cell j: rows z, columns x) and the axis-2 one (per
        # cell i: rows z, columns y).
        self.images = [_stacked(values),
                       _stacked(_forward_difference(volume, 2).permute(2, 1, 3, 0)),
                       _stacked(_forward_difference(volume, 3).permute(3, 1, 2, 0))]
        self.identity = identity_grid(self.shape, device=volume.device, dtype=volume.dtype)
        self.limits = torch.tensor([n - 1 for n in self.shape], dtype=volume.dtype,
                                   device=volume.device).view(3, 1, 1, 1)
        self.last_cells = torch.tensor([max(n - 2, 0) for n in self.shape], dtype=volume.dtype,
                                       device=volume.device).view(3, 1, 1, 1)

    def sample(self, displacement: torch.Tensor, start: int, stop: int, out: torch.Tensor
               ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Trilinear samples (border padding) of the slices ``start:stop`` at ``x + u(x)`` and
        the exact derivatives of the trilinear interpolant there, slice-major.

        Args:
            displacement: (3, D, H, W) displacement in voxels of the volume's grid, the
                volume's dtype and device.
            start, stop: slice range along axis 0.
            out: buffer of at least (stop - start, C, H, W) for the samples.

        Returns:
            ``(values, derivatives, inside)``: (stop - start, C, H, W) samples (a view of
            ``out``); their derivatives with respect to the coordinate along axes 0, 1 and 2
            (three (stop - start, C, H, W) tensors); and the (3, stop - start, H, W) masks of
            voxels whose coordinate along each axis lies strictly inside the volume (elsewhere
            the coordinate is clamped, the derivative along that axis is 0 and the returned one
            meaningless).
        """
        depth, height, width = self.shape
        count = stop - start
        positions = torch.add(self.identity[:, start:stop], displacement[:, start:stop])
        inside = (positions > 0) & (positions < self.limits)
        positions = torch.minimum(positions.clamp_(min=0), self.limits)
        cells = torch.minimum(positions.floor(), self.last_cells)
        z, y, x = positions
        # Per image: (slice index, row within the slice, column, rows per slice).
        placements = ((cells[0], y, x, height), (cells[1], z, x, depth), (cells[2], z, y, depth))
        samples = []
        for image, (cell, row, column, rows) in zip(self.images, placements):
            coords = torch.stack([torch.mul(cell, rows + 2).add_(row).add_(1), column], dim=1)
            grid = voxel_to_normalized(coords, image.shape[2:])
            samples.append(resample(image.expand(count, -1, -1, -1), grid, padding="border"))
        lower, step = samples[0][:, :self.channels], samples[0][:, self.channels:]
        fraction = z.sub_(cells[0])
        values = torch.addcmul(lower, step, fraction[:, None], out=out[:count])
        return values, [step, samples[1], samples[2]], inside
