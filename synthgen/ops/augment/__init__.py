"""Augmentation transforms of the label-ensemble engine (Dey et al., Fig. 12), one per module.

Each random transform module has a frozen ``...Params`` dataclass of CPU tensors (first axis =
batch), ``sample_params(generator, batch_size, ...)`` drawing them on the CPU from a
``torch.Generator``, a pure kernel, and ``apply(volume, params)`` for (B, C, D, H, W) batches or
(D, H, W) volumes on any device (see :mod:`._common` for the shared conventions).

Offline (generation time, MONAI semantics): :mod:`.scale_intensity`, :mod:`.bias_field`,
:mod:`.kspace_spike`, :mod:`.contrast`, :mod:`.gaussian_smooth`, :mod:`.gibbs`, :mod:`.sharpen`,
:mod:`.low_resolution`, :mod:`.threshold`, composed by :mod:`.offline`.

Online (consumer side, TorchIO semantics): :mod:`.normalize`, :mod:`.flip`, :mod:`.affine`,
:mod:`.blur`, :mod:`.noise`, :mod:`.bias_field` (monomial variant), :mod:`.gamma`,
:mod:`.motion`, composed by :mod:`.online`.
"""

from synthgen.ops.augment import (affine, bias_field, blur, contrast, flip, gamma, gaussian_smooth, gibbs,
                                  kspace_spike, low_resolution, motion, noise, normalize, scale_intensity, sharpen,
                                  threshold)
from synthgen.ops.augment.offline import OfflineConfig, OfflineParams, apply_offline, offline_params
from synthgen.ops.augment.online import OnlineAugment, OnlineAugmentConfig, OnlineParams

__all__ = [
    "OfflineConfig", "OfflineParams", "OnlineAugment", "OnlineAugmentConfig", "OnlineParams", "affine",
    "apply_offline", "bias_field", "blur", "contrast", "flip", "gamma", "gaussian_smooth", "gibbs",
    "kspace_spike", "low_resolution", "motion", "noise", "normalize", "offline_params", "scale_intensity",
    "sharpen", "threshold",
]
