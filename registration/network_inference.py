"""Registering a pair with a trained registration network (``synthgen-bench register --method
net:CKPT``): each image min-max normalised to [0, 1] (as the networks' training data), both
zero-padded at the end of each axis to a multiple of the network's input (``input_scale`` x
the encoder's stride), average-pooled by ``input_scale``, the predicted flow upsampled back
(magnitude scaled alike) and cropped to the pair's grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from registration.datasets import RegistrationPair
from registration.metrics import dice, label_mean
from registration.warp import warp_labels
from synthgen.ops.svf import upsample_flow


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
        flow = upsample_flow(network.displacement(*pair).float(), input_scale)
    return flow[0, :, :shape[0], :shape[1], :shape[2]].contiguous()


def mean_pair_dice(network: nn.Module, pairs: Sequence[RegistrationPair], input_scale: int,
                   device: torch.device | str) -> float:
    """The mean over ``pairs`` (loaded, with labels) of each pair's Learn2Reg mean Dice after
    :func:`predict_displacement` (labels warped by nearest neighbour)."""
    scores = []
    for pair in pairs:
        field = predict_displacement(network, pair.fixed.to(device), pair.moving.to(device), input_scale)
        warped = warp_labels(pair.moving_labels.to(device), field)
        scores.append(label_mean(dice(pair.fixed_labels.cpu().numpy(), warped.cpu().numpy(), pair.label_ids,
                                      moving_labels=pair.moving_labels.cpu().numpy())))
    return float(sum(scores) / len(scores))
