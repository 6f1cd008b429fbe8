"""MRI motion artefact, TorchIO ``RandomMotion(p=0.33)`` (degrees 10, translation 10, 2 transforms;
Shaw et al. 2019), anatomix loader.

TorchIO: draw T = 2 rigid motions (angles U(-10, 10) degrees and translations U(-10, 10) mm per
axis) and times ``t_k = (k + 1) / (T + 1) + U(-0.3, 0.3) / (T + 1)``; resample the image under
each motion (linear, padded with the image minimum); take the (fftshift-ed) spectra of the
original and the moved copies; swap the original into the k-space segment that contains the
centre; fill the last k-space axis segment by segment (boundaries ``int(W t_k)``) from the
spectra in turn; return the real part of the inverse FFT.

Own kernel, on torch and batched. The composite only selects along the last frequency axis, so
for real images ``Re(ifftn(composite)) = irfftn(sum_j M_j rfftn(x_j))`` with the symmetrised
segment masks ``M_j(f) = (1[f in seg_j] + 1[-f in seg_j]) / 2`` over the W frequencies (half
spectra, Hermitian by construction). (Mathematically the D and H transforms cancel and 1-D FFTs
along W would do, but MKL's batched 1-D ``rfft`` is not bitwise stable across thread counts for
some lengths (16, 32, 64 in a check), while ``rfftn``/``irfftn`` were for every size tried; the
extra cost is ~20 ms at 128^3 next to ~140 ms of resampling.) The rigid resampling uses
:mod:`synthgen.ops.grids` (trilinear) on the batch's device.

Deliberate deviation: TorchIO builds each motion as a centred Euler transform but converts it
with ``transform_to_matrix``/``matrix_to_transform``, which keeps the rotation matrix and the
translation parameter and drops the centre, so its rotations turn about the world origin, the
corner voxel (verified: a 10 degree rotation moves the image centre by ~16 voxels). Here the
motion turns about the volume centre, as intended (``x -> R (x - c) + c + t``, output voxel x
sampling the input there; angles in ITK's Euler3D order Z X Y; translations in voxels).
"""

from __future__ import annotations

import dataclasses

import torch

from synthgen.ops.augment._common import apply_where, as_batch, bernoulli, to_range, uniform
from synthgen.ops.augment.affine import affine_displacement, rotation_matrix, warp_intensity


@dataclasses.dataclass(frozen=True)
class MotionParams:
    """fire: (B,) bool; degrees, translation: (B, T, 3) float64 (voxels for translation);
    times: (B, T) float64, increasing, in (0, 1)."""

    fire: torch.Tensor
    degrees: torch.Tensor
    translation: torch.Tensor
    times: torch.Tensor


def sample_params(generator: torch.Generator, batch_size: int = 1, *, p: float = 0.33,
                  degrees: float | tuple[float, float] = 10.0, translation: float | tuple[float, float] = 10.0,
                  num_transforms: int = 2, perturbation: float = 0.3) -> MotionParams:
    """Draw fire (B), degrees (B, T, 3), translations (B, T, 3) and time jitters (B, T)."""
    fire = bernoulli(generator, p, (batch_size,))
    d_low, d_high = to_range(degrees, 0.0)
    t_low, t_high = to_range(translation, 0.0)
    angles = uniform(generator, d_low, d_high, (batch_size, num_transforms, 3))
    shifts = uniform(generator, t_low, t_high, (batch_size, num_transforms, 3))
    step = 1.0 / (num_transforms + 1)
    base = torch.arange(1, num_transforms + 1, dtype=torch.float64) * step
    times = base + uniform(generator, -step * perturbation, step * perturbation, (batch_size, num_transforms))
    return MotionParams(fire, angles, shifts, times)


def segment_weights(times: torch.Tensor, width: int) -> torch.Tensor:
    """Weights of each image's ``rfft`` along W in the composite spectrum.

    Image 0 is the original, image j >= 1 the j-th moved copy. Returns (B, T + 1, W // 2 + 1)
    float32: for image j the symmetrised indicator of the shifted-k-space segment it fills,
    on the non-negative W frequencies of an ``rfftn`` half spectrum."""
    batch, count = times.shape
    bounds = (width * times.to(torch.float64)).to(torch.int64)  # int() truncation, as TorchIO
    starts = torch.cat([torch.zeros(batch, 1, dtype=torch.int64), bounds], 1)
    ends = torch.cat([bounds, torch.full((batch, 1), width, dtype=torch.int64)], 1)
    # segment holding the k-space centre gets the original; the image that was there moves to 0
    above = times > 0.5
    centre = torch.where(above.any(1), above.to(torch.int64).argmax(1), torch.full((batch,), count))
    order = torch.arange(count + 1).repeat(batch, 1)  # order[b, k]: image filling segment k
    rows = torch.arange(batch)
    order[rows, centre] = 0
    order[rows, 0] = centre
    freq = torch.arange(width // 2 + 1)
    weights = torch.zeros(batch, count + 1, freq.numel(), dtype=torch.float32)
    for sign in (1, -1):
        shifted = (sign * freq + width // 2) % width  # position of frequency sign*f after fftshift
        inside = (shifted.view(1, 1, -1) >= starts[:, :, None]) & (shifted.view(1, 1, -1) < ends[:, :, None])
        # inside[b, k, f]: segment k holds f; credit it to image order[b, k]
        weights.scatter_add_(1, order[:, :, None].expand(-1, -1, freq.numel()), 0.5 * inside.to(torch.float32))
    return weights


def motion(volume: torch.Tensor, degrees: torch.Tensor, translation: torch.Tensor,
           times: torch.Tensor) -> torch.Tensor:
    """Motion artefact on (B, C, D, H, W) ``volume`` with (B, T, 3) motions and (B, T) times."""
    batch, channels, *shape = volume.shape
    count = degrees.shape[1]
    x = volume.to(torch.float32)
    matrix = rotation_matrix(degrees.reshape(-1, 3))
    offset = translation.reshape(-1, 3).to(torch.float64)
    displacement = affine_displacement(matrix, offset, tuple(shape), x.device)
    moved = warp_intensity(x.repeat_interleave(count, 0), displacement)  # (B T, C, D, H, W)
    moved = moved.view(batch, count, channels, *shape)
    weights = segment_weights(times, shape[2]).to(x.device)  # (B, T + 1, F)
    dims = (-3, -2, -1)
    spectrum = torch.fft.rfftn(x, dim=dims).mul_(weights[:, 0].view(batch, 1, 1, 1, -1))
    for j in range(count):
        spectrum.add_(torch.fft.rfftn(moved[:, j], dim=dims).mul_(weights[:, j + 1].view(batch, 1, 1, 1, -1)))
    return torch.fft.irfftn(spectrum, s=tuple(shape), dim=dims)


def apply(volume: torch.Tensor, params: MotionParams) -> torch.Tensor:
    """Motion on the firing samples of a (B, C, D, H, W) batch or a (D, H, W) volume."""
    x, restore = as_batch(volume)
    return restore(apply_where(x, params.fire, lambda sub, idx: motion(
        sub, params.degrees[idx], params.translation[idx], params.times[idx])))
