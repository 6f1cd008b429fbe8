"""ConvexAdam (Siebert, Hansen and Heinrich, 2021): coupled convex optimisation of a discrete
cost volume, then Adam instance optimisation, on any voxel-wise features (MIND-SSC, learned
features, intensities).

Follows ``convexAdam.convex_adam_MIND.convex_adam_pt`` (PyPI ``convexadam`` 0.2.0) stage by stage:

1. Features averaged over ``grid_sp``-blocks (coarse grid).
2. SSD cost volume over the displacements {-disp_hw..disp_hw}^3 (coarse voxels) against the
   zero-padded moving features, box-filtered twice (3^3, zero padding, as ``avg_pool3d``).
3. Coupled convex optimisation: the argmin, box-filtered, then six rounds of
   ``argmin_d cost(d) + c * |d - smoothed|^2`` with c in (0.003, 0.01, 0.03, 0.1, 0.3, 1).
4. With ``ic``: the same for moving -> fixed and 15 rounds of the reference's symmetric
   inverse-consistency update.
5. The field trilinearly upsampled to full resolution.
6. If ``lambda_weight > 0``: Adam (lr 1) on a field at ``grid_sp_adam`` resolution, smoothed by
   three 3^3 box filters ("B-spline"), loss ``12 * mean_voxels(mean_channels((moving(x + u) -
   fixed)^2)) + lambda_weight * sum_axes mean(forward difference^2)``; the returned field is the
   smoothed one at which the last gradient was taken, upsampled.
7. If ``smooth > 0``: three ``smooth``^3 box filters (zero padding) of the full-resolution field.

Parameter names against the reference's ``convex_adam_pt``: ``niter`` = ``selected_niter``,
``smooth`` = ``selected_smooth``; the others keep their names. MIND's ``mind_r``/``mind_d``
are :func:`registration.mind.mind_ssc`'s ``radius``/``dilation`` (the features are the caller's).

Deviations, checked against the reference on MIND features (a synthetic 128^3 pair: Dice 0.877
vs 0.872; the 10 prostate MR-US pairs at 44x59x41: mean Dice 0.666 vs 0.663, per pair -3.3 to
+3.6 points, such small grids being sensitive to the geometry deviations below; the tests
compare at 48^3):

- Speed (CPU): the Adam data-term gradient is computed in closed form instead of by autograd
  through 3-D ``grid_sample``, and equals autograd's through trilinear sampling with border
  padding up to float rounding: along each axis, the forward difference of the cell the
  coordinate lies in (the cell above at an interior node), interpolated along the other two
  axes, and 0 where the coordinate is clamped, on the boundary included. The moving features and
  these derivatives are sampled through three 2-D ``grid_sample`` calls per slab of slices
  (:mod:`registration._trilinear`, 4C channels per voxel; the 2-D kernel is ~2x cheaper than the
  3-D one). The regulariser's gradient and the Adam step (torch's update rule, betas
  (0.9, 0.999), eps 1e-8) are written out; the zero-padded box filters are self-adjoint, so the
  parameters' gradient is the smoothed gradient. Buffers are reused across iterations (on the
  CPU fresh multi-megabyte allocations page-fault). On the CPU the work is split over worker
  threads with torch's intra-op threads off (:mod:`registration._workers`; robust on a busy
  machine, and the result does not depend on the thread count). Per Adam iteration at 64^3
  (12 channels) this is ~2.5x cheaper than the reference's forward and backward pass on one
  thread, ~13x against the reference with two intra-op threads on a busy 2-core machine.
- Geometry: coordinates are exact voxels everywhere (``synthgen.ops.grids``). The reference mixes
  ``align_corners`` conventions in the Adam and inverse-consistency sampling, which stretches
  sampled displacements by n / (n - 1); and when a size is not a multiple of ``grid_sp`` or
  ``grid_sp_adam`` its ``F.interpolate(size=...)`` misplaces the coarse nodes by up to a coarse
  voxel. Here coarse node j sits at fine voxel ``j * g + (g - 1) / 2`` (the centre of its pooled
  block), and the field is constant beyond the outermost nodes.
- Sampling outside the volume uses border padding (the reference's ``grid_sample`` pads with
  zeros in the Adam and inverse-consistency steps; the cost volume keeps zero padding).
- ``ic=False`` (reference bug (a)): the convex field is upsampled to full resolution in voxels
  like the ``ic=True`` one, so the output is dense and the Adam start is correctly scaled.
- ``smooth`` must be odd (reference bug (b) silently smoothed with the even kernel); the final
  smoothing is applied whether or not the Adam stage runs (the reference only smooths after
  Adam). ``niter=0`` skips the Adam stage (the reference fails).
- Channel scaling: both data terms use ``12 * mean over channels`` of the squared difference,
  which is the channel sum for 12-channel MIND, so features of any C keep the balance against
  ``lambda_weight`` and the coupling weights that MIND's per-channel scale (values in [0, 1])
  has. The reference also uses ``12 * mean`` in its Adam term for any C (its nnU-Net variant)
  but the plain channel sum in its cost volume, so for C != 12 the coupling weights weigh
  12 / C times as much against the cost there as they do here.
- float32 throughout, on the inputs' device (the reference uses float16 on GPUs).
- ``fixed_mask`` (not in the reference) restricts the Adam data term to the fixed mask.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from registration._trilinear import SliceSampler
from registration._workers import Workers, cpu_workers, parts
from synthgen.config_values import field_names, unknown_keys
from synthgen.ops.interpolate import upsample
from synthgen.ops.warp import warp

COUPLING = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
IC_ITERATIONS = 15
CHANNEL_SCALE = 12.0
ADAM_LR = 1.0
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
SPLINE_PASSES = 3
SLAB_BYTES = 8 << 20


@dataclass(frozen=True)
class ConvexAdamParams:
    """ConvexAdam hyper-parameters, with the reference's defaults.

    Attributes:
        grid_sp: block size (voxels) of the coarse grid of the convex stage.
        disp_hw: search radius in coarse voxels: displacements {-disp_hw..disp_hw}^3, i.e.
            up to ``disp_hw * grid_sp`` voxels.
        lambda_weight: weight of the diffusion regulariser of the Adam stage; 0 skips Adam.
        grid_sp_adam: block size (voxels) of the Adam stage's grid.
        niter: Adam iterations (reference ``selected_niter``); 0 skips Adam.
        smooth: odd box size of the final smoothing (reference ``selected_smooth``); 0 = none.
        ic: make the convex fields inverse consistent.
    """

    grid_sp: int = 6
    disp_hw: int = 4
    lambda_weight: float = 1.25
    grid_sp_adam: int = 2
    niter: int = 80
    smooth: int = 0
    ic: bool = True

    def __post_init__(self) -> None:
        for name, low in (("grid_sp", 1), ("disp_hw", 1), ("grid_sp_adam", 1), ("niter", 0),
                          ("smooth", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.smooth > 0 and self.smooth % 2 == 0:
            raise ValueError(f"smooth must be 0 or an odd box size, got {self.smooth}")
        weight = self.lambda_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0 \
                or not math.isfinite(weight):
            raise ValueError(f"lambda_weight must be a finite number >= 0, got {weight!r}")
        if not isinstance(self.ic, bool):
            raise ValueError(f"ic must be a bool, got {self.ic!r}")


def _box_mean(x: torch.Tensor, kernel: int, passes: int = 1,
              buffers: Sequence[torch.Tensor] | None = None,
              dims: Sequence[int] = (-3, -2, -1)) -> torch.Tensor:
    """``avg_pool3d(x, kernel, stride=1, padding=kernel // 2)`` (zeros outside, divisor
    kernel^3) applied ``passes`` times over the last three axes, as separable sums (or its
    factor along ``dims`` only: the factors along different axes commute).

    Args:
        x: (..., D, H, W) float tensor; it may alias ``buffers[1]`` (then it is overwritten).
        kernel: odd box size.
        passes: number of repetitions.
        buffers: two tensors of ``x``'s shape to work in (allocated if None); the k-th pass
            along one axis (counting from 0) writes ``buffers[k % 2]``.
        dims: the axes to filter along.

    Returns:
        The filtered tensor: ``buffers[(passes * len(dims) - 1) % 2]``.
    """
    targets = buffers if buffers is not None else (torch.empty_like(x), torch.empty_like(x))
    source = x
    for index in range(passes * len(dims)):
        dim = dims[index % len(dims)]
        target = targets[index % 2]
        n = x.shape[dim]
        reach = min(kernel // 2, n - 1)
        if reach == 0:
            target.copy_(source)
        else:
            # target[i] = source[i - 1] + source[i] (zero outside), then + source[i + 1], ...
            torch.add(source.narrow(dim, 0, n - 1), source.narrow(dim, 1, n - 1),
                      out=target.narrow(dim, 1, n - 1))
            target.narrow(dim, 0, 1).copy_(source.narrow(dim, 0, 1))
            target.narrow(dim, 0, n - 1).add_(source.narrow(dim, 1, n - 1))
        for shift in range(2, reach + 1):
            target.narrow(dim, shift, n - shift).add_(source.narrow(dim, 0, n - shift))
            target.narrow(dim, 0, n - shift).add_(source.narrow(dim, shift, n - shift))
        source = target
    return source.mul_(1.0 / kernel ** (len(dims) * passes))


def _block_centres(field: torch.Tensor, factor: int, shape: Sequence[int]) -> torch.Tensor:
    """Linear interpolation of a full-resolution field at the centres of ``factor``-blocks
    (voxel ``j * factor + (factor - 1) / 2``), divided by ``factor`` (voxels -> block units).

    Args:
        field: (3, D, H, W) float displacement in voxels.
        factor: block size.
        shape: block-grid shape (D // factor, H // factor, W // factor).

    Returns:
        (3, *shape) displacement in block units.
    """
    for dim, n in zip((1, 2, 3), shape):
        index = torch.arange(n, device=field.device) * factor + (factor - 1) // 2
        picked = field.index_select(dim, index)
        if factor % 2 == 0:
            picked = (picked + field.index_select(dim, index + 1)) * 0.5
        field = picked
    return field / factor


def _label_displacements(radius: int, device: torch.device) -> torch.Tensor:
    """(3, L) displacement of each label, L = (2r+1)^3, label index ``k*S^2 + j*S + i`` for
    the shift (i - r, j - r, k - r) along axes (0, 1, 2) (the reference's order, which
    decides ties of the argmin)."""
    steps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    k, j, i = torch.meshgrid(steps, steps, steps, indexing="ij")
    return torch.stack([i.flatten(), j.flatten(), k.flatten()])


def _cost_volume(fixed: torch.Tensor, moving: torch.Tensor, radius: int) -> torch.Tensor:
    """SSD of each fixed coarse voxel against the zero-padded moving one at every discrete
    displacement, ``12 * mean over channels``, box-filtered twice.

    Args:
        fixed, moving: (C, d, h, w) float32 coarse features.
        radius: search radius r in coarse voxels.

    Returns:
        (L, d, h, w) float32 cost, labels as :func:`_label_displacements`.
    """
    channels, depth, height, width = fixed.shape
    size = 2 * radius + 1
    padded = F.pad(moving, (radius,) * 6)
    cost = torch.empty((size, size, size, depth, height, width), dtype=fixed.dtype,
                       device=fixed.device)
    total = torch.empty((depth, size, size, height, width), dtype=fixed.dtype, device=fixed.device)
    difference = torch.empty_like(total)
    for i in range(size):
        windows = padded[:, i:i + depth].unfold(2, height, 1).unfold(3, width, 1)
        total.zero_()
        for c in range(channels):
            torch.sub(fixed[c][:, None, None], windows[c], out=difference)
            total.addcmul_(difference, difference)
        cost[:, :, i] = total.permute(2, 1, 0, 3, 4)
    cost = cost.view(size ** 3, depth, height, width).mul_(CHANNEL_SCALE / channels)
    return _box_mean(cost, 3, passes=2)


def _coupled_convex(cost: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Coupled convex optimisation of a cost volume.

    Args:
        cost: (L, d, h, w) float32 cost.
        labels: (3, L) displacement of each label.

    Returns:
        (3, d, h, w) smooth displacement in coarse voxels.
    """
    spatial = cost.shape[1:]
    flat = cost.view(cost.shape[0], -1)
    field = _box_mean(labels[:, flat.min(0).indices].view(3, *spatial), 3)
    squared_norms = labels.square().sum(0, keepdim=True).t()
    coupled = torch.empty_like(flat)
    for weight in COUPLING:
        torch.addmm(flat, labels.t(), field.view(3, -1), alpha=-2 * weight, out=coupled)
        coupled.add_(squared_norms, alpha=weight)
        field = _box_mean(labels[:, coupled.min(0).indices].view(3, *spatial), 3)
    return field


def _inverse_consistent(forward: torch.Tensor, backward: torch.Tensor,
                        iterations: int = IC_ITERATIONS) -> torch.Tensor:
    """The reference's symmetric inverse-consistency iteration; returns the forward field.

    Args:
        forward, backward: (3, d, h, w) displacements in coarse voxels (fixed -> moving and
            moving -> fixed).
        iterations: number of rounds.

    Returns:
        (3, d, h, w) forward displacement.
    """
    for _ in range(iterations):
        forward, backward = (0.5 * (forward - warp(backward, forward)),
                             0.5 * (backward - warp(forward, backward)))
    return forward


def _convex_field(fixed: torch.Tensor, moving: torch.Tensor, params: ConvexAdamParams,
                  workers: Workers) -> torch.Tensor:
    """Stages 1-4: the coarse convex (optionally inverse-consistent) field.

    Args:
        fixed, moving: (C, D, H, W) float32 features.
        params: hyper-parameters.
        workers: threads (the two directions of ``ic`` run side by side).

    Returns:
        (3, D // grid_sp, H // grid_sp, W // grid_sp) displacement in coarse voxels.
    """
    fixed_coarse, moving_coarse = workers.map(lambda x: F.avg_pool3d(x, params.grid_sp),
                                              (fixed, moving))
    labels = _label_displacements(params.disp_hw, fixed.device)

    def solve(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _coupled_convex(_cost_volume(source, target, params.disp_hw), labels)

    if not params.ic:
        return solve(fixed_coarse, moving_coarse)
    field, inverse = workers.map(solve, (fixed_coarse, moving_coarse), (moving_coarse, fixed_coarse))
    return _inverse_consistent(field, inverse)


class _AdamStage:
    """Stage 6 on the ``grid_sp_adam`` grid: closed-form gradients and a hand-written Adam.

    The data term is evaluated in slabs of slices (slice-major arrays, (slices, C, h, w), as the
    sampler returns them), split over the worker threads, each with its own buffers.

    Args:
        fixed, moving: (C, d, h, w) float32 block-averaged features.
        weights: (d, h, w) data-term weights (fixed-mask fractions) or None for all ones.
        lambda_weight: regulariser weight.
        workers: threads to split the work over.
    """

    def __init__(self, fixed: torch.Tensor, moving: torch.Tensor, weights: torch.Tensor | None,
                 lambda_weight: float, workers: Workers) -> None:
        self.fixed = fixed.transpose(0, 1).contiguous()
        self.sampler = SliceSampler(moving)
        self.weights = weights[:, None] if weights is not None else None
        normaliser = float(weights.sum()) if weights is not None else float(fixed[0].numel())
        if normaliser <= 0:
            raise ValueError("fixed_mask covers no block of the Adam grid")
        self.data_scale = 2.0 * CHANNEL_SCALE / fixed.shape[0] / normaliser
        self.lambda_weight = lambda_weight
        self.workers = workers
        depth = fixed.shape[1]
        slice_bytes = 2 * fixed[:, 0].numel() * fixed.element_size()
        count = -(-depth // max(1, SLAB_BYTES // slice_bytes))
        self.slabs = parts(depth, workers.count * -(-count // workers.count))
        self.depth_parts = parts(depth, workers.count)
        self.height_parts = parts(fixed.shape[2], workers.count)
        shape = (self.slabs[0].stop, *self.fixed.shape[1:])
        self.scratch = [torch.empty((3, *shape), dtype=fixed.dtype, device=fixed.device)
                        for _ in range(min(workers.count, len(self.slabs)))]
        self.difference = torch.empty((3, *fixed.shape[1:]), dtype=fixed.dtype,
                                      device=fixed.device)

    def _data_slabs(self, worker: int, field: torch.Tensor, gradient: torch.Tensor) -> None:
        """The unscaled data gradient of worker ``worker``'s slabs into ``gradient``."""
        values_buffer, residual_buffer, product_buffer = self.scratch[worker]
        for part in self.slabs[worker::len(self.scratch)]:
            start, stop, count = part.start, part.stop, part.stop - part.start
            values, derivatives, inside = self.sampler.sample(field, start, stop, values_buffer)
            residual = torch.sub(values, self.fixed[start:stop], out=residual_buffer[:count])
            if self.weights is not None:
                residual.mul_(self.weights[start:stop])
            product = product_buffer[:count]
            for axis, derivative in enumerate(derivatives):
                torch.sum(torch.mul(residual, derivative, out=product), 1,
                          out=gradient[axis, start:stop])
            gradient[:, start:stop].mul_(inside)

    def _data_gradient(self, field: torch.Tensor, gradient: torch.Tensor) -> None:
        """Write d(data term)/d(field) into ``gradient`` ((3, d, h, w), block units)."""
        count = len(self.scratch)
        self.workers.map(self._data_slabs, range(count), [field] * count, [gradient] * count)
        gradient.mul_(self.data_scale)

    def _smooth(self, x: torch.Tensor, buffers: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The "B-spline" smoothing (three 3^3 box filters) of a (3, d, h, w) field, split over
        the workers: the passes along axes 1 and 2 on slabs of slices (an even number of
        passes: the result is in ``buffers[1]``), then those along axis 0 on slabs of rows.
        Returns one of ``buffers``."""
        first, second = buffers

        def in_plane(part: slice) -> None:
            _box_mean(x[:, part], 3, SPLINE_PASSES, (first[:, part], second[:, part]), dims=(-2, -1))

        def across(part: slice) -> None:
            _box_mean(second[:, :, part], 3, SPLINE_PASSES, (first[:, :, part], second[:, :, part]),
                      dims=(-3,))

        self.workers.map(in_plane, self.depth_parts)
        self.workers.map(across, self.height_parts)
        return buffers[(SPLINE_PASSES - 1) % 2]

    def _add_regulariser_gradient(self, field: torch.Tensor, gradient: torch.Tensor) -> None:
        """Add d/d(field) of ``lambda * sum_axes mean((field[i+1] - field[i])^2)``."""
        for dim in (1, 2, 3):
            n = field.shape[dim]
            if n < 2:
                continue
            weight = 2.0 * self.lambda_weight / (field.numel() // n * (n - 1))
            difference = torch.sub(field.narrow(dim, 1, n - 1), field.narrow(dim, 0, n - 1),
                                   out=self.difference.narrow(dim, 0, n - 1))
            gradient.narrow(dim, 1, n - 1).add_(difference, alpha=weight)
            gradient.narrow(dim, 0, n - 1).sub_(difference, alpha=weight)

    def run(self, start: torch.Tensor, iterations: int) -> torch.Tensor:
        """Optimise from ``start`` ((3, d, h, w), block units); returns the smoothed field at
        the last evaluated iterate (``iterations - 1`` Adam updates, as the reference)."""
        params = start.clone()
        first_moment = torch.zeros_like(params)
        second_moment = torch.zeros_like(params)
        gradient = torch.empty_like(params)
        denominator = torch.empty_like(params)
        buffers = (torch.empty_like(params), torch.empty_like(params))
        beta1, beta2 = ADAM_BETAS
        for step in range(1, iterations):
            field = self._smooth(params, buffers)
            self._data_gradient(field, gradient)
            self._add_regulariser_gradient(field, gradient)
            smoothed = self._smooth(gradient, buffers)
            first_moment.mul_(beta1).add_(smoothed, alpha=1 - beta1)
            second_moment.mul_(beta2).addcmul_(smoothed, smoothed, value=1 - beta2)
            correction1 = 1 - beta1 ** step
            correction2 = 1 - beta2 ** step
            torch.sqrt(second_moment, out=denominator).div_(math.sqrt(correction2)).add_(ADAM_EPS)
            params.addcdiv_(first_moment, denominator, value=-ADAM_LR / correction1)
        return self._smooth(params, buffers)


def _as_features(features: torch.Tensor, name: str) -> torch.Tensor:
    """(C, D, H, W) or (1, C, D, H, W) real features -> detached (C, D, H, W) float32."""
    if features.dim() == 5 and features.shape[0] == 1:
        features = features[0]
    if features.dim() != 4 or features.shape[0] < 1:
        raise ValueError(f"{name} must be (C, D, H, W) or (1, C, D, H, W), got "
                         f"{tuple(features.shape)}")
    if features.is_complex() or features.dtype == torch.bool:
        raise ValueError(f"{name} must be real-valued, got {features.dtype}")
    return features.detach().float()


def convex_adam(fixed_features: torch.Tensor, moving_features: torch.Tensor,
                params: ConvexAdamParams | None = None, *,
                fixed_mask: torch.Tensor | None = None, **overrides: object) -> torch.Tensor:
    """Register moving to fixed features with ConvexAdam.

    Args:
        fixed_features, moving_features: (C, D, H, W) or (1, C, D, H, W) real tensors of the
            same shape on one device, any C (12 for MIND-SSC, 1 for an intensity image); they
            are computed in float32. Per-channel magnitudes around [0, 1] match the defaults.
        params: hyper-parameters (default :class:`ConvexAdamParams()`).
        fixed_mask: optional (D, H, W) mask (bool or numeric, nonzero = inside): the Adam data
            term averages over the mask only (each ``grid_sp_adam`` block weighted by its
            fraction inside). Masking the features themselves is the caller's
            (:func:`registration.mind.fill_outside_mask`).
        **overrides: fields of :class:`ConvexAdamParams` replacing those of ``params``.

    Returns:
        (3, D, H, W) float32 displacement in voxels on the features' device, channel i along
        array axis i, with ``warped(x) = moving(x + u(x))``. Not differentiable (no autograd
        graph). On the CPU the work runs on as many threads as torch's intra-op setting, which
        is 1 during the call and restored after.

    Raises:
        ValueError: bad shapes, an unknown or invalid hyper-parameter, a grid coarser than the
            volume, or an empty mask.
    """
    base = params if params is not None else ConvexAdamParams()
    unknown = sorted(unknown_keys(ConvexAdamParams, overrides))
    if unknown:
        raise ValueError(f"unknown ConvexAdam parameter(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(field_names(ConvexAdamParams))}")
    params = dataclasses.replace(base, **overrides)
    fixed = _as_features(fixed_features, "fixed_features")
    moving = _as_features(moving_features, "moving_features")
    if fixed.shape != moving.shape or fixed.device != moving.device:
        raise ValueError(f"fixed and moving features differ: {tuple(fixed.shape)} on {fixed.device}"
                         f" vs {tuple(moving.shape)} on {moving.device}")
    shape = tuple(fixed.shape[1:])
    for name in ("grid_sp", "grid_sp_adam"):
        if min(shape) < getattr(params, name):
            raise ValueError(f"{name}={getattr(params, name)} exceeds the volume {shape}")
    if fixed_mask is not None and tuple(fixed_mask.shape) != shape:
        raise ValueError(f"fixed_mask must be {shape}, got {tuple(fixed_mask.shape)}")

    with torch.no_grad(), cpu_workers(fixed.device) as workers:
        field = _convex_field(fixed, moving, params, workers)
        displacement = upsample(field, params.grid_sp, shape=shape).mul_(params.grid_sp)
        if params.lambda_weight > 0 and params.niter > 0:
            step = params.grid_sp_adam
            adam_shape = [n // step for n in shape]
            weights = None
            if fixed_mask is not None:
                inside = (fixed_mask != 0).to(device=fixed.device, dtype=torch.float32)
                weights = F.avg_pool3d(inside[None], step)[0]
            fixed_blocks, moving_blocks = workers.map(lambda x: F.avg_pool3d(x, step), (fixed, moving))
            stage = _AdamStage(fixed_blocks, moving_blocks, weights, float(params.lambda_weight),
                               workers)
            field = stage.run(_block_centres(displacement, step, adam_shape), params.niter)
            displacement = upsample(field, step, shape=shape).mul_(step)
        if params.smooth > 0:
            displacement = _box_mean(displacement, params.smooth, passes=3)
    return displacement
