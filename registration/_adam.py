"""ConvexAdam's instance optimisation (stage 6 of :mod:`registration.convexadam`): Adam (lr 1) on a
displacement at ``grid_sp_adam`` resolution, smoothed by three 3^3 box filters ("B-spline"), with
loss ``12 * mean_voxels(mean_channels((moving(x + u) - fixed)^2)) + lambda * sum_axes
mean(forward difference^2)``, all gradients in closed form.

- Data term: the exact gradient of the trilinear interpolant (border padding), contracted with
  the residual, from :mod:`registration._trilinear` (two ``embedding_bag`` calls per range of
  voxels, over the voxels whose moving cell is not constant: the others' gradient is exactly
  0); it equals autograd's through ``grid_sample`` up to float rounding.
- The zero-padded box filters are self-adjoint, so the parameters' gradient is the smoothed
  gradient; the regulariser's gradient and the Adam step (torch's update rule, betas (0.9,
  0.999), eps 1e-8) are written out.
- Each iteration is three passes over the grid, each split over the worker threads with no
  serial work between them (the box filter is separable and its factors commute):
  1. slabs of slices: the in-plane (axes 1, 2) smoothing of the depth-smoothed parameters,
     i.e. the field;
  2. slabs of slices: data and regulariser gradients of the field, and their in-plane
     smoothing;
  3. slabs of rows: the depth (axis 0) smoothing of that, the Adam step, and the depth
     smoothing of the new parameters.
  The result does not depend on the number of threads.
"""

from __future__ import annotations

import functools
import math
import queue
from collections.abc import Callable

import torch

from registration._box import box_mean
from registration._trilinear import TrilinearSampler
from registration._workers import Workers, parts

CHANNEL_SCALE = 12.0
ADAM_LR = 1.0
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
SPLINE_PASSES = 3
SLAB_VOXELS = 65536
PARTS_PER_THREAD = 2
PLANE_AXES = (-2, -1)


