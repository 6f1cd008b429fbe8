"""The ONLINE augmentation of the anatomix pretraining loader (``H5SupCLDataset``, TorchIO), as
one batch transform that runs on the consumer's device after collation.

Per batch of samples ``{"view1", "view2": (B, 1, D, H, W) float, "labels": (B, 1, D, H, W) int}``:

1. each view normalised by its min and 99.99th percentile (:mod:`.normalize`, no clipping);
2. shared by both views and the labels: ``RandomFlip(p=0.9, axes=(0, 1, 2))`` (:mod:`.flip`)
   then ``RandomAffine(p=0.5, scales=0.4, degrees=45)`` (:mod:`.affine`; trilinear for views,
   nearest for labels);
3. per view, independently (``apply_same_inten_augment=False`` as in ``pretrain_anatomix.py``):
   ``RandomBlur(p=0.33)`` std U(0, 2), ``RandomNoise(p=0.33)`` std U(0, 0.25),
   ``RandomBiasField(p=0.5)`` coefficients U(-0.5, 0.5) order 3, ``RandomGamma(p=0.5,
   log_gamma=(-0.4, 0.4))``, ``RandomMotion(p=0.33)`` 10 degrees, 10 voxels, 2 transforms.

(The loader's final random crop to 128 is a no-op at 128^3 and is not part of this transform.)

Parameters are drawn per sample on the CPU from the caller's generator by
:meth:`OnlineAugment.sample_params` (order: flip, affine, view 1's five transforms, view 2's),
and applied batched on the batch's device by :meth:`OnlineAugment.apply`; only the samples a
transform fires on are computed. Deviations from TorchIO are listed in each module (motion
rotates about the volume centre; one gamma per sample; stds and translations in voxels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, MutableMapping
from typing import Any

import torch

from synthgen.ops.augment import affine, bias_field, blur, flip, gamma, motion, noise
from synthgen.ops.augment.normalize import percentile_normalize

VIEW_KEYS = ("view1", "view2")
LABEL_KEY = "labels"


@dataclasses.dataclass(frozen=True)
class OnlineAugmentConfig:
    """Probabilities and ranges of the online pipeline (defaults: the published ones)."""

    percentile: float = 99.99
    p_flip: float = 0.9
    flip_axes: tuple[int, ...] = (0, 1, 2)
    flip_probability: float = 0.5
    p_affine: float = 0.5
    affine_scales: float | tuple[float, float] = 0.4
    affine_degrees: float | tuple[float, float] = 45.0
    affine_translation: float | tuple[float, float] = 0.0
    p_blur: float = 0.33
    blur_std: float | tuple[float, float] = (0.0, 2.0)
    p_noise: float = 0.33
    noise_mean: float | tuple[float, float] = 0.0
    noise_std: float | tuple[float, float] = (0.0, 0.25)
    p_bias: float = 0.5
    bias_coefficients: float = 0.5
    bias_order: int = 3
    p_gamma: float = 0.5
    log_gamma: float | tuple[float, float] = (-0.4, 0.4)
    p_motion: float = 0.33
    motion_degrees: float | tuple[float, float] = 10.0
    motion_translation: float | tuple[float, float] = 10.0
    motion_transforms: int = 2


@dataclasses.dataclass(frozen=True)
class ViewAugmentParams:
    """The per-view intensity transforms' parameters (batched)."""

    blur: blur.BlurParams
    noise: noise.NoiseParams
    bias: bias_field.BiasFieldParams
    gamma: gamma.GammaParams
    motion: motion.MotionParams


@dataclasses.dataclass(frozen=True)
class OnlineParams:
    """All parameters of one batch: shared spatial ones and one set per view."""

    flip: flip.FlipParams
    affine: affine.AffineParams
    views: tuple[ViewAugmentParams, ...]

    @property
    def batch_size(self) -> int:
        return int(self.flip.fire.shape[0])


