"""Random affine placement of binary templates into a label volume (Algorithm 1, lines 3-7).

Grid convention: voxel ``i`` of an axis of ``n`` voxels has its centre at coordinate ``i``
(the project's ``align_corners=True`` convention); the centre of an array is ``(n - 1) / 2``.
Everything here is voxel-space arithmetic; no ``grid_sample`` normalised coordinates occur.

The placement of a template T (d, h, w) into the output volume is the pull-back

    x = M (y - o) + c_T,     M = S R Sh,     o = c_V + t,

y an output voxel, x the template coordinate it reads (nearest voxel, ``floor(x + 0.5)``, as
``scipy.ndimage.affine_transform(order=0)``), c_T = ((d-1)/2, (h-1)/2, (w-1)/2) the template
centre, c_V = ((size-1)/2,)*3 the volume centre and t the translation. As published
(anatomix ``apply_random_affine_transform``): S = diag(scale) with scale ~ U(0.5, 1.5) per axis
and the sign flipped per axis with p = 0.5 (reflection); R = Rx Ry Rz with angles ~ U(-pi, pi)
about array axes 0, 1, 2; Sh = identity with U(-0.5, 0.5) in the upper-triangular entries
(0,1), (0,2), (1,2). M acts on template coordinates (the pull-back of ``affine_transform``), so a
template appears 1/scale times its size, as in the published code. The template centre lands at
a uniformly random position over the volume: t ~ U(-(size - 1) / 2, (size - 1) / 2) per axis
(``translation_range`` (-63.5, 63.5) at 128^3), where the published code draws t ~ U(-5, 5)
about the array corner.

Deliberate deviations from the published code, and why:

- About the template centre, at a uniform position: rotation, scale and shear act about the
  template centre, which lands at the volume centre plus t, uniform over the volume. The
  published code pads the cropped template to >= 128 per axis, transforms about the array
  corner with ``mode="grid-wrap"`` and keeps the corner ROI ``[:128]^3``: the template's wrapped
  copies form a lattice (one copy per ``128^3 / |det M|`` voxels for 128-voxel padding) at a
  random offset, so on average one copy per template lands at a uniformly random place over the
  volume, cut by the ROI's faces. Here each template lands once, at a uniform position, and what
  falls outside the volume is dropped (no copies re-entering elsewhere). Until 2026-12 synthgen
  drew t ~ U(-5, 5) about the volume centre, which piled every template in the middle (at
  128^3, share of voxels carrying a template label 0.98 within 16 voxels of the centre and 0.01
  beyond 64; the published code with the same bank 0.39 and 0.12, this placement 0.37 and 0.10:
  ``benchmarks/label_placement.py``, ``benchmarks/README.md``).
- The translation range scales with ``(size - 1) / 127``, so the default spans the voxel centres
  at every size.
- Only the region a template can reach is computed: the 8 corners of the template's support
  box ``[-0.5, n - 0.5]^3`` are mapped forward, their bounding box is clipped to the volume,
  cut into slabs of 16 slices along axis 0, each slab shrunk to the bounding box of the placed
  parallelepiped's cross-section, and only those voxels are pulled back and looked up (~0.8 M
  per 40-80 voxel template at 128^3, ~2 ms). The published code warps the whole padded
  (>= 128^3) array per template, and loads/crops full TotalSegmentator volumes (~8-9 of its
  10.7 CPU-s per label map).
- The pull-back is evaluated in 32-bit fixed point (``FRACTION_BITS`` fractional bits): the
  per-row and per-plane parts of x are computed on the CPU in float64 and rounded to integers,
  summed on the device in int32 and floored by a shift. Results are therefore bit-identical on
  every device; they can differ from a float64 evaluation only where x lies within ~2**-20
  voxel of a rounding tie (no voxel of 2 * 10^7 compared with scipy did).
- Painting writes ``max(label, value * T(x))``: labels grow with the painting order, so this is
  exactly "later templates overwrite earlier ones" (``label[T > 0] = value``) as long as each
  value exceeds every label already painted (as in :func:`place_templates`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

FRACTION_BITS = 20  # fixed-point resolution of template coordinates (lowered for huge ones)


@dataclasses.dataclass(frozen=True)
class PlacementConfig:
    """Ranges of the random template affine (published anatomix defaults).

    Attributes:
        scale_range: per-axis scale of the pull-back matrix, U(low, high).
        rotation_range: per-axis rotation angle in radians, U(low, high).
        shear_range: the three upper-triangular shear entries, U(low, high).
        translation_range: per-axis offset of the template centre from the volume centre in
            voxels at 128^3, U(low, high), scaled by ``(size - 1) / 127``; the default puts the
            centre uniformly anywhere over the volume (first to last voxel centre).
        reflection_prob: per-axis probability of flipping the scale's sign.
    """

    scale_range: tuple[float, float] = (0.5, 1.5)
    rotation_range: tuple[float, float] = (-math.pi, math.pi)
    shear_range: tuple[float, float] = (-0.5, 0.5)
    translation_range: tuple[float, float] = (-63.5, 63.5)
    reflection_prob: float = 0.5

    def __post_init__(self) -> None:
        for name in ("scale_range", "rotation_range", "shear_range", "translation_range"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[0] > value[1]:
                raise ValueError(f"{name} must be a range (low, high) with low <= high, got "
                                 f"{getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if self.scale_range[0] * self.scale_range[1] <= 0:
            raise ValueError(f"scale_range must not contain 0, got {self.scale_range!r}")
        if not 0.0 <= self.reflection_prob <= 1.0:
            raise ValueError(f"reflection_prob must be in [0, 1], got {self.reflection_prob!r}")


@dataclasses.dataclass(frozen=True)
class PlacementParams:
    """One template's affine (all Python numbers; see the module docstring for the map).

    Attributes:
        scale: per-axis scale, before reflection.
        rotation: angles in radians about array axes 0, 1, 2 (R = Rx Ry Rz).
        shear: upper-triangular entries (0,1), (0,2), (1,2) of the shear matrix.
        reflect: per-axis reflection (sign flip of the scale).
        translation: output-space offset of the template centre from the volume centre, voxels.
    """

    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shear: tuple[float, float, float] = (0.0, 0.0, 0.0)
    reflect: tuple[bool, bool, bool] = (False, False, False)
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def matrix(self) -> np.ndarray:
        """The pull-back matrix M = S R Sh (3x3 float64) from output to template offsets."""
        ax, ay, az = self.rotation
        (cx, sx), (cy, sy), (cz, sz) = ((math.cos(a), math.sin(a)) for a in (ax, ay, az))
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        sh = np.eye(3)
        sh[0, 1], sh[0, 2], sh[1, 2] = self.shear
        s = np.diag([-v if f else v for v, f in zip(self.scale, self.reflect)])
        return s @ (rx @ ry @ rz) @ sh


def sample_placement_params(generator: torch.Generator, size: int = 128,
                            config: PlacementConfig = PlacementConfig()) -> PlacementParams:
    """Draw one template affine on the CPU from ``generator``.

    Draw order (15 numbers): 3 scales, 3 angles, 3 translations, 3 shears, 3 reflection
    uniforms (the published order).
    """
    u = torch.rand(15, generator=generator, dtype=torch.float64).tolist()

    def span(values: list[float], bounds: tuple[float, float], factor: float = 1.0) -> tuple:
        return tuple(factor * (bounds[0] + v * (bounds[1] - bounds[0])) for v in values)

    return PlacementParams(
        scale=span(u[0:3], config.scale_range),
        rotation=span(u[3:6], config.rotation_range),
        translation=span(u[6:9], config.translation_range, (size - 1) / 127.0),
        shear=span(u[9:12], config.shear_range),
        reflect=tuple(v < config.reflection_prob for v in u[12:15]),
    )


def _corners(lows: Sequence[float], highs: Sequence[float]) -> np.ndarray:
    return np.array([[(lows[i], highs[i])[k >> (2 - i) & 1] for i in range(3)] for k in range(8)],
                    dtype=np.float64)


def _forward_corners(template_shape: Sequence[int], params: PlacementParams, size: int,
                     m: np.ndarray | None = None) -> np.ndarray:
    """Output positions of the 8 corners of the template's support box [-0.5, n - 0.5]^3."""
    m = params.matrix() if m is None else m
    n = np.asarray(template_shape, dtype=np.float64)
    centre_out = (size - 1) / 2.0 + np.asarray(params.translation, dtype=np.float64)
    corners = _corners([-0.5] * 3, n - 0.5) - (n - 1) / 2.0
    return corners @ np.linalg.inv(m).T + centre_out


