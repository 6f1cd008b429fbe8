"""The extractor interface, input checks and intensity normalisation shared by all extractors."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import ClassVar

import torch

from registration.features.pca import joint_pca
from registration.features.spec import Option
from synthgen.errors import SynthgenError

ROBUST_PERCENTILES = (0.5, 99.5)


def _check_volume(volume: torch.Tensor, what: str, device: torch.device) -> torch.Tensor:
    """A (D, H, W) float32 copy on ``device``; a wrong shape or NaN/inf raises SynthgenError."""
    if not isinstance(volume, torch.Tensor) or volume.ndim != 3:
        shape = tuple(volume.shape) if isinstance(volume, torch.Tensor) else type(volume).__name__
        raise SynthgenError(f"the {what} must be a (D, H, W) tensor, got {shape}; pass one volume "
                            f"without batch or channel axes")
    if volume.is_complex() or volume.dtype == torch.bool:
        raise SynthgenError(f"the {what} has dtype {volume.dtype}; pass a real-valued image")
    volume = volume.to(device=device, dtype=torch.float32)
    if not torch.isfinite(volume).all():
        raise SynthgenError(f"the {what} contains NaN or infinite values; replace them (e.g. with "
                            f"torch.nan_to_num) or crop them away before extracting features")
    return volume


def _check_mask(mask: torch.Tensor | None, shape: torch.Size, what: str,
                device: torch.device) -> torch.Tensor | None:
    """A (D, H, W) float32 0/1 mask (nonzero is inside) on ``device``, or None."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.shape != shape:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise SynthgenError(f"the {what} has shape {got} but its image is {tuple(shape)}; "
                            f"pass a mask on the image's grid")
    inside = mask.to(device) != 0
    if not inside.any():
        raise SynthgenError(f"the {what} is empty; pass a mask with foreground voxels or no mask")
    return inside.float()


def _percentile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """Nearest-rank percentile ``q`` of a 1-D tensor (exact, via kthvalue)."""
    rank = round(q / 100.0 * (flat.numel() - 1)) + 1
    return flat.kthvalue(rank).values


def normalize_intensity(volume: torch.Tensor, mode: str) -> torch.Tensor:
    """Normalise a (D, H, W) float32 volume; returns float32 of the same shape.

    ``minmax``: (x - min) / (max - min) to [0, 1] (anatomix's input normalisation).
    ``robust``: clipped to the 0.5th-99.5th percentiles, then mapped to [0, 1] (insensitive to a
    few outlier voxels such as metal in CT). ``none``: unchanged. A constant volume maps to 0.
    """
    if mode == "none":
        return volume
    if mode == "robust":
        flat = volume.reshape(-1)
        low, high = (_percentile(flat, q) for q in ROBUST_PERCENTILES)
        if high <= low:
            low, high = flat.min(), flat.max()
        volume = volume.clamp(low, high)
    else:
        low, high = volume.min(), volume.max()
    span = high - low
    if span <= 0:
        return torch.zeros_like(volume)
    return (volume - low) / span


class FeatureExtractor(abc.ABC):
    """Turns a fixed/moving pair into feature maps for registration.

    Call ``extractor(fixed, moving, fixed_mask=None, moving_mask=None)`` with (D, H, W) real
    tensors (fixed and moving may differ in shape) and optional (D, H, W) masks (nonzero inside)
    on the images' grids; get ``(fixed_features, moving_features)``, each (C, D, H, W) float32 on
    ``device``, same C. The pair is passed together because joint PCA fits one basis on both.

    Features are computed under ``torch.no_grad`` (not ``inference_mode``: the results feed
    ConvexAdam's Adam stage, whose autograd graph cannot hold inference tensors).

    Subclasses set ``name`` and ``OPTIONS`` and implement :meth:`_extract`, applying
    :meth:`_reduce` (the optional ``pca``) where their features are still at their native size.
    """

    name: ClassVar[str]
    OPTIONS: ClassVar[Mapping[str, Option]]

    def __init__(self, options: Mapping[str, object], device: torch.device | str = "cpu") -> None:
        self.options = dict(options)
        self.device = torch.device(device)

    def __repr__(self) -> str:
        given = ",".join(f"{key}={value}" for key, value in self.options.items())
        return f"{type(self).__name__}({given}, device={self.device})"

    def __call__(self, fixed: torch.Tensor, moving: torch.Tensor, *,
                 fixed_mask: torch.Tensor | None = None,
                 moving_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of both images: ((C, *fixed.shape), (C, *moving.shape)) float32 on ``device``."""
        fixed = _check_volume(fixed, "fixed image", self.device)
        moving = _check_volume(moving, "moving image", self.device)
        fixed_mask = _check_mask(fixed_mask, fixed.shape, "fixed mask", self.device)
        moving_mask = _check_mask(moving_mask, moving.shape, "moving mask", self.device)
        with torch.no_grad():
            fixed_features, moving_features = self._extract(fixed, moving, fixed_mask, moving_mask)
        return fixed_features.float().contiguous(), moving_features.float().contiguous()

    @abc.abstractmethod
    def _extract(self, fixed: torch.Tensor, moving: torch.Tensor, fixed_mask: torch.Tensor | None,
                 moving_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked (D, H, W) float32 images and 0/1 float32 masks (or None) on ``device`` ->
        ((C, D, H, W), (C, D', H', W')) features."""

    def _reduce(self, fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint PCA of (C, ...) features to ``pca`` channels, or the features unchanged."""
        components = self.options.get("pca")
        if components is None:
            return fixed, moving
        return joint_pca(fixed, moving, int(components))
