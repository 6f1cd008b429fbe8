"""Trilinear sampling of a multi-channel volume at ``x + u(x)``, and the exact gradient of the
trilinear interpolant there, through 2-D ``grid_sample``.

On the CPU, 3-D ``grid_sample`` is a scalar loop (~40 ms for 12 channels at 64^3) while the 2-D
kernel is vectorised, and both parallelise over the batch only. Trilinear interpolation is a
linear blend of the bilinear samples on the two slices around ``x_0 + u_0``, so the volume is
laid out once as 2-D images: its D slices stacked along the rows, each with one replicated row
above and below (bilinear weights never reach a neighbouring slice), with a slice's values and
the difference to the next slice in two channel groups. Three such images are sampled:

- the values, at (row, column) = (y, x): the value on the lower slice and the derivative along
  axis 0 (the difference to the next slice), blended along axis 0 into the value;
- the forward difference along rows, ``m[:, y + 1] - m[:, y]``, at the integer row ``floor(y)``
  (bilinear sampling there is linear along the columns): the derivative along axis 1;
- the forward difference along columns at (y, ``floor(x)``): the derivative along axis 2.

These are the derivatives that autograd gives through ``grid_sample`` with border padding: the
forward difference of the cell the coordinate lies in (the lower cell at an interior node),
linearly interpolated along the other two axes, and 0 where the coordinate is clamped, on the
boundary included. Each output slice is one batch element of an expanded (not copied) image, so
the kernel can use all intra-op threads.

Coordinates go through :mod:`synthgen.ops.grids` (an image is a one-voxel-deep volume
(1, rows, W) for its conversion) and sampling through its ``resample`` (border padding). The
row coordinate spans D * (H + 2) rows, so float32 rounding of the normalised coordinate moves a
sample by up to ~1e-7 * D * (H + 2) voxels along axis 1 (3e-4 voxel at 64^3; at the integer rows
of the axis-1 derivative this blends in the neighbouring rows' differences with that weight).

Sampling runs in slabs of slices into buffers the caller owns and reuses: on the CPU, fresh
multi-megabyte allocations page-fault and cost more than the arithmetic.
"""

from __future__ import annotations

import torch

from synthgen.ops.grids import identity_grid, resample, voxel_to_normalized


def _slice_stacked(slices: torch.Tensor) -> torch.Tensor:
    """The 2-D image of row-padded slices with the step to the next slice.

    Args:
        slices: (D, H + 2, W, C) slices with their padding rows.

    Returns:
        (1, 2C, D * (H + 2), W) image, channels [values | next slice - this slice] (0 on the
        last slice), a view of channels-last memory.
    """
    depth, rows, width, channels = slices.shape
    layout = torch.empty((depth, rows, width, 2 * channels), dtype=slices.dtype,
                         device=slices.device)
    layout[..., :channels] = slices
    torch.sub(slices[1:], slices[:-1], out=layout[:-1, ..., channels:])
    layout[-1, ..., channels:] = 0
    return layout.view(1, depth * rows, width, 2 * channels).permute(0, 3, 1, 2)


class SliceSampler:
    """Samples a fixed (C, D, H, W) volume and its trilinear interpolant's gradient at displaced
    positions of its own grid, in slabs of slices (from several threads at once if wanted, each
    with its own output buffer).

    Args:
        volume: (C, D, H, W) float tensor; kept (re-laid out) for later calls.
    """

    def __init__(self, volume: torch.Tensor) -> None:
        if volume.dim() != 4:
            raise ValueError(f"volume must be (C, D, H, W), got {tuple(volume.shape)}")
        channels, depth, height, width = volume.shape
        self.channels = channels
        self.shape = (depth, height, width)
        self.rows_per_slice = height + 2
        padded = torch.empty((depth, height + 2, width, channels), dtype=volume.dtype,
                             device=volume.device)
        padded[:, 1:-1] = volume.permute(1, 2, 3, 0)
        padded[:, 0] = padded[:, 1]
        padded[:, -1] = padded[:, -2]
        # Forward differences; 0 past the last row / column (the padding rows difference to 0).
        along_rows = torch.zeros_like(padded)
        torch.sub(padded[:, 1:], padded[:, :-1], out=along_rows[:, :-1])
        along_columns = torch.zeros_like(padded)
        torch.sub(padded[:, :, 1:], padded[:, :, :-1], out=along_columns[:, :, :-1])
        self.images = [_slice_stacked(part) for part in (padded, along_rows, along_columns)]
        self.identity = identity_grid(self.shape, device=volume.device, dtype=volume.dtype)
        self.limits = torch.tensor([n - 1 for n in self.shape], dtype=volume.dtype,
                                   device=volume.device).view(3, 1, 1, 1)
        self.cells = torch.tensor([max(n - 2, 0) for n in self.shape], dtype=volume.dtype,
                                  device=volume.device).view(3, 1, 1, 1)

    def sample(self, displacement: torch.Tensor, start: int, stop: int, out: torch.Tensor
               ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Trilinear samples (border padding) of the slices ``start:stop`` at ``x + u(x)`` and
        the exact derivatives of the trilinear interpolant, slice-major.

        Args:
            displacement: (3, D, H, W) displacement in voxels of the volume's grid, the
                volume's dtype and device.
            start, stop: slice range along axis 0.
            out: buffer of at least (3, stop - start, C, H, W) for the samples and the
                derivatives along axes 1 and 2.

        Returns:
            ``(values, derivatives, inside)``: (stop - start, C, H, W) samples (a view of
            ``out[0]``), their derivatives with respect to the coordinate along axes 0, 1 and 2
            (three (stop - start, C, H, W) tensors, the last two views of ``out[1:]``), and the
            (3, stop - start, H, W) masks of voxels whose coordinate along each axis lies
            strictly inside the volume (elsewhere it is clamped: the sampled function is flat
            along that axis and the derivative there is meaningless; autograd gives 0).
        """
        depth, height, width = self.shape
        count = stop - start
        positions = torch.add(self.identity[:, start:stop], displacement[:, start:stop])
        inside = (positions > 0) & (positions < self.limits)
        positions = torch.minimum(positions.clamp_(min=0), self.limits)
        lower = torch.minimum(positions.floor(), self.cells)
        fraction = positions - lower
        # coords[k] = (0, row, column) in the image of the k-th sample (values, along rows,
        # along columns): row = lower slice * (H + 2) + 1 + y (or floor(y)), column x (or floor(x)).
        coords = torch.zeros((3, 3, count, height, width), dtype=positions.dtype,
                             device=positions.device)
        base = torch.mul(lower[0], self.rows_per_slice).add_(1)
        torch.add(base, positions[1], out=coords[0, 1])
        torch.add(base, lower[1], out=coords[1, 1])
        coords[2, 1] = coords[0, 1]
        coords[:2, 2] = positions[2]
        coords[2, 2] = lower[2]
        grids = voxel_to_normalized(coords, (1, self.images[0].shape[2], width))[..., :2]
        samples = [resample(image.expand(count, -1, -1, -1), grid.contiguous(), padding="border")
                   for image, grid in zip(self.images, grids)]
        channels = self.channels
        blend = fraction[0, :, None]
        values, along_rows, along_columns = (
            torch.addcmul(sample[:, :channels], sample[:, channels:], blend, out=target[:count])
            for sample, target in zip(samples, out))
        return values, [samples[0][:, channels:], along_rows, along_columns], inside