def _clipped_box(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[slice, slice, slice] | None:
    """Voxel box holding the continuous box [lo, hi] widened by one voxel, clipped."""
    a = np.maximum(np.floor(lo) - 1, 0).astype(int)
    b = np.minimum(np.ceil(hi) + 1, size - 1).astype(int)
    if (a > b).any():
        return None
    return tuple(slice(int(u), int(v) + 1) for u, v in zip(a, b))  # type: ignore[return-value]


# The 12 edges of a box, as pairs of ``_corners`` indices differing in one bit.
_EDGES = [(k, k | bit) for k in range(8) for bit in (1, 2, 4) if not k & bit]


def placement_box(template_shape: Sequence[int], params: PlacementParams, size: int
                  ) -> tuple[slice, slice, slice] | None:
    """The output voxels a placed template can reach, clipped to the volume (None if empty).

    A voxel can read the template only if its pull-back x lies in the support box
    ``[-0.5, n_i - 0.5]``; the box returned holds the forward images of that box's corners
    (widened by one voxel against rounding).
    """
    forward = _forward_corners(template_shape, params, size)
    return _clipped_box(forward.min(axis=0), forward.max(axis=0), size)


def placement_slabs(template_shape: Sequence[int], params: PlacementParams, size: int,
                    thickness: int = 16, m: np.ndarray | None = None
                    ) -> list[tuple[slice, slice, slice]]:
    """:func:`placement_box` cut into slabs of ``thickness`` voxels along axis 0, each shrunk to
    the part of the placed template (a parallelepiped) that crosses it: ~30% fewer voxels to
    evaluate than the whole box for randomly rotated templates.

    The parallelepiped's cross-section with a slab is spanned by its corners inside the slab
    and the crossings of its 12 edges with the slab's two bounding planes.
    """
    forward = _forward_corners(template_shape, params, size, m)
    box = _clipped_box(forward.min(axis=0), forward.max(axis=0), size)
    if box is None:
        return []
    p, q = forward[[e[0] for e in _EDGES]], forward[[e[1] for e in _EDGES]]
    slabs = []
    for start in range(box[0].start, box[0].stop, thickness):
        stop = min(start + thickness, box[0].stop)      # voxel centres start .. stop - 1
        planes = np.array([start - 1.0, float(stop)])   # widened: neighbours of the slab's voxels
        points = [forward[(forward[:, 0] >= planes[0]) & (forward[:, 0] <= planes[1])]]
        span = q[:, 0] - p[:, 0]
        for plane in planes:
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (plane - p[:, 0]) / span
            hit = (span != 0) & (t >= 0) & (t <= 1)
            points.append(p[hit] + t[hit, None] * (q[hit] - p[hit]))
        points = np.concatenate(points)
        if not len(points):
            continue
        sub = _clipped_box(points.min(axis=0), points.max(axis=0), size)
        if sub is not None:
            slabs.append((slice(start, stop), sub[1], sub[2]))
    return slabs


def prepare_template(template: torch.Tensor, value: int, dtype: torch.dtype,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """The lookup table of one placement: ``value`` where the template is set, 0 elsewhere,
    with a one-voxel zero border (clamped out-of-template reads land on it), flattened.

    Returns:
        ((d+2)(h+2)(w+2),) tensor of ``dtype`` on ``device``.
    """
    if template.dim() != 3:
        raise ValueError(f"templates must be (d, h, w) binary volumes, got {tuple(template.shape)}")
    d, h, w = template.shape
    table = torch.zeros((d + 2, h + 2, w + 2), dtype=dtype, device=device)
    table[1:-1, 1:-1, 1:-1] = template.to(device=device, dtype=torch.bool)
    return table.mul_(value).view(-1)


def _fixed_point_parts(template_shape: Sequence[int], params: PlacementParams,
                       box: tuple[slice, slice, slice], size: int, m: np.ndarray
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """Per component i of x + 1.5 (the +1 indexes the zero border, +0.5 rounds by flooring),
    in fixed point: a (bd, bh, 1) plane part and a (1, 1, bw) row part, int32 CPU tensors."""
    n = np.asarray(template_shape, dtype=np.float64)
    centre_out = (size - 1) / 2.0 + np.asarray(params.translation, dtype=np.float64)
    const = (n - 1) / 2.0 + 1.5 - m @ centre_out
    ys = [np.arange(s.start, s.stop, dtype=np.float64) for s in box]
    mid = float(ys[2].mean())  # rows relative to the box's middle keep both parts small
    plane_f = [m[i, 0] * ys[0][:, None] + m[i, 1] * ys[1][None, :] + (const[i] + m[i, 2] * mid)
               for i in range(3)]
    row_f = [m[i, 2] * (ys[2] - mid) for i in range(3)]
    reach = max(float(np.abs(plane_f[i]).max() + np.abs(row_f[i]).max()) for i in range(3))
    bits = min(FRACTION_BITS, 30 - math.ceil(math.log2(reach + 2.0)))
    if bits < 4:
        raise ValueError(f"template of shape {tuple(template_shape)} is too large to place")
    unit = float(1 << bits)
    planes = [torch.from_numpy(np.rint(p * unit).astype(np.int32)).unsqueeze(-1) for p in plane_f]
    rows = [torch.from_numpy(np.rint(r * unit).astype(np.int32)).view(1, 1, -1) for r in row_f]
    return planes, rows, bits


def _to_device_in_one_copy(parts: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """CPU tensors ``parts`` on ``device``, moved with one host-to-device copy: each copy from
    pageable memory waits for the GPU, and a label map paints a few hundred boxes."""
    if torch.device(device).type == "cpu":
        return parts
    flat = torch.cat([part.reshape(-1) for part in parts]).to(device)
    chunks = flat.split([part.numel() for part in parts])
    return [chunk.view(part.shape) for chunk, part in zip(chunks, parts)]


class Workspace:
    """Reusable scratch memory for :func:`paint_template` (fresh multi-MB allocations per
    template cost more in page faults than the arithmetic done in them)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype, device: torch.device
            ) -> torch.Tensor:
        numel = math.prod(shape)
        key = (name, dtype, torch.device(device))
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[key] = buffer
        return buffer[:numel].view(*shape)


def paint_template(labels: torch.Tensor, table: torch.Tensor, template_shape: Sequence[int],
                   params: PlacementParams, workspace: Workspace | None = None) -> None:
    """Place one template into ``labels`` in place: ``labels = max(labels, table[x(y)])`` over
    the template's reachable slabs only (equal to ``labels[T(x(y)) > 0] = value`` when
    ``value`` exceeds every label already in ``labels``).

    Args:
        labels: (S, S, S) integer label volume (cubic), modified in place.
        table: the template's flattened padded lookup (:func:`prepare_template`), same dtype
            and device as ``labels``.
        template_shape: (d, h, w) of the template (without the border).
        params: the template's affine.
        workspace: scratch memory to reuse across calls (optional).
    """
    size = labels.shape[0]
    if labels.shape != (size, size, size):
        raise ValueError(f"labels must be a cubic (S, S, S) volume, got {tuple(labels.shape)}")
    workspace = workspace or Workspace()
    m = params.matrix()
    for box in placement_slabs(template_shape, params, size, m=m):
        _paint_box(labels, table, template_shape, params, box, workspace, m)


def _paint_box(labels: torch.Tensor, table: torch.Tensor, template_shape: Sequence[int],
               params: PlacementParams, box: tuple[slice, slice, slice], workspace: Workspace,
               m: np.ndarray) -> None:
    size = labels.shape[0]
    device = labels.device
    planes, rows, bits = _fixed_point_parts(template_shape, params, box, size, m)
    parts = _to_device_in_one_copy([*planes, *rows], device)
    planes, rows = parts[:3], parts[3:]
    shape = tuple(s.stop - s.start for s in box)
    coord = workspace.get("coord", shape, torch.int32, device)
    index = workspace.get("index", shape, torch.int32, device)
    padded = [int(v) + 2 for v in template_shape]
    for i in range(3):
        out = index if i == 0 else coord
        torch.add(planes[i], rows[i], out=out)
        out.bitwise_right_shift_(bits).clamp_(0, padded[i] - 1)
        if i > 0:  # flat index by Horner: ((x0 * n1) + x1) * n2 + x2
            torch.add(coord, index, alpha=padded[i], out=index)
    values = workspace.get("values", (index.numel(),), labels.dtype, device)
    torch.index_select(table, 0, index.view(-1), out=values)
    target = labels[box]
    torch.maximum(target, values.view(shape), out=target)


def place_templates(templates: Sequence[torch.Tensor], params: Sequence[PlacementParams], size: int,
                    *, device: torch.device | str | None = None, dtype: torch.dtype = torch.uint8
                    ) -> torch.Tensor:
    """Paint templates k = 0, 1, ... with labels k + 1 into a zero volume, in order.

    Args:
        templates: binary (d_k, h_k, w_k) tensors (bool or integer; nonzero is inside).
        params: one :class:`PlacementParams` per template.
        size: side of the cubic output.
        device: where to compute (default: the first template's device).
        dtype: label dtype; must hold ``len(templates)``.

    Returns:
        (size, size, size) tensor of ``dtype`` on ``device``.
    """
    if len(templates) != len(params):
        raise ValueError(f"got {len(templates)} templates but {len(params)} placements")
    if device is None:
        device = templates[0].device if len(templates) else "cpu"
    if len(templates) > torch.iinfo(dtype).max:
        raise ValueError(f"{len(templates)} labels do not fit {dtype}")
    labels = torch.zeros((size, size, size), dtype=dtype, device=device)
    workspace = Workspace()
    for k, (template, placement) in enumerate(zip(templates, params)):
        table = prepare_template(template, k + 1, dtype, device)
        paint_template(labels, table, template.shape, placement, workspace)
    return labels
