"""random-shapes: random-shape registration pairs after Chen et al. (MIDL 2025), §2 and App. C.

One sample is a fixed/moving pair of images, their label maps and the true transform:

1. Base shapes: ``num_labels`` channels of gradient Perlin noise (``label_res`` periods across the
   volume), evaluated on a coarse grid every ``label_grid_factor`` voxels, min-max scaled per
   channel, trilinearly upsampled and collapsed by argmax into a label map. Each label gets one
   intensity: U(0, 225) for label 0, U(25, 225) for the others.
2. Two independent stationary velocity fields, one 3-channel fractal Perlin noise each (octaves
   drawn per component from 1..``max_octaves``, lacunarity 2, persistence 0.5, ``velocity_res``
   periods), times an amplitude drawn from ``amplitudes`` (voxels). Each is integrated by scaling
   and squaring into ``phi_k = exp(v_k)``.
3. ``fixed = base o phi_1``, ``moving = base o phi_2``; the stored transform is
   ``u = phi_2^-1 o phi_1 - id`` with ``phi_2^-1 = exp(-v_2)``, so ``moving(x + u(x)) ~= fixed(x)``.

Every random number comes, on the CPU, from ``sample_generator(seed, index)`` in a fixed order
(label gradients; warp 1: amplitude, then per component its octave count and lattices; warp 2;
intensity tables), so a sample is a pure function of (seed, index, config), bitwise identical on
any thread count: the sample path has no thread-dependent float reductions (elementwise ops,
gathers, ``grid_sample``, exact min/max and integer counts only).

Deliberate deviations from the published code (MIR ``random_shapes.py``), and why:

- The amplitude scales the velocity before integration. The published code scales the
  displacement after integrating, so its warp is not the exponential of an SVF and can fold.
- Velocities are integrated on the velocity grid (``size / velocity_grid_factor``, 32^3 at
  128^3) rather than after upsampling to full resolution; the displacements are upsampled
  afterwards, as SynthMorph does. This is the main speed-up (the published scaling and squaring
  alone costs ~1.8 CPU-s per pair at 128^3). 7 squarings instead of 5 keep the first step below
  ~0.05 grid voxel at the largest amplitude.
- Folds: the grid is extended by a margin that covers the warp's reach (clamped field values at
  the grid's edge otherwise fold the faces), displacements are upsampled with one support node
  beyond the volume (border clamping zeroes normal derivatives there), and the two compositions
  are done on a grid twice as fine as the velocity grid (see ``_pair_transforms``). With these,
  no voxel of phi_1, phi_2 or the stored transform had a non-positive Jacobian determinant in
  730 pairs at 32^3-128^3, 370 of them with amplitude 18 on both warps.
- ``fixed`` is rendered through ``phi_2 o u`` (= phi_1 up to the integration error of
  exp(-v_2) o exp(v_2), ~0.3 voxel mean at amplitude 18), so the stored transform is exact for
  the pair it is stored with.
- Labels are warped by nearest sampling and the images are rendered as ``intensity[label]``
  rather than warped bilinearly, so each label has exactly one intensity in each image (no
  partial-volume blends at label borders), and fixed/moving intensities agree exactly.
- No wrap-around and no zero-padding artefacts: the base label map is computed on the window
  that the warps actually sample (the volume extended by the warps' largest displacements,
  data-dependent but deterministic), from one noise field defined on all of space. The published
  code samples outside the volume with zero padding, painting label 0 along the borders.
- Compositions and warps use border padding and one ``align_corners=True`` convention
  (``synthgen.ops.grids``); the published warper mixes conventions.
- Gradient directions are uniform on the sphere (see ``synthgen.ops.perlin``).
- Images are min-max scaled over the labels present; in the single-modality case over the
  labels present in either image, so one label has the same intensity in both images.
- The ``add_noise`` option of the published code (off by default, and not used in the paper,
  which omits noise and bias fields) is not implemented.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from synthgen.engines.base import Engine, FieldSpec
from synthgen.errors import SynthgenError
from synthgen.ops.interpolate import Sampling
from synthgen.ops.labels import argmax_upsampled
from synthgen.ops.perlin import fractal_noise, perlin_noise, random_gradients, random_octave_gradients
from synthgen.ops.svf import integrate_svf, upsample_displacement
from synthgen.ops.warp import nearest_index, warp
from synthgen.seeding import sample_generator

PERSISTENCE = 0.5
LACUNARITY = 2.0
# Perlin noise with unit gradients is bounded by sqrt(3) (see synthgen.ops.perlin); it sizes the
# label noise lattice so the base shapes are one field however far a warp reaches.
NOISE_BOUND = math.sqrt(3.0)
# Velocity margins assume |noise| <= 0.7 (gradient noise rarely exceeds ~0.65); a sample beyond
# the margin is clamped at its far edge, which only perturbs the volume's outermost voxels.
TYPICAL_NOISE_PEAK = 0.7


@dataclasses.dataclass(frozen=True)
class RandomShapesConfig:
    """Parameters of the random-shapes engine. ``None`` resolutions default to ``size // 32``.

    Attributes:
        size: side of the cubic volume in voxels (multiple of 16, >= 32).
        spacing: voxel spacing in mm (metadata only).
        num_labels: label noise channels, i.e. labels 0..num_labels-1 (2..256).
        label_res: Perlin periods across the volume for the label noise.
        label_grid_factor: the label noise is evaluated every this many voxels, then upsampled.
        velocity_res: Perlin periods across the volume for the velocity fields (octave 1).
        velocity_grid_factor: velocities live and are integrated on a grid this many times
            coarser than the volume (must divide ``size``).
        max_octaves: each velocity component draws its octave count from 1..max_octaves.
        amplitudes: velocity amplitudes in voxels; each warp draws one uniformly.
        integration_steps: scaling-and-squaring steps.
        multimodal: independent intensity tables for the fixed and the moving image.
        shared_intensity_prob: with multimodal, probability that both images share one table
            (the published ``probability`` option).
        background_intensity: uniform range of label 0's intensity.
        label_intensity: uniform range of the other labels' intensities.
    """

    size: int = 128
    spacing: float = 1.0
    num_labels: int = 16
    label_res: int | None = None
    label_grid_factor: int = 16
    velocity_res: int | None = None
    velocity_grid_factor: int = 4
    max_octaves: int = 2
    amplitudes: tuple[float, ...] = (4.0, 6.0, 8.0, 14.0, 16.0, 18.0)
    integration_steps: int = 7
    multimodal: bool = False
    shared_intensity_prob: float = 0.0
    background_intensity: tuple[float, float] = (0.0, 225.0)
    label_intensity: tuple[float, float] = (25.0, 225.0)

    def __post_init__(self) -> None:
        for name in ("amplitudes", "background_intensity", "label_intensity"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.size, int):
            for name in ("label_res", "velocity_res"):
                if getattr(self, name) is None:
                    object.__setattr__(self, name, max(1, self.size // 32))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass
class _Draws:
    """Every random number of one sample, drawn on the CPU in a fixed order."""

    label_gradients: torch.Tensor                  # (num_labels, L, L, L, 3)
    amplitudes: tuple[float, float]                # per warp, voxels
    velocity_gradients: list[list[list[torch.Tensor]]]  # [warp][component][octave] (1, L, L, L, 3)
    tables: tuple[torch.Tensor, torch.Tensor]      # (num_labels,) float32 intensities per image
    shared_table: bool


class RandomShapes(Engine):
    """Chen et al. random-shape pairs; see the module docstring for the algorithm."""

    name = "random-shapes"
    Config = RandomShapesConfig

    def validate(self) -> None:
        c = self.config
        if not _is_int(c.size) or c.size < 32 or c.size % 16:
            hint = max(32, 16 * round(c.size / 16)) if _is_number(c.size) else 128
            raise SynthgenError(f"random-shapes size must be a multiple of 16 and >= 32, got "
                                f"{c.size!r}; use e.g. size={hint}")
        if not _is_number(c.spacing) or c.spacing <= 0:
            raise SynthgenError(f"random-shapes spacing must be a positive number of mm, got {c.spacing!r}")
        if not _is_int(c.num_labels) or not 2 <= c.num_labels <= 256:
            raise SynthgenError(f"random-shapes num_labels must be an integer in 2..256 (uint8 labels), "
                                f"got {c.num_labels!r}")
        for name in ("label_res", "velocity_res"):
            value = getattr(c, name)
            if not _is_int(value) or not 1 <= value <= c.size // 2:
                raise SynthgenError(f"random-shapes {name} must be an integer in 1..{c.size // 2} "
                                    f"(Perlin periods across the volume), got {value!r}")
        if not _is_int(c.label_grid_factor) or not 1 <= c.label_grid_factor <= c.size:
            raise SynthgenError(f"random-shapes label_grid_factor must be an integer in 1..{c.size}, "
                                f"got {c.label_grid_factor!r}")
        f = c.velocity_grid_factor
        if not _is_int(f) or f < 1 or c.size % f or c.size // f < 4:
            raise SynthgenError(f"random-shapes velocity_grid_factor must divide size={c.size} and leave "
                                f">= 4 grid points, got {f!r}; the default is 4")
        if not _is_int(c.max_octaves) or not 1 <= c.max_octaves <= 4:
            raise SynthgenError(f"random-shapes max_octaves must be an integer in 1..4, "
                                f"got {c.max_octaves!r}")
        if (not c.amplitudes or not all(_is_number(a) and 0 < a <= 4 * c.size for a in c.amplitudes)):
            raise SynthgenError(f"random-shapes amplitudes must be a non-empty list of voxel amplitudes in "
                                f"(0, {4 * c.size}], got {c.amplitudes!r}")
        if not _is_int(c.integration_steps) or not 1 <= c.integration_steps <= 16:
            raise SynthgenError(f"random-shapes integration_steps must be an integer in 1..16, "
                                f"got {c.integration_steps!r}")
        if not isinstance(c.multimodal, bool):
            raise SynthgenError(f"random-shapes multimodal must be true or false, got {c.multimodal!r}")
        if not _is_number(c.shared_intensity_prob) or not 0 <= c.shared_intensity_prob <= 1:
            raise SynthgenError(f"random-shapes shared_intensity_prob must be in [0, 1], "
                                f"got {c.shared_intensity_prob!r}")
        for name in ("background_intensity", "label_intensity"):
            value = getattr(c, name)
            if (not isinstance(value, tuple) or len(value) != 2 or not all(_is_number(v) for v in value)
                    or not 0 <= value[0] <= value[1]):
                raise SynthgenError(f"random-shapes {name} must be a range [low, high] with "
                                    f"0 <= low <= high, got {value!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.config.size,) * 3

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (float(self.config.spacing),) * 3

    @property
    def schema(self) -> dict[str, FieldSpec]:
        volume = self.shape
        labels = f"0..{self.config.num_labels - 1}"
        return {
            "fixed": FieldSpec("float16", volume, "image",
                               "fixed image: one intensity per label of fixed_labels, scaled to [0, 1]",
                               overlay="fixed_labels"),
            "moving": FieldSpec("float16", volume, "image",
                                "moving image: one intensity per label of moving_labels, scaled to [0, 1]",
                                overlay="moving_labels"),
            "fixed_labels": FieldSpec("uint8", volume, "labels",
                                      f"random-shape labels {labels} of the fixed image"),
            "moving_labels": FieldSpec("uint8", volume, "labels",
                                       f"random-shape labels {labels} of the moving image"),
            "displacement": FieldSpec("float16", (3, *volume), "displacement",
                                      "true transform u in voxels, channel i along axis i (D, H, W): "
                                      "moving(x + u(x)) ~= fixed(x)"),
        }

    def sample(self, seed: int, index: int, device: torch.device | str | None = None
               ) -> dict[str, torch.Tensor]:
        return self._generate(seed, index, device)

    def sample_with_warps(self, seed: int, index: int, device: torch.device | str | None = None
                          ) -> dict[str, torch.Tensor]:
        """:meth:`sample` plus ``fixed_warp`` and ``moving_warp``: the float32 (3, D, H, W)
        displacements of phi_1 and phi_2 (``fixed = base o phi_1``), for checks and debugging."""
        return self._generate(seed, index, device, with_warps=True)

    def _generate(self, seed: int, index: int, device: torch.device | str | None,
                  with_warps: bool = False) -> dict[str, torch.Tensor]:
        device = torch.device(device) if device is not None else torch.device("cpu")
        with torch.no_grad():
            draws = self._draw(sample_generator(seed, index))
            return self._render(draws, device, with_warps)

    # -- random draws --------------------------------------------------------------------------

    def _margin(self) -> int:
        """A priori bound (voxels) on any displacement, from |exp(v)(x) - x| <= max |v| and the
        noise bound; it sizes the label-noise lattice."""
        c = self.config
        octave_sum = sum(PERSISTENCE ** o for o in range(c.max_octaves))
        return math.ceil(max(c.amplitudes) * octave_sum * NOISE_BOUND)

    def _label_nodes(self) -> tuple[int, int]:
        """First and last coarse-node index (nodes every label_grid_factor voxels) of the label
        field's a priori extent [-margin, size - 1 + margin]."""
        c, margin = self.config, self._margin()
        step = c.label_grid_factor
        return math.floor(-margin / step), math.ceil((c.size - 1 + margin) / step)

    def _label_period(self) -> float:
        return self.config.size / self.config.label_res

    def _velocity_margin(self, amplitude: float) -> int:
        """Velocity-grid nodes added on every side before integrating a warp of ``amplitude``.

        Scaling and squaring samples the field at x + u(x); outside the grid, border padding
        stands in for the true field, which folds the result near the volume's faces when the
        grid ends at the volume. The margin covers the reach of a warp whose noise peaks at
        ``TYPICAL_NOISE_PEAK``, plus one node.
        """
        c = self.config
        octave_sum = sum(PERSISTENCE ** o for o in range(c.max_octaves))
        return math.ceil(amplitude * octave_sum * TYPICAL_NOISE_PEAK / c.velocity_grid_factor) + 1

    def _velocity_coords(self, margin: int) -> torch.Tensor:
        """Positions, in velocity lattice units (octave 1), of the velocity-grid nodes
        -margin .. size/f + margin - 1 along one axis; node j is at voxel ``j*f + (f-1)/2``."""
        c = self.config
        f = c.velocity_grid_factor
        shift = self._velocity_margin(max(c.amplitudes))
        nodes = torch.arange(-margin, c.size // f + margin, dtype=torch.float64) + shift
        return (nodes * f + (f - 1) / 2) * (c.velocity_res / c.size)

    def _draw(self, generator: torch.Generator) -> _Draws:
        c = self.config
        first, last = self._label_nodes()
        extent = (last - first) * c.label_grid_factor / self._label_period()
        label_gradients = random_gradients(c.num_labels, (math.floor(extent) + 2,) * 3, generator)

        largest = self._velocity_margin(max(c.amplitudes))
        velocity_extent = (float(self._velocity_coords(largest)[-1]),) * 3
        amplitudes, velocity_gradients = [], []
        for _ in range(2):
            pick = int(torch.randint(len(c.amplitudes), (1,), generator=generator))
            amplitudes.append(float(c.amplitudes[pick]))
            components = []
            for _ in range(3):
                octaves = int(torch.randint(1, c.max_octaves + 1, (1,), generator=generator))
                components.append(random_octave_gradients(1, velocity_extent, octaves, generator,
                                                          lacunarity=LACUNARITY))
            velocity_gradients.append(components)

        fixed_table = self._intensity_table(generator)
        shared = True
        moving_table = fixed_table
        if c.multimodal:
            shared = bool(torch.rand((), generator=generator) < c.shared_intensity_prob)
            if not shared:
                moving_table = self._intensity_table(generator)
        return _Draws(label_gradients, (amplitudes[0], amplitudes[1]), velocity_gradients,
                      (fixed_table, moving_table), shared)

    def _intensity_table(self, generator: torch.Generator) -> torch.Tensor:
        c = self.config
        r = torch.rand(c.num_labels, generator=generator, dtype=torch.float32)
        low = torch.full((c.num_labels,), float(c.label_intensity[0]))
        high = torch.full((c.num_labels,), float(c.label_intensity[1]))
        low[0], high[0] = float(c.background_intensity[0]), float(c.background_intensity[1])
        return low + r * (high - low)

    # -- rendering -----------------------------------------------------------------------------

    def _render(self, draws: _Draws, device: torch.device, with_warps: bool) -> dict[str, torch.Tensor]:
        c = self.config
        margin = self._velocity_margin(max(draws.amplitudes))
        velocities = torch.stack([self._velocity(draws, k, margin, device) for k in range(2)])
        flows = integrate_svf(torch.cat([velocities, -velocities[1:]]), c.integration_steps)
        fields = self._pair_transforms(flows, margin)
        low, high = self._window(fields[:2])

        base = self._base_labels(draws.label_gradients.to(device), low, high)
        offset = [-v for v in low]
        labels = []
        for coarse, factor in fields[:2]:
            # one full-resolution channel at a time: the float32 warps are never materialised
            channels = (upsample_displacement(coarse[axis:axis + 1], factor, pad=1)[0]
                        for axis in range(3))
            index, _ = nearest_index(channels, base.shape, offset=offset)
            labels.append(base.flatten().index_select(0, index.flatten()).view(index.shape))
        images = self._images(draws, labels)
        transform, factor = fields[2]
        sample = {
            "fixed": images[0], "moving": images[1],
            "fixed_labels": labels[0], "moving_labels": labels[1],
            "displacement": upsample_displacement(transform, factor, pad=1, dtype=torch.float16),
        }
        if with_warps:
            sample["fixed_warp"], sample["moving_warp"] = (
                upsample_displacement(coarse, factor, pad=1) for coarse, factor in fields[:2])
        return sample

    def _pair_transforms(self, flows: torch.Tensor, margin: int) -> list[tuple[torch.Tensor, int]]:
        """phi_1, phi_2 and the stored transform on coarse grids, from the integrated flows.

        The transform ``phi_2^-1 o phi_1`` and ``phi_1 := phi_2 o transform`` are composed on
        a grid ``refine`` times finer than the velocity grid (2 by default: 2-voxel spacing).
        On the velocity grid itself (4-voxel spacing) the largest amplitudes compress and
        stretch tissue within a single cell, and trilinear interpolation of the composed field
        then folds about once in 80 pairs at amplitude 18; at half the spacing no fold appeared
        in 730 pairs. Re-deriving phi_1 from phi_2 and the transform makes the stored
        transform exact for the rendered pair (``moving(x + u(x)) = fixed(x)`` up to trilinear
        interpolation) instead of exact for exp(v_1) alone; the two differ by the integration
        error of ``exp(-v_2) o exp(v_2) = id`` (mean ~0.3 voxel at amplitude 18).

        Args:
            flows: (3, 3, n, n, n) coarse displacements exp(v_1), exp(v_2), exp(-v_2) on the
                velocity grid extended by ``margin`` nodes per side, in velocity-grid voxels.

        Returns:
            ``(field, factor)`` for phi_1, phi_2 and the transform: (3, n', n', n') float32
            displacements in their grid's voxels, with one node per side beyond the volume,
            and the factor that ``upsample_displacement(field, factor, pad=1)`` takes them to
            full resolution with.
        """
        c = self.config
        f, m = c.velocity_grid_factor, c.size // c.velocity_grid_factor
        refine = 2 if f % 2 == 0 else 1
        u1, u2, u2_inverse = flows[0], flows[1], flows[2]
        # velocity-grid nodes -2 .. m+1 -> refined nodes of the volume plus one per side
        fine_nodes = slice(refine - 1, refine * (m + 1) + 1)
        crop = slice(margin - 2, margin + m + 2)
        u1_refined = upsample_displacement(u1[:, crop, crop, crop], refine, pad=1)
        u1_refined = u1_refined[:, fine_nodes, fine_nodes, fine_nodes]
        # refined node i (of that crop) sits at velocity-grid node (i - 1 + 1/2) / refine - 1/2
        to_coarse = {"scale": 1.0 / refine, "offset": [margin - 0.5 - 0.5 / refine] * 3}
        transform = u1_refined + refine * warp(u2_inverse, u1_refined, **to_coarse)
        phi1 = transform + refine * warp(u2, transform, **to_coarse)
        crop = slice(margin - 1, margin + m + 1)
        return [(phi1, f // refine), (u2[:, crop, crop, crop], f), (transform, f // refine)]

    def _velocity(self, draws: _Draws, k: int, margin: int, device: torch.device) -> torch.Tensor:
        """Velocity field k on the velocity grid extended by ``margin`` nodes per side,
        (3, m + 2*margin, ...) float32, in velocity-grid voxels."""
        coords = [self._velocity_coords(margin)] * 3
        scale = draws.amplitudes[k] / self.config.velocity_grid_factor
        components = [fractal_noise([g.to(device) for g in lattices], coords, lacunarity=LACUNARITY,
                                    persistence=PERSISTENCE)[0]
                      for lattices in draws.velocity_gradients[k]]
        return torch.stack(components).mul_(scale)

    def _window(self, fields: list[tuple[torch.Tensor, int]]) -> tuple[list[int], list[int]]:
        """Per-axis integer voxel range [low, high] containing the volume and every x + u(x).

        Args:
            fields: ``(coarse displacement, factor)`` pairs whose upsampling gives the warps;
                upsampled values are convex combinations of the coarse ones (times the
                factor), so their min/max bound the warps too.
        """
        size, margin = self.config.size, self._margin()
        lows, highs = [], []
        for axis in range(3):
            least = min(float(u[axis].amin()) * factor for u, factor in fields)
            most = max(float(u[axis].amax()) * factor for u, factor in fields)
            lows.append(max(-margin, min(0, math.floor(least))))
            highs.append(min(size - 1 + margin, size - 1 + max(0, math.ceil(most))))
        return lows, highs

    def _base_labels(self, gradients: torch.Tensor, low: list[int], high: list[int]) -> torch.Tensor:
        """The base label map on the voxel window [low, high], (D', H', W') uint8.

        Noise node j sits at voxel ``j * label_grid_factor``, at lattice coordinate
        ``(j - first) * label_grid_factor / period``. The noise is evaluated on every node of
        the a priori extent (a few thousand), min-max scaled per channel over the nodes covering
        the volume itself (as the published code scales over its volume), and only then cropped
        to the window: the labels are one field, identical on any window.
        """
        c = self.config
        step, period = c.label_grid_factor, self._label_period()
        first, last = self._label_nodes()
        coords = (torch.arange(first, last + 1, dtype=torch.float64) - first) * (step / period)
        noise = perlin_noise(gradients, [coords] * 3)
        core = slice(-first, -first + math.ceil((c.size - 1) / step) + 1)
        volume_nodes = noise[:, core, core, core].reshape(c.num_labels, -1)
        n_min = volume_nodes.amin(dim=1).view(-1, 1, 1, 1)
        n_max = volume_nodes.amax(dim=1).view(-1, 1, 1, 1)
        noise = (noise - n_min) / (n_max - n_min).clamp_(min=1e-12)
        value_range = (float(noise.amin()), float(noise.amax()))
        crops, samplings = [], []
        for lo, hi in zip(low, high):
            a, b = math.floor(lo / step), math.ceil(hi / step)
            crops.append(slice(a - first, b - first + 1))
            samplings.append(Sampling((lo - a * step) / step, step, hi - lo + 1))
        return argmax_upsampled(noise[:, crops[0], crops[1], crops[2]], samplings, value_range)

    def _images(self, draws: _Draws, labels: list[torch.Tensor]) -> list[torch.Tensor]:
        """intensity[label] for both images, min-max scaled to [0, 1] over the labels present
        (in either image when both share a table), as float16."""
        n = self.config.num_labels
        present = [torch.bincount(lab.flatten(), minlength=n).cpu() > 0 for lab in labels]
        if draws.shared_table:
            present = [present[0] | present[1]] * 2
        images = []
        for table, mask, lab in zip(draws.tables, present, labels):
            lo, hi = table[mask].min(), table[mask].max()
            scaled = (table - lo) / (hi - lo) if hi > lo else torch.zeros_like(table)
            lookup = scaled.to(lab.device, torch.float16)
            images.append(lookup.index_select(0, lab.flatten().to(torch.int32)).view(lab.shape))
        return images
