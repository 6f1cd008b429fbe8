"""Hand-crafted extractors: ``mind`` (MIND-SSC) and ``intensity`` (the normalised image)."""

from __future__ import annotations

import torch

from registration.features import options
from registration.features.base import FeatureExtractor, normalize_intensity
from registration.mind import mind_ssc
from synthgen.errors import SynthgenError


def mind_features(image: torch.Tensor, mask: torch.Tensor | None, radius: int = 1,
                  dilation: int = 2) -> torch.Tensor:
    """MIND-SSC of a (D, H, W) float32 image: (12, D, H, W) float32.

    With a mask, the image outside it is first filled from the inside (``fill_outside_mask``),
    as the ConvexAdam reference does with ``use_mask``.

    Raises:
        SynthgenError: the mask is too small to fill from (no voxel survives its erosion on the
            2x-downsampled grid).
    """
    try:
        return mind_ssc(image, radius=radius, dilation=dilation, mask=mask)
    except ValueError as exc:
        raise SynthgenError(f"MIND-SSC with a mask failed ({exc}); pass a larger mask or none") from None


class MindFeatures(FeatureExtractor):
    """``mind[,radius=1,dilation=2]``: MIND-SSC of each image, 12 channels (ConvexAdam's
    defaults radius 1, dilation 2)."""

    name = "mind"
    OPTIONS = options.MIND

    def _extract(self, fixed, moving, fixed_mask, moving_mask):
        radius, dilation = int(self.options["radius"]), int(self.options["dilation"])
        return self._reduce(mind_features(fixed, fixed_mask, radius, dilation),
                            mind_features(moving, moving_mask, radius, dilation))


class IntensityFeatures(FeatureExtractor):
    """``intensity[,norm=robust]``: the image itself as one channel, normalised per image
    (``robust`` by default: clipped to its 0.5th-99.5th percentiles and mapped to [0, 1]).
    With masks, the normalised image is set to 0 outside its mask."""

    name = "intensity"
    OPTIONS = options.INTENSITY

    def _features(self, image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        image = normalize_intensity(image, str(self.options["norm"]))
        return (image if mask is None else image * mask)[None]

    def _extract(self, fixed, moving, fixed_mask, moving_mask):
        return self._reduce(self._features(fixed, fixed_mask), self._features(moving, moving_mask))