class AdamStage:
    """The Adam instance optimisation on one pair of block-averaged features.

    Args:
        fixed, moving: (C, d, h, w) float block-averaged features.
        weights: (d, h, w) data-term weights (fixed-mask fractions) or None for all ones.
        lambda_weight: regulariser weight.
        workers: threads to split the work over.

    Raises:
        ValueError: ``weights`` sum to zero.
    """

    def __init__(self, fixed: torch.Tensor, moving: torch.Tensor, weights: torch.Tensor | None,
                 lambda_weight: float, workers: Workers) -> None:
        channels, depth, height, width = fixed.shape
        self.shape = (depth, height, width)
        self.fixed = fixed.permute(1, 2, 3, 0).reshape(-1, channels).contiguous()
        self.sampler = TrilinearSampler(moving, workers)
        self.weights = weights.reshape(-1, 1) if weights is not None else None
        normaliser = float(weights.sum()) if weights is not None else float(depth * height * width)
        if normaliser <= 0:
            raise ValueError("fixed_mask covers no block of the Adam grid")
        self.data_scale = 2.0 * CHANNEL_SCALE / channels / normaliser
        self.lambda_weight = lambda_weight
        self.workers = workers
        self.slice_parts = parts(depth, PARTS_PER_THREAD * workers.count)
        self.row_parts = parts(height, PARTS_PER_THREAD * workers.count)
        thickest = max(part.stop - part.start for part in self.slice_parts)
        self.scratch = [self.sampler.scratch(min(SLAB_VOXELS, thickest * height * width))
                        for _ in range(workers.count)]
        self.differences = [torch.empty((3, thickest + 1, height, width), dtype=fixed.dtype,
                                        device=fixed.device) for _ in range(workers.count)]

    def _data_part(self, worker: int, field: torch.Tensor, gradient: torch.Tensor,
                   part: slice) -> None:
        """The data gradient of slices ``part`` of the (3, d, h, w) ``field`` into ``gradient``."""
        plane = self.shape[1] * self.shape[2]
        flat_field, flat_gradient = field.view(3, -1), gradient.view(3, -1)
        scratch = self.scratch[worker]
        count = scratch.count
        for start in range(part.start * plane, part.stop * plane, count):
            voxels = slice(start, min(start + count, part.stop * plane))
            sample = self.sampler.sample(flat_field, voxels.start, voxels.stop, scratch)
            residual = sample.values.sub_(sample.select(self.fixed[voxels]))
            if self.weights is not None:
                residual.mul_(self.weights[voxels][sample.voxels])
            sample.pull(residual, flat_gradient[:, voxels], self.data_scale)

    def _regulariser_part(self, worker: int, field: torch.Tensor, gradient: torch.Tensor,
                          part: slice) -> None:
        """Add d/d(field) of ``lambda * sum_axes mean((field[i+1] - field[i])^2)`` to slices
        ``part`` of ``gradient`` (both (3, d, h, w))."""
        buffer = self.differences[worker]
        for dim in (1, 2, 3):
            n = field.shape[dim]
            if n < 2:
                continue
            weight = 2.0 * self.lambda_weight / (field.numel() // n * (n - 1))
            if dim == 1:
                # differences j -> j + 1 for the j that reach the part: [start - 1, stop)
                low, high = max(part.start - 1, 0), min(part.stop, n - 1)
                difference = torch.sub(field[:, low + 1:high + 1], field[:, low:high],
                                       out=buffer[:, :high - low])
                up = slice(max(part.start, 1), part.stop)  # gradient[z] += w (f[z] - f[z - 1])
                gradient[:, up].add_(difference[:, up.start - 1 - low:up.stop - 1 - low],
                                     alpha=weight)
                down = slice(part.start, high)  # gradient[z] -= w (f[z + 1] - f[z])
                gradient[:, down].sub_(difference[:, down.start - low:down.stop - low],
                                       alpha=weight)
            else:
                own = field[:, part]
                size = part.stop - part.start
                difference = torch.sub(own.narrow(dim, 1, n - 1), own.narrow(dim, 0, n - 1),
                                       out=buffer[:, :size].narrow(dim, 0, n - 1))
                gradient[:, part].narrow(dim, 1, n - 1).add_(difference, alpha=weight)
                gradient[:, part].narrow(dim, 0, n - 1).sub_(difference, alpha=weight)

    def _split(self, function: Callable[[int, slice], None], partition: list[slice]) -> None:
        """``function(worker, part)`` for every part: whichever thread is free takes the next
        part and the buffers of a free worker (a thread slowed down by another process takes
        fewer parts; the result does not depend on who takes what)."""
        free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for worker in range(self.workers.count):
            free.put(worker)

        def run(part: slice) -> None:
            worker = free.get()
            try:
                function(worker, part)
            finally:
                free.put(worker)

        self.workers.map(run, partition)

    def run(self, start: torch.Tensor, iterations: int) -> torch.Tensor:
        """Optimise from ``start`` ((3, d, h, w), block units); returns the smoothed field at
        the last evaluated iterate (``iterations - 1`` Adam updates, as the reference)."""
        params = start.clone()
        first_moment, second_moment = torch.zeros_like(params), torch.zeros_like(params)
        depth_smoothed, field, gradient, smoothed, spare = (torch.empty_like(params)
                                                            for _ in range(5))
        beta1, beta2 = ADAM_BETAS

        def smooth_depth(source: torch.Tensor, target: torch.Tensor, part: slice) -> None:
            box_mean(source[:, :, part], 3, SPLINE_PASSES, (target[:, :, part], spare[:, :, part]),
                     dims=(-3,))

        def make_field(worker: int, part: slice) -> None:
            box_mean(depth_smoothed[:, part], 3, SPLINE_PASSES, (spare[:, part], field[:, part]),
                     dims=PLANE_AXES)

        def gradients(worker: int, part: slice) -> None:
            self._data_part(worker, field, gradient, part)
            self._regulariser_part(worker, field, gradient, part)
            box_mean(gradient[:, part], 3, SPLINE_PASSES, (spare[:, part], gradient[:, part]),
                     dims=PLANE_AXES)

        def update(step: int, worker: int, part: slice) -> None:
            """Adam step ``step`` (none at 0) and the depth smoothing of the parameters."""
            if step > 0:
                smooth_depth(gradient, smoothed, part)
                g = smoothed[:, :, part]
                first_moment[:, :, part].lerp_(g, 1 - beta1)
                second_moment[:, :, part].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denominator = torch.sqrt(second_moment[:, :, part], out=spare[:, :, part])
                denominator.div_(math.sqrt(1 - beta2 ** step)).add_(ADAM_EPS)
                params[:, :, part].addcdiv_(first_moment[:, :, part], denominator,
                                            value=-ADAM_LR / (1 - beta1 ** step))
            smooth_depth(params, depth_smoothed, part)

        self._split(functools.partial(update, 0), self.row_parts)
        self._split(make_field, self.slice_parts)
        for step in range(1, iterations):
            self._split(gradients, self.slice_parts)
            self._split(functools.partial(update, step), self.row_parts)
            self._split(make_field, self.slice_parts)
        return field
