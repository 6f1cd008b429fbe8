"""Foreground masking and envelopes of label ensembles (Algorithm 1, lines 9-18).

With probability ``foreground_prob`` (2/3) a label map is multiplied by a randomly deformed
sphere; within that branch, with probability ``envelope_prob`` (1/2, so 1/3 overall), the
mask's rim ``dilate(S, ball r) & ~erode(S, ball r)`` with r in {2, 3, 4} gets a new label.

As published (anatomix ``sample_corruption``; every length in voxels at 128^3, scaled by
``size / 128``): sphere radius ``randint`` in [48, 72], centre shift in [-32, 32] per axis; a
displacement u = sum over control spacings (8, 16, 32) of 3-channel Gaussian noise on a grid of
``ceil(128 / spacing)`` points per axis with one std ~ U(1, 5) per spacing, trilinearly upsampled
(``align_corners=False``, as ``F.interpolate``); the mask is ``sphere(x + u(x))`` sampled nearest
with reflection padding (a direct displacement, not an SVF), then median filtered (3x3x3).
Labels outside the mask become 0 and labels inside are incremented, then the envelope (if any)
is painted.

The +1 inside the mask is kept although templates are now labelled from 1: it gives the
uncovered interior of the foreground (voxels no template reached, 0 before masking) a label of
its own (1), distinct from the empty space outside the mask (0), so the mask's outline is
visible in the rendered views wherever no template touches it. Templates then carry labels
2..N+1 in masked maps.

Deliberate deviations from the published code, and why:

- Integer ranges are inclusive at both ends (paper: r ~ U{48, 72}, c ~ U{32, 96}); numpy's
  ``randint`` in the published code excludes the upper end (r in 48..71, shift -32..31).
- The sphere is centred at the volume centre ``(size - 1) / 2`` plus the shift (published:
  ``size // 2``, half a voxel off centre), and its membership is evaluated analytically at the
  nearest voxel centre of the reflected sample point, which equals nearest sampling of the
  voxelised sphere without building and resampling a float volume (~70 ms on one thread).
- One coordinate convention: reflection about the centres of the first and last voxels
  (``grid_sample`` with ``align_corners=True``, :mod:`synthgen.ops.grids`); the published code
  builds an align-corners grid but samples with ``align_corners=False`` (a 1/127 stretch).
- The envelope radius is scaled by ``size / 128`` as well (rounded, >= 1); the published code
  uses 2-4 voxels at every size. The envelope label is fixed in advance, ``n_templates + 2``,
  rather than ``1 + label.max()`` (the same value unless the highest labels were masked out or
  painted over), so the label dtype is known without reading the volume.
- The ball morphology and the medians are exact torch kernels (:mod:`synthgen.ops.morphology`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from synthgen.ops.interpolate import Sampling, resample_axis, upsample
from synthgen.ops.morphology import binary_median3, envelope


def _scaled(value: float, size: int) -> int:
    return int(round(value * size / 128.0))


@dataclasses.dataclass(frozen=True)
class ForegroundConfig:
    """Foreground-mask and envelope parameters (published anatomix defaults).

    Lengths are in voxels at 128^3 and scale with ``size / 128``.

    Attributes:
        foreground_prob: probability of masking the label map.
        envelope_prob: probability of an envelope, given a mask.
        radius_range: sphere radius, integer, inclusive range.
        center_shift_range: per-axis shift of the sphere centre from the volume centre,
            integer, inclusive range.
        deformation_spacings: control-point spacings of the displacement noise.
        deformation_std_range: per-spacing std of the displacement, U(low, high).
        envelope_radii: ball radii the envelope draws from uniformly.
    """

    foreground_prob: float = 2.0 / 3.0
    envelope_prob: float = 0.5
    radius_range: tuple[int, int] = (48, 72)
    center_shift_range: tuple[int, int] = (-32, 32)
    deformation_spacings: tuple[float, ...] = (8.0, 16.0, 32.0)
    deformation_std_range: tuple[float, float] = (1.0, 5.0)
    envelope_radii: tuple[int, ...] = (2, 3, 4)

    def __post_init__(self) -> None:
        for name in ("radius_range", "center_shift_range", "deformation_std_range",
                     "deformation_spacings", "envelope_radii"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("foreground_prob", "envelope_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        for name in ("radius_range", "center_shift_range", "deformation_std_range"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be (low, high) with low <= high, "
                                 f"got {(low, high)!r}")
        if self.radius_range[0] < 0 or self.deformation_std_range[0] < 0:
            raise ValueError("radius_range and deformation_std_range must be non-negative")
        if not self.deformation_spacings or min(self.deformation_spacings) <= 0:
            raise ValueError(f"deformation_spacings must be positive, "
                             f"got {self.deformation_spacings!r}")
        if not self.envelope_radii or min(self.envelope_radii) < 1:
            raise ValueError(f"envelope_radii must be integers >= 1, got {self.envelope_radii!r}")


@dataclasses.dataclass(frozen=True)
class ForegroundParams:
    """The drawn foreground mask of one label map (lengths in voxels at the map's size).

    Attributes:
        masked: whether the map is foreground-masked at all.
        radius: sphere radius.
        center: sphere centre, voxel coordinates.
        noise: per control spacing, the (3, n, n, n) float32 CPU displacement at the control
            points (already times its std), channel i along array axis i.
        envelope_radius: ball radius of the envelope, or None for no envelope.
    """

    masked: bool = False
    radius: float = 0.0
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    noise: tuple[torch.Tensor, ...] = ()
    envelope_radius: int | None = None


def _grid_points(spacing: float, size: int) -> int:
    """Control points per axis for a spacing given at 128^3: ceil(size / (spacing * size/128))."""
    return max(1, math.ceil(128.0 / spacing - 1e-9))


def sample_foreground_params(generator: torch.Generator, size: int = 128,
                             config: ForegroundConfig = ForegroundConfig()) -> ForegroundParams:
    """Draw the foreground mask parameters on the CPU from ``generator``.

    Draw order: mask decision; if masked: radius, 3 centre shifts, per spacing (std, noise);
    envelope decision; if enveloped: radius index.
    """
    if not float(torch.rand((), generator=generator, dtype=torch.float64)) < config.foreground_prob:
        return ForegroundParams(masked=False)
    ratio = size / 128.0
    r_lo, r_hi = (_scaled(v, size) for v in config.radius_range)
    s_lo, s_hi = (_scaled(v, size) for v in config.center_shift_range)
    radius = int(torch.randint(r_lo, r_hi + 1, (), generator=generator))
    shift = torch.randint(s_lo, s_hi + 1, (3,), generator=generator).tolist()
    centre = tuple((size - 1) / 2.0 + s for s in shift)
    lo, hi = config.deformation_std_range
    noise = []
    for spacing in config.deformation_spacings:
        draw = float(torch.rand((), generator=generator, dtype=torch.float64))
        std = (lo + (hi - lo) * draw) * ratio
        n = _grid_points(spacing, size)
        noise.append(torch.randn((3, n, n, n), generator=generator, dtype=torch.float32) * std)
    envelope_radius = None
    if float(torch.rand((), generator=generator, dtype=torch.float64)) < config.envelope_prob:
        k = int(torch.randint(len(config.envelope_radii), (), generator=generator))
        envelope_radius = max(1, _scaled(config.envelope_radii[k], size))
    return ForegroundParams(masked=True, radius=float(radius), center=centre, noise=tuple(noise),
                            envelope_radius=envelope_radius)


def _displacement_component(noise: tuple[torch.Tensor, ...], axis: int, size: int,
                            device: torch.device | str | None) -> torch.Tensor:
    """Channel ``axis`` of :func:`deformation_field`, (size, size, size) float32."""
    total = None
    for coarse in noise:
        coarse = coarse[axis].to(device=device, dtype=torch.float32)
        n = coarse.shape[-1]
        if size % n == 0:
            field = upsample(coarse, size // n)
        else:
            field = F.interpolate(coarse[None, None], size=(size,) * 3, mode="trilinear",
                                  align_corners=False)[0, 0]
        total = field if total is None else total.add_(field)
    if total is None:
        return torch.zeros((size,) * 3, device=device)
    return total


def deformation_field(noise: tuple[torch.Tensor, ...], size: int,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """Sum of the trilinearly upsampled control-point noises: a (3, size, size, size) float32
    displacement in voxels (``F.interpolate`` layout, ``align_corners=False``)."""
    return torch.stack([_displacement_component(noise, axis, size, device) for axis in range(3)])


def foreground_mask(params: ForegroundParams, size: int,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The foreground mask: :func:`deformed_sphere`, median filtered (3x3x3); (size,)*3 bool
    on ``device``, all True if the params are not ``masked``."""
    if not params.masked:
        return torch.ones((size,) * 3, dtype=torch.bool, device=device)
    return binary_median3(deformed_sphere(params, size, device))


def _planar_upsampled(coarse: torch.Tensor, size: int, device: torch.device | str | None
                      ) -> tuple[torch.Tensor, float, int]:
    """A (C, n, n, n) control grid upsampled along H and W only (as :func:`upsample` does),
    with one replicated control point on each side along D: (C, n + 2, size, size), plus
    the D sampling ``start + z / factor`` (in padded control-point units) of output slice z."""
    n = coarse.shape[-1]
    factor = size // n
    x = F.pad(coarse.to(device=device, dtype=torch.float32)[None], (1,) * 6, mode="replicate")[0]
    start = 1.0 - (factor - 1) / (2.0 * factor)
    x = resample_axis(x, -1, Sampling(start, factor, size))
    return resample_axis(x, -2, Sampling(start, factor, size)).contiguous(), start, factor


def deformed_sphere(params: ForegroundParams, size: int,
                    device: torch.device | str | None = None, *, slab: int = 16) -> torch.Tensor:
    """The sphere sampled nearest at ``x + u(x)`` with reflection padding (before the median).

    Voxel y is inside iff the voxel nearest to ``reflect(y + u(y))`` (reflection about the
    first and last voxel centres, nearest rounding half to even as ``grid_sample``) lies within
    ``radius`` of ``center``. Computed ``slab`` slices at a time: the displacement's last
    interpolation stage and the sphere test run on cache-sized buffers, so the full-resolution
    field never exists (3x fewer page faults and ~1.5x faster on one CPU thread).

    Returns:
        (size, size, size) bool tensor on ``device``.
    """
    last = float(size - 1)
    # |u| <= sum of max |control point| (linear interpolation is a convex combination): if that
    # keeps y + u within [-last, 2 last], one fold reflects, without a costly remainder.
    bound = sum(float(c.abs().max()) for c in params.noise) if params.noise else 0.0
    radius2 = params.radius * params.radius
    if any(size % c.shape[-1] for c in params.noise):
        # Uncommon sizes (not a multiple of the control grids): whole-volume path.
        u = deformation_field(params.noise, size, device)
        return _inside(u, 0, size, params.center, last, bound, radius2)
    fields = [_planar_upsampled(c, size, device) for c in params.noise]
    out = torch.empty((size,) * 3, dtype=torch.bool, device=device)
    slab = max(1, min(slab, size))
    u = torch.zeros((3, slab, size, size), dtype=torch.float32, device=device)
    scratch = torch.empty_like(u) if len(fields) > 1 else None
    for z0 in range(0, size, slab):
        b = min(slab, size - z0)
        for s, (x, start, factor) in enumerate(fields):
            target = u[:, :b] if s == 0 else scratch[:, :b]
            for k in range(b):
                position = start + (z0 + k) / factor
                left = min(int(math.floor(position)), x.shape[1] - 2)
                weight = position - left
                torch.lerp(x[:, left], x[:, left + 1], weight, out=target[:, k])
            if s > 0:
                u[:, :b].add_(target)
        out[z0:z0 + b] = _inside(u[:, :b], z0, size, params.center, last, bound, radius2)
    return out


def _inside(u: torch.Tensor, z0: int, size: int, center: tuple[float, float, float], last: float,
            bound: float, radius2: float) -> torch.Tensor:
    """Sphere membership of the nearest voxel to reflect(y + u(y)) for output slices
    z0 .. z0 + b of a (3, b, H, W) displacement (consumed in place)."""
    dist2 = None
    for axis in range(3):
        p = u[axis]
        view = [1, 1, 1]
        view[axis] = p.shape[axis]
        first = z0 if axis == 0 else 0
        ramp = torch.arange(first, first + p.shape[axis], device=p.device, dtype=torch.float32)
        p.add_(ramp.view(view))
        if bound > last:
            p.remainder_(2 * last)
        # reflection about 0 and last (the first and last voxel centres): last - |last - |p||
        p.abs_().sub_(last).abs_().neg_().add_(last)
        p.round_().sub_(center[axis]).square_()
        dist2 = p if dist2 is None else dist2.add_(p)
    assert dist2 is not None
    return dist2 <= radius2


def apply_foreground(labels: torch.Tensor, mask: torch.Tensor, envelope_radius: int | None = None,
                     envelope_label: int | None = None) -> torch.Tensor:
    """Mask a label map: 0 outside ``mask``, label + 1 inside, then ``envelope_label`` on the
    envelope ``dilate(mask, ball r) & ~erode(mask, ball r)`` if ``envelope_radius`` is given.

    Args:
        labels: (D, H, W) integer label map; its dtype must hold ``max + 1`` and the envelope label.
        mask: (D, H, W) bool foreground mask.
        envelope_radius: ball radius of the envelope, or None.
        envelope_label: the envelope's label (required with an envelope).

    Returns:
        New (D, H, W) tensor of ``labels``' dtype.
    """
    out = labels + 1
    out.mul_(mask)
    if envelope_radius is not None:
        if envelope_label is None:
            raise ValueError("an envelope needs envelope_label")
        out.masked_fill_(envelope(mask, envelope_radius), envelope_label)
    return out
