"""Appearance model of the label-ensemble engine (Dey et al., §3 and App. B.1.2; anatomix step 2,
``process_volume``): one view = per-label Gaussian intensities x multiplicative multi-scale
texture, then the offline augmentation pipeline (:mod:`synthgen.ops.augment.offline`).

1. GMM (``sample_gmm``): every label k gets mean ~ U(25, 255) and std ~ U(5, 20); each voxel of
   label k is ``mean[k] + std[k] * N(0, 1)``; with p = 0.25 the background keeps intensity 0;
   then clip at 0 and min-max to [0, 1].
2. Texture (``draw_perlin_volume``): for each scale s in (4, 8, 16, 32), Gaussian noise on a grid
   of ceil(n / s) per axis with std U(0, 5) (one per scale), trilinearly upsampled x s
   (``align_corners=False``), summed; ``view *= 1 + 0.02 * texture``.
3. :func:`synthgen.ops.augment.offline.apply_offline`.

Implementation notes and deliberate deviations:

- Intensities are painted by table lookup (``index_select`` of per-label mean/std tables by the
  label value, one fused multiply-add with the voxel noise), not with one boolean mask per label
  as published (1.2 CPU-s for two views there). Labels are the values 0..K-1 (K = max + 1);
  tables have one row per value, so values absent from the map draw parameters that are never
  used (the published code draws per *unique* label; same law for every label present).
- "Background" is label value 0 (the published code zeroes "the first unique label", which is
  0 whenever 0 is present). Zeroing is done in the tables (mean = std = 0 for label 0), so no
  mask is built.
- All random numbers, including the (D, H, W) voxel noise (~8 ms for 128^3 float32), are drawn
  on the CPU from the caller's generator, so a view is a pure function of (labels, generator
  state) and the draws are identical whatever the device. Order: GMM tables, texture, offline
  pipeline parameters, voxel noise.
- Texture grids whose upsampled size exceeds the volume (n not a multiple of s) are cropped to
  the volume (the published code then fails on a shape mismatch). The upsampler is the
  separable one of :mod:`synthgen.ops.interpolate` (same values as ``F.interpolate`` with
  trilinear, ``align_corners=False``).
- On one CPU the output is bitwise independent of the thread count (no thread-dependent float
  reductions). CPU and CUDA outputs agree to float tolerance, not bitwise (different FFT and
  transcendental implementations), although their random draws are identical.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from synthgen.ops.augment.offline import OfflineConfig, OfflineParams, apply_offline, offline_params
from synthgen.ops.augment.scale_intensity import scale_intensity
from synthgen.ops.interpolate import upsample

DEFAULT_SCALES = (4, 8, 16, 32)


@dataclasses.dataclass(frozen=True)
class GMMParams:
    """Per-label intensity model: means and stds (K,) float64 CPU tensors, indexed by label
    value, and whether label 0 (background) stays at 0."""

    means: torch.Tensor
    stds: torch.Tensor
    zero_background: bool

    @property
    def num_labels(self) -> int:
        return int(self.means.shape[0])

    def tables(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 (K,) mean and std tables on ``device``, row 0 zeroed if ``zero_background``."""
        means, stds = self.means.clone(), self.stds.clone()
        if self.zero_background:
            means[0] = 0.0
            stds[0] = 0.0
        return means.to(device=device, dtype=torch.float32), stds.to(device=device, dtype=torch.float32)


def sample_gmm_params(num_labels: int, generator: torch.Generator, means: tuple[float, float] = (25.0, 255.0),
                      stds: tuple[float, float] = (5.0, 20.0), background_zero_prob: float = 0.25) -> GMMParams:
    """Draw K means ~ U(means), K stds ~ U(stds) and the zero-background flag, in that order,
    on the CPU from ``generator``."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    mean = torch.rand(num_labels, generator=generator, dtype=torch.float64) * (means[1] - means[0]) + means[0]
    std = torch.rand(num_labels, generator=generator, dtype=torch.float64) * (stds[1] - stds[0]) + stds[0]
    zero = bool(torch.rand((), generator=generator, dtype=torch.float64) < background_zero_prob)
    return GMMParams(mean, std, zero)


def voxel_noise(shape: Sequence[int], generator: torch.Generator,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Standard normal float32 noise of ``shape`` drawn on the CPU from ``generator``, moved to
    ``device`` (identical values on every device)."""
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)


def render_gmm(labels: torch.Tensor, params: GMMParams, noise_generator_or_noise: torch.Generator | torch.Tensor,
               *, normalize: bool = True) -> torch.Tensor:
    """Gaussian-mixture intensities of a label map, by table lookup (no loop over labels).

    Args:
        labels: integer label map of any shape (e.g. (D, H, W)), values in [0, K).
        params: from :func:`sample_gmm_params` with K > max label.
        noise_generator_or_noise: a CPU generator to draw the standard normal voxel noise from
            (see :func:`voxel_noise`), or that noise itself (float, ``labels``' shape).
        normalize: clip at 0 and min-max to [0, 1] (the published behaviour); False returns
            the raw ``mean[label] + std[label] * noise`` (for tests and diagnostics).

    Returns:
        float32 tensor of ``labels``' shape on ``labels``' device.
    """
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    device = labels.device
    if isinstance(noise_generator_or_noise, torch.Generator):
        noise = voxel_noise(labels.shape, noise_generator_or_noise, device)
    else:
        noise = noise_generator_or_noise.to(device=device, dtype=torch.float32)
        if noise.shape != labels.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != labels shape {tuple(labels.shape)}")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= params.num_labels:
        raise ValueError(f"label values [{low}, {high}] outside the {params.num_labels} GMM components")
    mean_table, std_table = params.tables(device)
    index = labels.reshape(-1).to(torch.int64)
    out = torch.addcmul(mean_table.index_select(0, index), std_table.index_select(0, index),
                        noise.reshape(-1)).view(labels.shape)
    if not normalize:
        return out
    return scale_intensity(out.clamp_(min=0.0)[None, None])[0, 0].reshape(labels.shape)


