"""Procedural organ-like binary shapes for the default template bank (no download needed).

Six families, sized like TotalSegmentator organs at 1.5 mm in a 128^3 field of view (every
side 3-100 voxels):

- ``blob``: an ellipsoid (semi-axes 6-38 voxels), optionally bent, deformed by Perlin noise
  (kidney, spleen, bladder, muscle-like);
- ``lobed``: a union of 2-5 noisy ellipsoids around a centre (liver, lung, brain-like);
- ``tube``: a curved tube of slowly varying radius 1.5-6 voxels along a random smooth curve,
  sometimes with one branch (vessel, oesophagus, bowel-like);
- ``spine``: a chain of separate vertebra-like segments (a waisted cylindrical body plus a
  process beside it) along a gently swaying axis, like TotalSegmentator's all_vertebrae;
- ``shell``: a hollow noisy ellipsoidal shell 2-4.5 voxels thick, either striped into rib-like
  bands with an anterior gap (rib-cage-like) or an open hull;
- ``plate``: a thin curved sheet 2-5 voxels thick with a noisy elliptical outline (diaphragm,
  scapula, hip-bone-like).

Axes follow TotalSegmentator masks in RAS-like voxel order where it matters: spines and rib
bands run along axis 2 (superior-inferior); processes, anterior gaps and the thin side of
plates point along axis 1.

Each shape is a pure function of (SEED, family, index): numpy draws from
``default_rng([SEED, family number, index])`` and Perlin gradients from a torch generator
seeded the same way, so the bank has the same bytes at every build. Implicit functions are
evaluated on whole grids with torch (Perlin noise at half resolution, trilinearly upsampled:
it is smooth over >= 8 voxels); tubes use one Euclidean distance transform each. Bump
GENERATOR_VERSION whenever any output changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from synthgen.ops.perlin import fractal_noise, random_octave_gradients
from synthgen.templates.masks import crop

GENERATOR_VERSION = 1
SEED = 20240617
MAX_SIDE = 100
MIN_VOXELS = 64
MIN_SIDE = 3
Shape = Callable[[np.random.Generator, torch.Generator], np.ndarray]


def smooth_noise(shape: Sequence[int], wavelength: float, generator: torch.Generator) -> torch.Tensor:
    """Two-octave Perlin noise with base ``wavelength`` voxels on a (D, H, W) grid.

    Returns:
        (D, H, W) float32 tensor, typically within [-1, 1] (the raw noise times 2).
    """
    coarse = [n // 2 + 2 for n in shape]
    coords = [torch.arange(m, dtype=torch.float32) * (2.0 / wavelength) for m in coarse]
    lattices = random_octave_gradients(1, [float(c[-1]) for c in coords], 2, generator)
    noise = fractal_noise(lattices, coords)
    fine = F.interpolate(noise[None], size=[2 * m - 1 for m in coarse], mode="trilinear", align_corners=True)
    return 2.0 * fine[0, 0, :shape[0], :shape[1], :shape[2]]


def centred_axes(shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxel coordinates relative to the grid centre, as broadcastable (D,1,1), (1,H,1), (1,1,W)
    float32 tensors."""
    axes = [torch.arange(n, dtype=torch.float32) - (n - 1) / 2.0 for n in shape]
    return axes[0].view(-1, 1, 1), axes[1].view(1, -1, 1), axes[2].view(1, 1, -1)


def box(extent: Sequence[float]) -> tuple[int, int, int]:
    """Grid shape holding half-extents ``extent`` (voxels) plus a margin, at most MAX_SIDE."""
    return tuple(min(MAX_SIDE, int(math.ceil(2 * e)) + 4) for e in extent)  # type: ignore[return-value]


def ellipsoid_level(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, radii: Sequence[float]) -> torch.Tensor:
    """sqrt((z/rz)^2 + (y/ry)^2 + (x/rx)^2): < 1 inside the ellipsoid."""
    return ((z / radii[0]) ** 2 + (y / radii[1]) ** 2 + (x / radii[2]) ** 2).sqrt()