class OnlineAugment:
    """Batch transform ``augment(batch, generator) -> batch`` (see the module docstring).

    Args:
        config: an :class:`OnlineAugmentConfig`, a mapping of its fields, or None (defaults).
    """

    def __init__(self, config: OnlineAugmentConfig | Mapping[str, Any] | None = None):
        if config is None:
            config = OnlineAugmentConfig()
        elif isinstance(config, Mapping):
            config = OnlineAugmentConfig(**config)
        self.config = config

    def sample_params(self, batch_size: int, generator: torch.Generator) -> OnlineParams:
        """Draw every parameter of a batch on the CPU from ``generator``."""
        c = self.config
        flips = flip.sample_params(generator, batch_size, p=c.p_flip, axes=c.flip_axes,
                                   flip_probability=c.flip_probability)
        affines = affine.sample_params(generator, batch_size, p=c.p_affine, scales=c.affine_scales,
                                       degrees=c.affine_degrees, translation=c.affine_translation)
        views = []
        for _ in VIEW_KEYS:
            views.append(ViewAugmentParams(
                blur=blur.sample_params(generator, batch_size, p=c.p_blur, std=c.blur_std),
                noise=noise.sample_params(generator, batch_size, p=c.p_noise, mean=c.noise_mean, std=c.noise_std),
                bias=bias_field.sample_params(generator, batch_size, p=c.p_bias,
                                              coeff_range=(-c.bias_coefficients, c.bias_coefficients),
                                              degree=c.bias_order, basis="monomial"),
                gamma=gamma.sample_params(generator, batch_size, p=c.p_gamma, log_gamma=c.log_gamma),
                motion=motion.sample_params(generator, batch_size, p=c.p_motion, degrees=c.motion_degrees,
                                            translation=c.motion_translation, num_transforms=c.motion_transforms),
            ))
        return OnlineParams(flips, affines, tuple(views))

    def apply(self, batch: Mapping[str, torch.Tensor], params: OnlineParams,
              timings: MutableMapping[str, float] | None = None) -> dict[str, torch.Tensor]:
        """Apply ``params`` to ``batch`` on its device.

        Args:
            batch: ``view1``, ``view2`` (B, 1, D, H, W) float (any float dtype) and ``labels``
                (B, 1, D, H, W) integer, on one device; other keys are passed through.
            params: from :meth:`sample_params` with the same B.
            timings: if given, CPU seconds per step are accumulated into it (benchmarks).

        Returns:
            A new dict: views float32 (B, 1, D, H, W), labels of their input dtype, with values
            from the input label set plus 0 (affine padding).
        """
        import time

        def timed(name, fn, *args):
            start = time.process_time()
            out = fn(*args)
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + time.process_time() - start
            return out

        out = dict(batch)
        views = [timed("normalize", percentile_normalize, batch[k], self.config.percentile) for k in VIEW_KEYS]
        labels = batch[LABEL_KEY]
        if labels.dtype.is_floating_point:
            raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
        if views[0].shape != views[1].shape or views[0].shape[0] != labels.shape[0] \
                or views[0].shape[2:] != labels.shape[2:]:
            raise ValueError(f"inconsistent batch shapes: {[tuple(v.shape) for v in views]}, {tuple(labels.shape)}")
        channels = views[0].shape[1]
        stacked = torch.cat(views, 1)  # both views share the spatial transforms: warp them together
        stacked = timed("flip", flip.apply, stacked, params.flip)
        labels = timed("flip", flip.apply, labels, params.flip)
        stacked, labels = timed("affine", affine.apply_shared, [stacked, labels], params.affine)
        for index, (key, view_params) in enumerate(zip(VIEW_KEYS, params.views)):
            view = stacked[:, index * channels:(index + 1) * channels]
            view = timed("blur", blur.apply, view, view_params.blur)
            view = timed("noise", noise.apply, view, view_params.noise)
            view = timed("bias", bias_field.apply, view, view_params.bias)
            view = timed("gamma", gamma.apply, view, view_params.gamma)
            view = timed("motion", motion.apply, view, view_params.motion)
            out[key] = view.to(torch.float32).contiguous()
        out[LABEL_KEY] = labels
        return out

    def __call__(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw per-sample parameters from ``generator`` (CPU) and apply them to ``batch``."""
        return self.apply(batch, self.sample_params(int(batch[LABEL_KEY].shape[0]), generator))
