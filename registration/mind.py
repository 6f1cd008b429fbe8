"""MIND-SSC descriptors (Heinrich et al., MICCAI 2013), as computed by ConvexAdam.

Numerically equivalent to ``convexAdam.convex_adam_utils.MINDSSC`` (convexadam 0.2.0): the
twelve self-similarity pairs of the six-neighbourhood at squared distance 2, in the reference's
channel order ``[6, 8, 1, 11, 2, 10, 0, 7, 9, 4, 5, 3]``; replication padding for the shifts
(by ``dilation``) and for the patch box filter (by ``radius``); ``exp(-(ssd - min_c ssd) / v)``
with ``v`` the channel mean clamped to [0.001, 1000] times its spatial mean.

The reference builds the shifts as 3x3x3 one-hot ``conv3d`` kernels; here they are slice
differences of the padded image and the box filter is separable, which changes only the
summation order (float32 differences ~1e-7). On the CPU the channels, then slabs of slices, are
spread over worker threads (:mod:`registration._workers`); the result does not depend on the
thread count. The descriptors are computed without autograd.

Deviations from the reference:
- Batched input: the clamp bounds of the variance use each sample's own spatial mean (the
  reference takes the mean over the whole batch), so a batch gives the same descriptors as
  its samples one by one.
- A constant image (zero variance everywhere) gives descriptors of 1 instead of the
  reference's NaN (0/0).
- :func:`fill_outside_mask` indexes the 2x-downsampled grid by its real shape and crops the
  upsampled fill to the image's shape; the reference's flat-index arithmetic and ``x2``
  upsampling are correct only for even sizes (where both agree exactly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from registration._workers import Workers, cpu_workers, parts

# The twelve (shift a, shift b) pairs, in output channel order, in units of the dilation;
# channel k holds the patch SSD of image(x + d * a) - image(x + d * b).
_PAIRS: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((1, 0, 0), (0, -1, 0)),
    ((0, 1, 0), (-1, 0, 0)),
    ((0, -1, 0), (-1, 0, 0)),
    ((0, 1, 0), (1, 0, 0)),
    ((0, -1, 0), (0, 0, -1)),
    ((0, 1, 0), (0, 0, 1)),
    ((0, 0, -1), (-1, 0, 0)),
    ((1, 0, 0), (0, 0, 1)),
    ((0, 1, 0), (0, 0, -1)),
    ((0, 0, 1), (0, -1, 0)),
    ((1, 0, 0), (0, 0, -1)),
    ((0, 0, 1), (-1, 0, 0)),
)
CHANNELS = len(_PAIRS)
SLAB_SLICES = 8


def _float(image: torch.Tensor) -> torch.Tensor:
    """float64 stays float64; every other dtype is computed in float32."""
    return image if image.dtype == torch.float64 else image.float()


def _box_sum_replicate(source: torch.Tensor, target: torch.Tensor, dim: int, radius: int) -> None:
    """``target`` = sum of ``source`` over the 2r+1 neighbours along ``dim``, with replication
    padding (one separable pass of the reference's ``avg_pool3d(ReplicationPad3d(r)(x))``).

    Args:
        source: float tensor.
        target: preallocated tensor of ``source``'s shape (not aliasing it); overwritten.
        dim: the axis to sum along.
        radius: r >= 0.
    """
    n = source.shape[dim]
    if radius == 0:
        target.copy_(source)
    for shift in range(1, radius + 1):
        inner, edge = max(n - shift, 0), min(shift, n)
        if shift == 1:  # source + its lower neighbour, written at once (no copy first)
            torch.add(source.narrow(dim, 1, inner), source.narrow(dim, 0, inner),
                      out=target.narrow(dim, 1, inner))
            torch.add(source.narrow(dim, 0, 1), source.narrow(dim, 0, 1), out=target.narrow(dim, 0, 1))
        else:
            target.narrow(dim, edge, inner).add_(source.narrow(dim, 0, inner))
            target.narrow(dim, 0, edge).add_(source.narrow(dim, 0, 1))
        target.narrow(dim, 0, inner).add_(source.narrow(dim, edge, inner))
        target.narrow(dim, n - edge, edge).add_(source.narrow(dim, n - 1, 1))


def mind_ssc(image: torch.Tensor, radius: int = 1, dilation: int = 2,
             mask: torch.Tensor | None = None) -> torch.Tensor:
    """MIND-SSC descriptors of a volume (12 channels, values in (0, 1]).

    Args:
        image: (D, H, W) or (B, 1, D, H, W) intensity volume, any real dtype.
        radius: patch radius of the self-similarity SSD (reference ``mind_r``, default 1).
        dilation: distance of the six-neighbourhood from the centre voxel (``mind_d``, 2).
        mask: optional (D, H, W) or (B, 1, D, H, W) foreground mask, same shape as ``image``;
            intensities outside it are first replaced by :func:`fill_outside_mask` (the
            reference's ``use_mask``).

    Returns:
        (12, D, H, W) for a 3-D input, (B, 12, D, H, W) for a 5-D input; float64 for float64
        input, float32 otherwise; on ``image``'s device.
    """
    if image.dim() not in (3, 5) or (image.dim() == 5 and image.shape[1] != 1):
        raise ValueError(f"image must be (D, H, W) or (B, 1, D, H, W), got {tuple(image.shape)}")
    if radius < 0 or dilation < 1:
        raise ValueError(f"need radius >= 0 and dilation >= 1, got {radius}, {dilation}")
    x = _float(image.detach())
    if mask is not None:
        if mask.shape != image.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != image shape {tuple(image.shape)}")
        if x.dim() == 3:
            x = fill_outside_mask(x, mask)
        else:
            x = torch.stack([fill_outside_mask(x[b, 0], mask[b, 0]) for b in range(x.shape[0])])
            x = x.unsqueeze(1)
    batched = x.dim() == 5
    if not batched:
        x = x[None, None]
    with torch.no_grad(), cpu_workers(x.device) as workers:
        mind = _descriptors(x, radius, dilation, workers)
    return mind if batched else mind[0]


def _descriptors(x: torch.Tensor, radius: int, dilation: int, workers: Workers) -> torch.Tensor:
    """MIND-SSC of a (B, 1, D, H, W) float volume: channels, then slabs of ``SLAB_SLICES``
    slices, spread over the workers (the result does not depend on their number)."""
    batch, _, depth, height, width = x.shape
    padded = F.pad(x, (dilation,) * 6, mode="replicate")[:, 0]

    def shifted(offset: tuple[int, int, int]) -> torch.Tensor:
        start = [dilation + dilation * o for o in offset]
        return padded[:, start[0]:start[0] + depth, start[1]:start[1] + height,
                      start[2]:start[2] + width]

    ssd = torch.empty((batch, CHANNELS, depth, height, width), dtype=x.dtype, device=x.device)

    def patch_ssd(worker: int) -> None:
        # Two scratch volumes reused for the worker's channels: fresh large allocations cost
        # more than the arithmetic on the CPU (page faults).
        first, second = torch.empty((2, batch, depth, height, width), dtype=x.dtype, device=x.device)
        for channel in range(worker, CHANNELS, workers.count):
            a, b = _PAIRS[channel]
            torch.sub(shifted(a), shifted(b), out=first).square_()
            _box_sum_replicate(first, second, 1, radius)
            _box_sum_replicate(second, first, 2, radius)
            _box_sum_replicate(first, ssd[:, channel], 3, radius)

    workers.map(patch_ssd, range(workers.count))
    slabs = parts(depth, -(-depth // SLAB_SLICES))
    variance = torch.empty((batch, 1, depth, height, width), dtype=x.dtype, device=x.device)

    def centre(part: slice) -> None:
        block = ssd[:, :, part]
        block.div_((2 * radius + 1) ** 3)
        block -= block.amin(dim=1, keepdim=True)
        torch.mean(block, dim=1, keepdim=True, out=variance[:, :, part])

    workers.map(centre, slabs)
    level = variance.mean(dim=(2, 3, 4), keepdim=True)

    def normalise(part: slice) -> None:
        spread = torch.clamp(variance[:, :, part], min=level * 0.001, max=level * 1000)
        spread.clamp_(min=torch.finfo(spread.dtype).tiny).neg_()
        ssd[:, :, part].div_(spread).exp_()  # x / -s == -(x / s) exactly

    workers.map(normalise, slabs)
    return ssd


def fill_outside_mask(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace intensities outside a mask by the nearest mask voxel's intensity (the reference's
    ``use_mask`` preprocessing before MIND).

    The mask (``mask != 0``) is eroded as the reference does (3x3x3 mean with replication
    padding > 0.9; the reference averages the raw values, the same for a 0/1 mask).
    Outside it, the value is that of the nearest eroded-mask voxel on the 2x-downsampled grid
    (``scipy.ndimage.distance_transform_edt`` with indices, on the CPU), upsampled x2
    trilinearly (``align_corners=False``); inside it, the original intensity is kept.

    Args:
        image: (D, H, W) float volume.
        mask: (D, H, W) mask (bool or numeric; nonzero = foreground) on any device.

    Returns:
        (D, H, W) tensor; float64 for float64 ``image``, float32 otherwise; ``image``'s device.

    Raises:
        ValueError: shapes differ, or the eroded mask has no voxel on the downsampled grid.
    """
    if image.dim() != 3 or mask.shape != image.shape:
        raise ValueError(f"image and mask must both be (D, H, W), got {tuple(image.shape)} "
                         f"and {tuple(mask.shape)}")
    x = _float(image)
    foreground = (mask != 0).to(device=x.device, dtype=x.dtype)  # a label map's ids are not weights
    weights = F.pad(foreground[None, None], (1,) * 6, mode="replicate")
    inside = F.avg_pool3d(weights, 3, stride=1)[0, 0] > 0.9
    inside_coarse = inside[::2, ::2, ::2]
    if not bool(inside_coarse.any()):
        raise ValueError("the eroded mask has no voxel on the 2x-downsampled grid")
    _, nearest = distance_transform_edt(~inside_coarse.cpu().numpy(), return_indices=True)
    nearest = torch.from_numpy(nearest).to(x.device)
    coarse = x[::2, ::2, ::2][nearest[0], nearest[1], nearest[2]]
    fill = F.interpolate(coarse[None, None], scale_factor=2, mode="trilinear", align_corners=False)
    fill = fill[0, 0, :x.shape[0], :x.shape[1], :x.shape[2]]
    return torch.where(inside, x, fill)