def blob(rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
    radii = rng.uniform(6.0, 38.0, 3)
    amplitude = rng.uniform(0.08, 0.3)
    bend = rng.uniform(-0.5, 0.5) if rng.random() < 0.5 else 0.0
    shape = box(radii * (1 + amplitude) + abs(bend) * radii.max())
    z, y, x = centred_axes(shape)
    x = x - bend * radii[2] * (z / radii[0]) ** 2  # bent like a kidney or a bladder dome
    level = ellipsoid_level(z, y, x, radii)
    level = level + amplitude * smooth_noise(shape, rng.uniform(0.6, 1.2) * radii.mean(), generator)
    return (level < 1).numpy()


def lobed(rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
    size = rng.uniform(15.0, 34.0)
    lobes = int(rng.integers(2, 6))
    centres = rng.normal(size=(lobes, 3))
    centres *= (rng.uniform(0.3, 0.8, lobes) * size / np.linalg.norm(centres, axis=1))[:, None]
    radii = rng.uniform(0.45, 0.85, (lobes, 3)) * size
    amplitude = rng.uniform(0.08, 0.25)
    shape = box(np.abs(centres).max(axis=0) + radii.max(axis=0) * (1 + amplitude))
    z, y, x = centred_axes(shape)
    level = torch.stack([ellipsoid_level(z - c[0], y - c[1], x - c[2], r).expand(shape)
                         for c, r in zip(centres.tolist(), radii.tolist())]).amin(dim=0)
    level = level + amplitude * smooth_noise(shape, rng.uniform(0.5, 1.0) * size, generator)
    return (level < 1).numpy()


def _curve(rng: np.random.Generator, length: float, samples: int, wiggle: float) -> np.ndarray:
    """(samples, 3) points of a smooth random curve about ``length`` long through the origin."""
    basis = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    t = np.linspace(-0.5, 0.5, samples)[:, None]
    amplitude = rng.uniform(0.0, wiggle, 2) * length
    frequency = rng.uniform(0.3, 1.5, 2)
    phase = rng.uniform(0.0, 2 * np.pi, 2)
    sideways = amplitude * np.sin(2 * np.pi * frequency * t + phase)
    return t * length * basis[0] + sideways[:, :1] * basis[1] + sideways[:, 1:] * basis[2]


def _rasterise_tubes(points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Union of balls of ``radii`` (n,) around ``points`` (n, 3) voxels, as a bool grid: every
    voxel within its nearest centre point's radius (one distance transform). Points are
    shifted to the grid and scaled down if the union would exceed MAX_SIDE."""
    reach = radii.max() + 2
    low, high = points.min(axis=0) - reach, points.max(axis=0) + reach
    scale = min(1.0, (MAX_SIDE - 1) / (high - low).max())
    points, radii = (points - low) * scale, radii * scale
    shape = tuple(int(n) for n in np.ceil((high - low) * scale) + 1)
    index = tuple(np.round(points).astype(np.intp).T)
    radius = np.zeros(shape, dtype=np.float32)
    np.maximum.at(radius, index, radii.astype(np.float32))
    distance, nearest = ndimage.distance_transform_edt(radius == 0, return_indices=True)
    return distance <= radius[tuple(nearest)]


def tube(rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
    length = rng.uniform(30.0, 110.0)
    samples = int(3 * length)
    points = _curve(rng, length, samples, 0.25)
    t = np.linspace(0.0, 1.0, samples)
    radii = rng.uniform(1.5, 6.0) * (1 - rng.uniform(0.0, 0.4) * t) * (
        1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t + rng.uniform(0, 2 * np.pi)))
    if rng.random() < 0.4:  # one branch, like an arterial bifurcation
        start = int(rng.integers(samples // 3, samples))
        branch = _curve(rng, rng.uniform(0.3, 0.6) * length, samples // 2, 0.15)
        branch = branch - branch[0] + points[start]
        points = np.concatenate([points, branch])
        radii = np.concatenate([radii, np.full(len(branch), radii[start] * rng.uniform(0.5, 0.8))])
    return _rasterise_tubes(points, radii)


def spine(rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
    length = rng.uniform(50.0, 110.0)
    body = rng.uniform(4.0, 8.0)  # vertebral body radius
    offset, process = body * rng.uniform(1.2, 1.6), body * rng.uniform(0.3, 0.5)
    sway = rng.uniform(0.0, 0.12) * length
    shape = box([length / 2, sway + offset + process + 1, body + 1])
    z, y, x = centred_axes(shape)
    y = y - sway * torch.sin(2 * np.pi * rng.uniform(0.4, 1.0) * z / length + rng.uniform(0, 2 * np.pi))
    duty = rng.uniform(0.6, 0.8)  # the rest of each period is the intervertebral gap
    phase = ((z / length + 0.5) * rng.uniform(5.0, 12.0) + rng.uniform(0.0, 1.0)) % 1.0
    radius = body * (0.85 + 0.15 * torch.sin(np.pi * phase / duty))  # waisted bodies
    bodies = y ** 2 + x ** 2 < radius ** 2
    processes = ((y - offset) / process) ** 2 + (x / (0.8 * process)) ** 2 < 1
    return ((bodies | processes) & (phase < duty)).permute(2, 1, 0).numpy()  # column along axis 2


def shell(rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
    radii = np.array([rng.uniform(25.0, 48.0), rng.uniform(22.0, 38.0), rng.uniform(30.0, 48.0)])
    thickness = rng.uniform(2.0, 4.5)
    shape = box(radii + thickness)
    z, y, x = centred_axes(shape)
    level = ellipsoid_level(z, y, x, radii)
    level = level + rng.uniform(0.02, 0.06) * smooth_noise(shape, rng.uniform(0.5, 1.0) * radii.mean(), generator)
    slope = ((z / radii[0] ** 2) ** 2 + (y / radii[1] ** 2) ** 2 + (x / radii[2] ** 2) ** 2).sqrt()
    distance = (level - 1).abs() * level / slope.clamp(min=1e-6)  # ~ normal distance to the surface
    keep = (distance < thickness / 2) & (z.abs() < rng.uniform(0.6, 0.9) * radii[0])
    if rng.random() < 0.6:  # rib-like bands sloping downwards towards the front, open at the front
        period = rng.uniform(10.0, 16.0)
        bands = torch.cos(2 * np.pi * (z + rng.uniform(0.2, 0.6) * y) / period + rng.uniform(0, 2 * np.pi))
        keep &= bands > rng.uniform(0.0, 0.4)
        keep &= ~((y > 0.5 * radii[1]) & (x.abs() < rng.uniform(0.1, 0.3) * radii[2]))
    return keep.permute(2, 1, 0).numpy()  # bands stacked along axis 2


def plate(rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
    radii = rng.uniform(12.0, 48.0, 2)
    thickness = rng.uniform(2.0, 5.0)
    height = rng.uniform(2.0, 10.0)
    bend = rng.uniform(-0.3, 0.3) * radii.min()
    shape = box([height + abs(bend) + thickness, radii[0] * 1.15, radii[1] * 1.15])
    z, y, x = centred_axes(shape)
    surface = height * smooth_noise((1, *shape[1:]), rng.uniform(0.6, 1.2) * radii.mean(), generator)
    surface = surface + bend * ((y / radii[0]) ** 2 + (x / radii[1]) ** 2)
    outline = (y / radii[0]) ** 2 + (x / radii[1]) ** 2 + 0.3 * smooth_noise(
        (1, *shape[1:]), rng.uniform(0.3, 0.6) * radii.mean(), generator)
    sheet = ((z - surface + bend / 2).abs() < thickness / 2) & (outline < 1)
    return sheet.permute(1, 0, 2).numpy()  # thin along axis 1, like a scapula


FAMILIES: dict[str, tuple[Shape, int]] = {
    "blob": (blob, 64), "lobed": (lobed, 56), "tube": (tube, 56),
    "spine": (spine, 32), "shell": (shell, 48), "plate": (plate, 56),
}


def family_masks(family: str) -> list[np.ndarray]:
    """The masks of one family, in index order: tight bool (d, h, w) crops with every side in
    MIN_SIDE..MAX_SIDE and at least MIN_VOXELS voxels (a draw that misses is redrawn from the
    same random stream, so the result stays deterministic)."""
    make, count = FAMILIES[family]
    number = list(FAMILIES).index(family)
    masks = []
    for index in range(count):
        rng = np.random.default_rng([SEED, number, index])
        generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        while True:
            mask = crop(make(rng, generator))
            if mask is not None and mask.sum() >= MIN_VOXELS and min(mask.shape) >= MIN_SIDE:
                break
        masks.append(mask)
    return masks
