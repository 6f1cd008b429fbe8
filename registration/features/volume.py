"""``ckpt:PATH``: features of a 3-D network (anatomix, Dey et al. §3 and App. B.4).

The image is normalised (min-max to [0, 1] by default, as anatomix), fed to the network by
MONAI's sliding-window inference (``window``^3 windows, ``overlap`` 0.8 and Gaussian blending
with sigma 0.25 of the window by default: anatomix's settings; windows larger than the image
are zero-padded by MONAI), reduced by the optional joint PCA at the network's output
resolution, resized trilinearly to the image when the network outputs a coarser grid,
multiplied by ``scale`` and by the mask when one is given (as anatomix's masked variant), and
with ``mind=true`` placed after the 12 MIND-SSC channels (anatomix's recipe is
``mind=true,scale=0.1``: network features x 0.1 concatenated with MIND-SSC). PCA reduces only
the network channels, so the output has ``pca`` (+12 with MIND) channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from registration.features import options
from registration.features.base import normalize_intensity
from registration.features.handcrafted import mind_features
from registration.features.modules import ModuleFeatures, run_module

GAUSSIAN_SIGMA = 0.25


class CheckpointFeatures(ModuleFeatures):
    """``ckpt:PATH[,scale=1,mind=false,window=128,overlap=0.8,blend=gaussian,norm=minmax,pca=d]``."""

    name = "ckpt"
    OPTIONS = options.CKPT

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_module(self.module, x, 3, "3-D feature module")

    def network_features(self, image: torch.Tensor) -> torch.Tensor:
        """(D, H, W) float32 image on ``device`` -> (C, d, h, w) float32 network features at the
        network's output resolution (d, h, w = D, H, W for a full-resolution network)."""
        x = self.module_input.prepare(normalize_intensity(image, str(self.options["norm"]))[None, None])
        with torch.no_grad():
            out = sliding_window_inference(
                x, int(self.options["window"]), int(self.options["batch"]), self._forward,
                overlap=float(self.options["overlap"]), mode=str(self.options["blend"]),
                sigma_scale=GAUSSIAN_SIGMA, sw_device=self.device, device=self.device)
        return torch.as_tensor(out)[0]

    def _finish(self, features: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if features.shape[1:] != image.shape:
            features = F.interpolate(features[None], size=image.shape, mode="trilinear",
                                     align_corners=False)[0]
        features = features * float(self.options["scale"])
        if mask is not None:
            features = features * mask
        if self.options["mind"]:
            features = torch.cat([mind_features(image, mask), features])
        return features

    def _extract(self, fixed, moving, fixed_mask, moving_mask):
        fixed_features, moving_features = self._reduce(self.network_features(fixed),
                                                       self.network_features(moving))
        return (self._finish(fixed_features, fixed, fixed_mask),
                self._finish(moving_features, moving, moving_mask))
