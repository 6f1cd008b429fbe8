"""Registering a pair with a trained registration network (``synthgen-bench register --method
net:CKPT``): each image min-max normalised to [0, 1] (as the networks' training data), both
zero-padded at the end of each axis to a multiple of the network's input (``input_scale`` x
the encoder's stride), average-pooled by ``input_scale``, the predicted flow upsampled back
(magnitude scaled alike) and cropped to the pair's grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _unit(image: torch.Tensor) -> torch.Tensor:
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else torch.zeros_like(image)


def predict_displacement(network: nn.Module, fixed: torch.Tensor, moving: torch.Tensor,
                         input_scale: int = 1) -> torch.Tensor:
    """The network's displacement for one pair.

    Args:
        network: a module with ``displacement(moving, fixed)`` and ``stride`` (the randreg and
            fine-tuned networks), on the images' device, in eval mode.
        fixed, moving: (D, H, W) float images on one grid.
        input_scale: the pooling between the images and the network input.

    Returns:
        (3, D, H, W) float32 displacement in voxels (``warped(x) = moving(x + u(x))``).
    """
    shape = fixed.shape
    multiple = input_scale * network.stride
    pad = [(-n) % multiple for n in shape]
    pair = [F.pad(_unit(x.float())[None, None], (0, pad[2], 0, pad[1], 0, pad[0])) for x in (moving, fixed)]
    if input_scale > 1:
        pair = [F.avg_pool3d(x, input_scale) for x in pair]
    with torch.no_grad():
        flow = network.displacement(*pair).float()
        if input_scale > 1:
            flow = F.interpolate(flow, scale_factor=input_scale, mode="trilinear", align_corners=False) * input_scale
    return flow[0, :, :shape[0], :shape[1], :shape[2]].contiguous()
