"""Differentiable registration objectives for training networks (random-image pretraining,
fine-tuning): local NCC (Gaussian and box windows), the diffusion regulariser and a soft Dice,
as MIR (Chen et al.'s library) defines them, so the published loss weights mean the same here.

Volumes are (B, C, D, H, W) float tensors; displacements (B, 3, D, H, W) in voxels (see
:mod:`registration.warp`).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

NCC_EPS = 1e-5


@functools.lru_cache(maxsize=8)
def _gaussian_line(size: int, sigma: float) -> torch.Tensor:
    """The normalised 1-D Gaussian window (size,) float32 on the CPU."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    line = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (line / line.sum()).float()


def gaussian_smooth(x: torch.Tensor, window: int, sigma: float) -> torch.Tensor:
    """``x`` (B, 1, D, H, W) convolved with the normalised 3-D Gaussian window of ``window``^3
    voxels, zero-padded to the same size: three 1-D passes, the same function as one 3-D
    convolution with the outer-product kernel (to float rounding) at 3 x ``window`` instead of
    ``window``^3 multiplications per voxel."""
    line = _gaussian_line(int(window), float(sigma)).to(x.device, x.dtype)
    pad = window // 2
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = window
        padding = [0, 0, 0]
        padding[axis] = pad
        x = F.conv3d(x, line.view(shape), padding=tuple(padding))
    return x


def local_ncc_gauss(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9, sigma: float = 2.0) -> torch.Tensor:
    """``-mean(cc)`` of the squared local normalised cross-correlation under a Gaussian window
    (MIR's ``NCC_gauss``: zero-padded smoothing, ``cc = cov^2 / (var_f var_w + 1e-5)``).

    Args:
        fixed, warped: (B, 1, D, H, W) float volumes.
        window: the window's size (odd).
        sigma: the Gaussian's standard deviation in voxels.

    Returns:
        A scalar in [-1, 0]; -1 where the images are locally affine in each other everywhere.
    """
    return _squared_ncc(fixed, warped, lambda x: gaussian_smooth(x, window, sigma), NCC_EPS)


def local_ncc_box(fixed: torch.Tensor, warped: torch.Tensor, window: int = 9) -> torch.Tensor:
    """``-mean(cc)`` of voxelmorph's squared local NCC under a ``window``^3 box (MIR's
    ``NCC_vxm``): voxelmorph computes windowed *sums*, so its 1e-5 is 1e-5 / ``window``^6 in
    terms of the local means and variances used here. Shapes and range as :func:`local_ncc_gauss`."""
    pad = window // 2

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(x, window, stride=1, padding=pad, count_include_pad=True)

    return _squared_ncc(fixed, warped, box, NCC_EPS / float(window) ** 6)


def _squared_ncc(fixed: torch.Tensor, warped: torch.Tensor, smooth, eps: float) -> torch.Tensor:
    """``-mean(cov^2 / (var_f var_w + eps))`` with local moments from ``smooth`` (a windowed mean),
    in float32 also under autocast (``E[x^2] - E[x]^2`` cancels catastrophically in half precision)."""
    with torch.autocast(fixed.device.type, enabled=False):
        fixed, warped = fixed.float(), warped.float()
        mean_f, mean_w = smooth(fixed), smooth(warped)
        var_f = smooth(fixed * fixed) - mean_f ** 2
        var_w = smooth(warped * warped) - mean_w ** 2
        cov = smooth(fixed * warped) - mean_f * mean_w
        return -torch.mean(cov * cov / (var_f * var_w + eps))


def diffusion(displacement: torch.Tensor) -> torch.Tensor:
    """The mean squared forward difference of ``displacement`` (B, 3, D, H, W) along each axis,
    averaged over the three axes (MIR's ``Grad3d(penalty="l2")``)."""
    terms = [torch.diff(displacement, dim=axis).pow(2).mean() for axis in (2, 3, 4)]
    return (terms[0] + terms[1] + terms[2]) / 3


def soft_dice(fixed_onehot: torch.Tensor, warped_onehot: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``1 - mean over channels and batch of 2 |A B| / (|A| + |B| + eps)`` of (B, K, D, H, W)
    soft label maps, one channel per label, every channel counted (MIR's ``DiceLoss``; drop a
    background channel before the call to leave it out)."""
    dims = (2, 3, 4)
    overlap = (fixed_onehot * warped_onehot).sum(dims)
    total = fixed_onehot.sum(dims) + warped_onehot.sum(dims)
    return 1 - torch.mean(2 * overlap / (total + eps))
