"""ConvexAdam (Siebert, Hansen and Heinrich, 2021): coupled convex optimisation of a discrete
cost volume, then Adam instance optimisation, on any voxel-wise features (MIND-SSC, learned
features, intensities).

Follows ``convexAdam.convex_adam_MIND.convex_adam_pt`` (PyPI ``convexadam`` 0.2.0) stage by stage:

1. Features averaged over ``grid_sp``-blocks (coarse grid).
2. SSD cost volume over the displacements {-disp_hw..disp_hw}^3 (coarse voxels) against the
   zero-padded moving features, its channels reduced by ``cost_reduction``, box-filtered twice
   (3^3, zero padding, as ``avg_pool3d``).
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

- Speed (CPU): the Adam stage (:mod:`registration._adam`) computes every gradient in closed form
  instead of by autograd through 3-D ``grid_sample``. The data-term gradient equals autograd's
  through trilinear sampling with border padding up to float rounding (along each axis, the
  forward difference of the cell the coordinate lies in, the cell above at an interior node,
  interpolated along the other two axes, and 0 where the coordinate is clamped, on the boundary
  included); it is gathered with two ``embedding_bag`` calls per range of voxels
  (:mod:`registration._trilinear`: values from the 8 corner rows, then the residual's dot
  products with the 8 corners from a table of the corners of each varying cell), for the
  voxels whose moving cell is not constant only (elsewhere the gradient is exactly 0: in MIND
  that is the background, ~60% of a brain volume at 160x192x224).
  The regulariser's gradient and the Adam step (torch's update rule, betas (0.9, 0.999), eps
  1e-8) are written out; the zero-padded box filters are self-adjoint, so the parameters'
  gradient is the smoothed gradient. Each iteration is three passes split over worker threads
  with torch's intra-op threads off (:mod:`registration._workers`; robust on a busy machine,
  and the result does not depend on the thread count); buffers are reused (on the CPU fresh
  multi-megabyte allocations page-fault). Float rounding differs from the reference's order of
  operations, and Adam's normalised steps (lr 1) amplify it where a gradient is nearly zero, so
  fields agree to rounding only in float64 (1e-11 after 20 iterations against the previous
  implementation); Dice agrees (``benchmarks/README.md``).
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
- Channel scaling: the Adam data term uses ``12 * mean over channels`` of the squared
  difference for any C, as the reference (its nnU-Net variant) and anatomix do. The cost volume
  does too by default (``cost_reduction="mean12"``), which is the channel sum for 12-channel
  MIND, so features of any C keep the balance against the coupling weights that MIND's
  per-channel scale (values in [0, 1]) has. The reference and anatomix's published solver
  (MIND + 16 network channels) sum the channels in the cost volume instead:
  ``cost_reduction="sum"``, which weighs the cost C / 12 times as much against the coupling
  weights (identical for C = 12).
- float32 throughout, on the inputs' device (the reference uses float16 on GPUs).
- ``fixed_mask`` (not in the reference) restricts the Adam data term to the fixed mask.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from registration._adam import CHANNEL_SCALE, AdamStage
from registration._box import box_mean
from registration._workers import Workers, cpu_workers
from synthgen.config_values import field_names, unknown_keys
from synthgen.ops.interpolate import upsample
from synthgen.ops.warp import warp

COUPLING = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
IC_ITERATIONS = 15
COST_REDUCTIONS = ("mean12", "sum")


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
        cost_reduction: how the cost volume reduces the channels of the squared difference:
            "mean12" (``12 * mean``, this module's default) or "sum" (the reference's and
            anatomix's published solver); the same for 12 channels.
    """

    grid_sp: int = 6
    disp_hw: int = 4
    lambda_weight: float = 1.25
    grid_sp_adam: int = 2
    niter: int = 80
    smooth: int = 0
    ic: bool = True
    cost_reduction: Literal["mean12", "sum"] = "mean12"

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
        if self.cost_reduction not in COST_REDUCTIONS:
            raise ValueError(f"cost_reduction must be one of {', '.join(COST_REDUCTIONS)}, got "
                             f"{self.cost_reduction!r}")


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


def _cost_volume(fixed: torch.Tensor, moving: torch.Tensor, radius: int,
                 reduction: str) -> torch.Tensor:
    """SSD of each fixed coarse voxel against the zero-padded moving one at every discrete
    displacement, over the channels ``12 * mean`` ("mean12") or ``sum`` ("sum"), box-filtered
    twice.

    Args:
        fixed, moving: (C, d, h, w) float32 coarse features.
        radius: search radius r in coarse voxels.
        reduction: "mean12" or "sum".

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
    cost = cost.view(size ** 3, depth, height, width)
    if reduction == "mean12":
        cost.mul_(CHANNEL_SCALE / channels)
    return box_mean(cost, 3, passes=2)


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
    field = box_mean(labels[:, flat.min(0).indices].view(3, *spatial), 3)
    squared_norms = labels.square().sum(0, keepdim=True).t()
    coupled = torch.empty_like(flat)
    for weight in COUPLING:
        torch.addmm(flat, labels.t(), field.view(3, -1), alpha=-2 * weight, out=coupled)
        coupled.add_(squared_norms, alpha=weight)
        field = box_mean(labels[:, coupled.min(0).indices].view(3, *spatial), 3)
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
        return _coupled_convex(_cost_volume(source, target, params.disp_hw,
                                            params.cost_reduction), labels)

    if not params.ic:
        return solve(fixed_coarse, moving_coarse)
    field, inverse = workers.map(solve, (fixed_coarse, moving_coarse), (moving_coarse, fixed_coarse))
    return _inverse_consistent(field, inverse)


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
                fixed_mask: torch.Tensor | None = None, initial: torch.Tensor | None = None,
                **overrides: object) -> torch.Tensor:
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
        initial: optional (3, D, H, W) displacement in voxels to start the Adam stage from
            instead of the convex stage's (which is then skipped): instance optimisation of a
            network's prediction.
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
    if initial is not None and tuple(initial.shape[-4:]) != (3, *shape):
        raise ValueError(f"initial must be a (3, {', '.join(map(str, shape))}) displacement, got "
                         f"{tuple(initial.shape)}")
    if fixed_mask is not None and tuple(fixed_mask.shape) != shape:
        raise ValueError(f"fixed_mask must be {shape}, got {tuple(fixed_mask.shape)}")

    with torch.no_grad(), cpu_workers(fixed.device) as workers:
        if initial is None:
            field = _convex_field(fixed, moving, params, workers)
            displacement = upsample(field, params.grid_sp, shape=shape).mul_(params.grid_sp)
        else:
            displacement = initial.to(device=fixed.device, dtype=torch.float32).reshape(3, *shape)
        if params.lambda_weight > 0 and params.niter > 0:
            step = params.grid_sp_adam
            adam_shape = [n // step for n in shape]
            weights = None
            if fixed_mask is not None:
                inside = (fixed_mask != 0).to(device=fixed.device, dtype=torch.float32)
                weights = F.avg_pool3d(inside[None], step)[0]
            fixed_blocks, moving_blocks = workers.map(lambda x: F.avg_pool3d(x, step), (fixed, moving))
            stage = AdamStage(fixed_blocks, moving_blocks, weights, float(params.lambda_weight),
                               workers)
            field = stage.run(_block_centres(displacement, step, adam_shape), params.niter)
            displacement = upsample(field, step, shape=shape).mul_(step)
        if params.smooth > 0:
            displacement = box_mean(displacement, params.smooth, passes=3)
    return displacement