@dataclasses.dataclass(frozen=True)
class TextureParams:
    """Multi-scale texture: per scale s its std and its standard normal grid (CPU float32 of
    ceil(n / s) per axis)."""

    scales: tuple[int, ...]
    stds: torch.Tensor
    grids: tuple[torch.Tensor, ...]


def sample_texture_params(shape: Sequence[int], generator: torch.Generator,
                          scales: Sequence[int] = DEFAULT_SCALES, max_std: float = 5.0,
                          min_std: float = 0.0) -> TextureParams:
    """Per scale, in order: std ~ U(min_std, max_std), then the grid's N(0, 1) draws."""
    stds, grids = [], []
    for scale in scales:
        stds.append(float(torch.rand((), generator=generator, dtype=torch.float64)) * (max_std - min_std) + min_std)
        grid_shape = tuple(math.ceil(n / scale) for n in shape)
        grids.append(torch.randn(grid_shape, generator=generator, dtype=torch.float32))
    return TextureParams(tuple(int(s) for s in scales), torch.tensor(stds, dtype=torch.float64), tuple(grids))


def render_texture(params: TextureParams, shape: Sequence[int],
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Sum over scales of ``std_s * upsample(grid_s, s)``, cropped to ``shape``.

    Returns:
        (D, H, W) float32 tensor on ``device``.
    """
    depth, height, width = shape
    total = None
    for scale, std, grid in zip(params.scales, params.stds.tolist(), params.grids):
        coarse = (grid * std).to(device)
        fine = upsample(coarse, scale) if scale > 1 else coarse
        fine = fine[:depth, :height, :width]
        total = fine.contiguous() if total is None else total.add_(fine)
    if total is None:
        return torch.zeros(tuple(shape), dtype=torch.float32, device=device)
    return total


def apply_texture(view: torch.Tensor, texture: torch.Tensor, factor: float = 0.02) -> torch.Tensor:
    """``view * (1 + factor * texture)`` (elementwise; returns a new tensor)."""
    return view * texture.mul(factor).add_(1.0)


@dataclasses.dataclass(frozen=True)
class ViewParams:
    """Everything random about one view except the voxel noise (drawn after these)."""

    gmm: GMMParams
    texture: TextureParams
    offline: OfflineParams


def sample_view_params(num_labels: int, shape: Sequence[int], generator: torch.Generator, *,
                       means: tuple[float, float] = (25.0, 255.0), stds: tuple[float, float] = (5.0, 20.0),
                       background_zero_prob: float = 0.25, texture_scales: Sequence[int] = DEFAULT_SCALES,
                       texture_max_std: float = 5.0,
                       offline_config: OfflineConfig | None = None) -> ViewParams:
    """Draw, in order, the GMM tables, the texture and the offline-pipeline parameters."""
    gmm = sample_gmm_params(num_labels, generator, means, stds, background_zero_prob)
    texture = sample_texture_params(shape, generator, texture_scales, texture_max_std)
    return ViewParams(gmm, texture, offline_params(generator, offline_config))


def render_view(labels: torch.Tensor, generator: torch.Generator, device: torch.device | str | None = None, *,
                num_labels: int | None = None, texture_factor: float = 0.02,
                offline_config: OfflineConfig | None = None, **view_kwargs) -> torch.Tensor:
    """One synthetic view of a label map: GMM x texture, then the offline pipeline.

    Args:
        labels: (D, H, W) integer label map (values 0..K-1), any device.
        generator: CPU generator every random number comes from (parameters first, see
            :func:`sample_view_params`, then the voxel noise). Two calls on the same generator
            give the two independent views of a sample.
        device: where to compute (default: ``labels``' device).
        num_labels: K (default ``labels.max() + 1``).
        texture_factor: the multiplicative texture strength (0.02 published).
        offline_config: overrides of the offline pipeline's probabilities and ranges.
        **view_kwargs: ``means``, ``stds``, ``background_zero_prob``, ``texture_scales``,
            ``texture_max_std`` (see :func:`sample_view_params`).

    Returns:
        (D, H, W) float32 tensor in [0, 1] on ``device``.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (D, H, W), got {tuple(labels.shape)}")
    device = labels.device if device is None else torch.device(device)
    labels = labels.to(device)
    shape = tuple(labels.shape)
    k = int(labels.max()) + 1 if num_labels is None else int(num_labels)
    params = sample_view_params(k, shape, generator, offline_config=offline_config, **view_kwargs)
    view = render_gmm(labels, params.gmm, voxel_noise(shape, generator, device))
    view = apply_texture(view, render_texture(params.texture, shape, device), texture_factor)
    return apply_offline(view, params.offline)
