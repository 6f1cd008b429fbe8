"""``slice2d:PATH``: a 2-D encoder applied slice by slice (Gu et al. §2.1).

The image is normalised (min-max by default), cut into slices along ``axis``, and only every
``every``-th slice (always including the last) is encoded, in batches of ``batch`` slices: each
grey slice is repeated to the encoder's input channels (3 for RGB foundation models; from the
checkpoint's ``in_channels`` or probed), optionally resized to ``size`` x ``size`` (as SAM-style
encoders need), and standardised with the checkpoint's ``mean``/``std``. The optional joint PCA is
fitted on the encoded feature maps of both volumes, before any upsampling (Gu et al.: PCA on the
patch tokens of the sampled slices of both volumes), which also keeps the memory of wide
encoders (256-1024 channels) at token resolution. The reduced maps are upsampled bilinearly
(align_corners=False, so token centres sit at patch centres) to the slice size, and the
skipped slices are linearly interpolated between their two encoded neighbours. The result is
multiplied by ``scale`` and, when a mask is given, by the mask (as ``ckpt``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from registration.features import options
from registration.features.base import normalize_intensity
from registration.features.modules import ModuleFeatures, run_module


def encoded_positions(length: int, every: int) -> torch.Tensor:
    """Slice indices that are encoded: 0, k, 2k, ... and always ``length - 1``; (n,) int64."""
    positions = torch.arange(0, length, every)
    if positions[-1] != length - 1:
        positions = torch.cat([positions, torch.tensor([length - 1])])
    return positions


def interpolate_slices(encoded: torch.Tensor, positions: torch.Tensor, length: int) -> torch.Tensor:
    """Linear interpolation along axis 0 between encoded slices.

    Args:
        encoded: (n, ...) float features of the slices at ``positions``.
        positions: (n,) increasing int64 indices, the first 0 and the last ``length - 1``.
        length: number of slices wanted.

    Returns:
        (length, ...) float; slice ``positions[i]`` is ``encoded[i]`` exactly.
    """
    if encoded.shape[0] == 1:
        return encoded.expand(length, *encoded.shape[1:])
    positions = positions.to(encoded.device)
    z = torch.arange(length, device=encoded.device)
    lower = (torch.searchsorted(positions, z, right=True) - 1).clamp(0, positions.numel() - 2)
    start, stop = positions[lower], positions[lower + 1]
    weight = ((z - start).float() / (stop - start).float()).view(-1, *(1,) * (encoded.ndim - 1))
    return encoded[lower] * (1 - weight) + encoded[lower + 1] * weight


class SliceFeatures(ModuleFeatures):
    """``slice2d:PATH[,every=1,axis=0,size=none,batch=16,scale=1,norm=minmax,pca=d]``."""

    name = "slice2d"
    OPTIONS = options.SLICE2D

    @property
    def axis(self) -> int:
        return int(self.options["axis"])

    def _forward(self, slices: torch.Tensor) -> torch.Tensor:
        x = self.module_input.prepare(slices)
        size = self.options["size"]
        if size is not None:
            x = F.interpolate(x, size=(int(size), int(size)), mode="bilinear", align_corners=False)
        return run_module(self.module, x, 2, "2-D feature module")

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(D, H, W) float32 image on ``device`` -> (C, n, h', w') float32 encoder maps of the n encoded
        slices along ``axis`` (see :func:`encoded_positions`)."""
        slices = normalize_intensity(image, str(self.options["norm"])).movedim(self.axis, 0)
        positions = encoded_positions(slices.shape[0], int(self.options["every"]))
        chosen = slices.index_select(0, positions.to(slices.device))[:, None]
        with torch.no_grad():
            maps = [self._forward(batch) for batch in chosen.split(int(self.options["batch"]))]
        return torch.cat(maps).transpose(0, 1)

    def assemble(self, maps: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(C, n, h', w') encoded maps -> (C, D, H, W) float32 features on ``image``'s grid."""
        length, *plane = image.movedim(self.axis, 0).shape
        planes = maps.transpose(0, 1)
        if list(planes.shape[2:]) != plane:
            planes = F.interpolate(planes, size=plane, mode="bilinear", align_corners=False)
        positions = encoded_positions(length, int(self.options["every"]))
        volume = interpolate_slices(planes, positions, length).transpose(0, 1).movedim(1, 1 + self.axis)
        volume = volume * float(self.options["scale"])
        return volume if mask is None else volume * mask

    def _extract(self, fixed, moving, fixed_mask, moving_mask):
        fixed_maps, moving_maps = self._reduce(self.encode(fixed), self.encode(moving))
        return self.assemble(fixed_maps, fixed, fixed_mask), self.assemble(moving_maps, moving, moving_mask)
