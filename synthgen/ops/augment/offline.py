"""The OFFLINE augmentation pipeline of anatomix step 2 (``datagen_utils.get_transforms``), applied
to each GMM-times-texture view at generation time.

Order, probabilities and ranges as published (MONAI conventions, Fig. 12 of Dey et al.):

1. ScaleIntensity (min-max to [0, 1]);
2. bias field, p = 0.98, degree-3 Legendre polynomial, coefficients U(0, 0.075), ``x * exp(field)``;
3. k-space spike, p = 0.2, log-intensity U(0.95, 1.1) x 2.5 x mean log|k| (MONAI default);
4. adjust contrast (gamma), p = 0.5, gamma U(0.5, 2);
5. Gaussian smoothing, p = 0.5, sigma U(0, 0.333) per axis;
6. Gibbs ringing, p = 0.5, alpha U(0, 0.333);
7. Gaussian sharpening, p = 0.25, sigma1 U(0.5, 1), sigma2 U(0.5, sigma1), alpha U(10, 30);
8. low-resolution simulation, p = 0.333, zoom U(0.5, 1), nearest-exact down, trilinear up;
9. threshold (clip negatives);
10. ScaleIntensity.

Every transform is a pure kernel of its own module here (MONAI's random transforms draw from
numpy ``RandomState``, not from our generator, and several run in numpy); parameters are drawn
on the CPU by :func:`offline_params`, always the same number of draws whatever fires, in the
order above. Deliberate deviations (each documented in its module): smoothing and sharpening
replicate the edge instead of zero padding (MONAI's zero padding makes sharpened faces ~3x
brighter than the interior, which the final min-max then turns into a dark, low-contrast
volume); the contrast adjustment divides by the exact range (MONAI adds 1e-7).

The output is float32 in [0, 1], min exactly 0 and max exactly 1 (constant volumes become 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping

import torch

from synthgen.ops.augment import (bias_field, contrast, gaussian_smooth, gibbs, kspace_spike, low_resolution,
                                  sharpen)
from synthgen.ops.augment.scale_intensity import scale_intensity
from synthgen.ops.augment.threshold import threshold_intensity


@dataclasses.dataclass(frozen=True)
class OfflineConfig:
    """Probabilities and ranges of the offline pipeline (defaults: the published ones)."""

    p_bias: float = 0.98
    bias_coeff_range: tuple[float, float] = (0.0, 0.075)
    bias_degree: int = 3
    p_spike: float = 0.2
    spike_factor_range: tuple[float, float] = (0.95, 1.1)
    p_contrast: float = 0.5
    gamma_range: tuple[float, float] = (0.5, 2.0)
    p_smooth: float = 0.5
    smooth_sigma_range: tuple[float, float] = (0.0, 0.333)
    p_gibbs: float = 0.5
    gibbs_alpha_range: tuple[float, float] = (0.0, 0.333)
    p_sharpen: float = 0.25
    sharpen_sigma1_range: tuple[float, float] = (0.5, 1.0)
    sharpen_sigma2_low: float = 0.5
    sharpen_alpha_range: tuple[float, float] = (10.0, 30.0)
    p_low_resolution: float = 0.333
    zoom_range: tuple[float, float] = (0.5, 1.0)
    padding: str = "replicate"  # "zeros" reproduces MONAI's smoothing/sharpening borders


@dataclasses.dataclass(frozen=True)
class OfflineParams:
    """Per-transform parameters of the offline pipeline (each batched, usually B = 1)."""

    bias: bias_field.BiasFieldParams
    spike: kspace_spike.KSpaceSpikeParams
    contrast: contrast.ContrastParams
    smooth: gaussian_smooth.GaussianSmoothParams
    gibbs: gibbs.GibbsParams
    sharpen: sharpen.SharpenParams
    low_resolution: low_resolution.LowResolutionParams

    @property
    def batch_size(self) -> int:
        return int(self.bias.fire.shape[0])


def offline_params(generator: torch.Generator, config: OfflineConfig | None = None,
                   batch_size: int = 1) -> OfflineParams:
    """Draw all offline-pipeline parameters on the CPU from ``generator``, transform by
    transform in pipeline order (a fixed number of draws per sample, whatever fires)."""
    c = config or OfflineConfig()
    return OfflineParams(
        bias=bias_field.sample_params(generator, batch_size, p=c.p_bias, coeff_range=c.bias_coeff_range,
                                      degree=c.bias_degree, basis="legendre"),
        spike=kspace_spike.sample_params(generator, batch_size, p=c.p_spike, factor_range=c.spike_factor_range),
        contrast=contrast.sample_params(generator, batch_size, p=c.p_contrast, gamma_range=c.gamma_range),
        smooth=gaussian_smooth.sample_params(generator, batch_size, p=c.p_smooth,
                                             sigma_range=c.smooth_sigma_range, padding=c.padding),
        gibbs=gibbs.sample_params(generator, batch_size, p=c.p_gibbs, alpha_range=c.gibbs_alpha_range),
        sharpen=sharpen.sample_params(generator, batch_size, p=c.p_sharpen, sigma1_range=c.sharpen_sigma1_range,
                                      sigma2_low=c.sharpen_sigma2_low, alpha_range=c.sharpen_alpha_range,
                                      padding=c.padding),
        low_resolution=low_resolution.sample_params(generator, batch_size, p=c.p_low_resolution,
                                                    zoom_range=c.zoom_range),
    )


STEPS = ("scale", "bias", "spike", "contrast", "smooth", "gibbs", "sharpen", "low_resolution",
         "threshold", "rescale")


def apply_offline(view: torch.Tensor, params: OfflineParams,
                  timings: MutableMapping[str, float] | None = None) -> torch.Tensor:
    """Run the offline pipeline on one view or a batch of views.

    Args:
        view: (D, H, W) float volume (params with B = 1), or (B, C, D, H, W) with B matching the
            params; any device. Statistics (min/max, spectra) are per sample.
        params: from :func:`offline_params`.
        timings: if given, CPU seconds (``time.process_time``) per step are added to it under
            the names in :data:`STEPS` (for benchmarks; synchronises nothing on GPU).

    Returns:
        float32 tensor of ``view``'s shape in [0, 1].
    """
    import time

    steps = (
        ("scale", scale_intensity),
        ("bias", lambda x: bias_field.apply(x, params.bias)),
        ("spike", lambda x: kspace_spike.apply(x, params.spike)),
        ("contrast", lambda x: contrast.apply(x, params.contrast)),
        ("smooth", lambda x: gaussian_smooth.apply(x, params.smooth)),
        ("gibbs", lambda x: gibbs.apply(x, params.gibbs)),
        ("sharpen", lambda x: sharpen.apply(x, params.sharpen)),
        ("low_resolution", lambda x: low_resolution.apply(x, params.low_resolution)),
        ("threshold", threshold_intensity),
        ("rescale", scale_intensity),
    )
    squeeze = view.dim() == 3
    x = view.to(torch.float32)
    if squeeze:
        x = x[None, None]
    for name, step in steps:
        start = time.process_time() if timings is not None else 0.0
        x = step(x)
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.process_time() - start
    return x[0, 0] if squeeze else x
