"""A re-implementation of the published anatomix synthetic-data pipeline, for timing only.

anatomix (Dey et al., neel-dey/anatomix ``synthetic-data-generation``) makes its training data
offline in two steps: step 1 (``generate_label_ensemble``) builds one 128^3 uint8 label map from
20-39 binary templates, step 2 (``process_volume``) renders two appearance views of it. This
module rewrites both from the description in /work/shared/reference/engines.md §1 (written
before the repository could be fetched here; the ``fetch`` tool now brings neel-dey/anatomix to
check it against) so that ``benchmarks.engine_throughput`` can time the published
algorithm next to synthgen's label-ensemble engine in the same process and report a ratio. It
keeps the published algorithmic choices, data types and library calls, because their cost is what
is being measured, and it keeps the published quirks (first template painted as background 0,
rotation about the corner with grid-wrap, corner ROI, per-label boolean-mask GMM loop). Do not use
it to make data: synthgen's engine is the implementation, this is the yardstick.

Step 1, :func:`published_label_map`, per template: ``nib.load(path).get_fdata()`` (float64) cast
to uint8, ``crop_and_pad_3d_volume`` (``np.where`` bounding box on the whole volume, symmetric
zero padding to >= 128 per axis), ``apply_random_affine_transform`` (S·R·Sh with scale U(0.5, 1.5)
and reflection p = 0.5 per axis, rotation U(-180, 180) deg per axis, shear U(-0.5, 0.5), translation
U(-5, 5) voxels, ``scipy.ndimage.affine_transform(order=0, mode='grid-wrap', cval=0)`` over the
whole padded volume), corner ROI ``[:128, :128, :128]``, ``label[roi > 0] = k`` for k = 0, 1, ...;
then ``skimage.filters.median``; with p = 2/3 ``sample_corruption`` (sphere of radius
randint(48, 72) shifted by randint(-32, 32), Perlin-like displacement at scales (8, 16, 32) with
std U(1, 5) upsampled trilinearly, ``grid_sample(mode='nearest', padding_mode='reflection')``),
median of the mask, labels outside 0 and inside + 1, and with p = 1/2 an envelope
``dilation(mask, ball(r)) & ~erosion(mask, ball(r))``, r in {2, 3, 4}, labelled max + 1.

Step 2, :func:`published_views`, per view: per unique label mean U(25, 255) and std U(5, 20),
background left at 0 with p = 0.25, each label's voxels drawn N(mean, std^2) through a boolean
mask (the loop); clip at 0, min-max to [0, 1]; ``view *= 1 + 0.02 * perlin`` with Perlin-like noise
at scales (4, 8, 16, 32), std U(0, 5), upsampled trilinearly; then the published MONAI ``Compose``
(ScaleIntensityd, RandBiasFieldd p=0.98 coeff (0, 0.075), RandKSpaceSpikeNoised p=0.2,
RandAdjustContrastd p=0.5 gamma (0.5, 2), RandGaussianSmoothd p=0.5 sigma (0, 0.333),
RandGibbsNoised p=0.5 alpha (0, 0.333), RandGaussianSharpend p=0.25, RandSimulateLowResolutiond
p=0.333 zoom (0.5, 1) nearest-exact/trilinear, ThresholdIntensityd above 0, ScaleIntensityd).

Templates: the published code reads TotalSegmentator masks (256^3-ish uint8 ``.nii.gz``) by path
for every template it places. :func:`write_published_templates` writes masks of synthgen's
default procedural bank that way once: each (d, h, w) crop is padded into a 256^3 uint8 volume at
a random position, 1.5 mm affine, like the 256^3 substitute templates the reference timing used.
``published_label_map`` then loads them by path every time, as the original does.

Deviations (unknown details filled in, or choices forced by the setting):

- Random numbers come from one ``np.random.RandomState`` passed in (MONAI via
  ``Compose.set_random_state``; torch noise from a ``torch.Generator`` seeded from it) instead
  of the global numpy/torch/random state reseeded per task.
- The notes do not say whether the affine is taken about the volume centre; it is applied as
  described (matrix S·R·Sh, offset = translation), i.e. about the corner. The cost is the same.
- "Redraw if empty" is a ``vol.any()`` check after loading.
- ``sample_corruption`` builds its identity grid with ``F.affine_grid`` (align_corners=True) and
  converts voxel displacements by 2 / (side - 1); the mask median runs on uint8.
- No NIfTI is written (step 1's save, ~0.02 s) and step 2 neither reads the label map from disk
  nor saves the views (~0.12 s per pair): synthgen's engine timing excludes storage too, so
  leaving these out only makes the published pipeline look faster.
- The default bank's templates are at most ~95 voxels per axis, so every padded template is
  exactly 128^3; real TotalSegmentator masks (liver, ribs, vertebrae at 1.5 mm) are often larger,
  which makes the published crop and affine costlier. This too favours the published side.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Union

import nibabel as nib
import numpy as np
import scipy.ndimage
import skimage.filters
import skimage.morphology
import torch
import torch.nn.functional as F

TemplateSource = Union[str, "os.PathLike[str]", np.ndarray]

SIDE_LENGTH = 128
TEMPLATE_VOLUME = 256
TEMPLATE_SPACING = 1.5


# -- templates on disk --------------------------------------------------------------------------

def write_published_templates(out_dir: str, count: int, rng: np.random.RandomState,
                              volume: int = TEMPLATE_VOLUME, spacing: float = TEMPLATE_SPACING) -> list[str]:
    """Write ``count`` distinct templates of synthgen's default bank as uint8 ``.nii.gz`` files
    of ``volume``^3 voxels (the crop at a random position, ``spacing`` mm affine) into
    ``out_dir``, as TotalSegmentator-style binary masks; returns their paths."""
    from synthgen.templates import default_bank

    bank = default_bank()
    ids = rng.choice(len(bank), size=min(count, len(bank)), replace=False)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    paths = []
    for n, i in enumerate(sorted(int(i) for i in ids)):
        mask = bank.mask(i)
        mask = mask[tuple(slice(0, min(s, volume)) for s in mask.shape)]
        full = np.zeros((volume,) * 3, dtype=np.uint8)
        start = [rng.randint(0, volume - s + 1) for s in mask.shape]
        full[tuple(slice(a, a + s) for a, s in zip(start, mask.shape))] = mask
        path = os.path.join(out_dir, f"template{n:03d}_bank{i:04d}.nii.gz")
        nib.save(nib.Nifti1Image(full, affine), path)
        paths.append(path)
    return paths


def _load_template(source: TemplateSource) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source.astype(np.uint8)
    return nib.load(os.fspath(source)).get_fdata().astype(np.uint8)


# -- step 1 -------------------------------------------------------------------------------------

def crop_and_pad_3d_volume(volume: np.ndarray, target: int = SIDE_LENGTH) -> np.ndarray:
    """Crop to the non-zero bounding box (``np.where`` on the whole volume), then zero-pad
    symmetrically to at least ``target`` per axis."""
    nonzero = np.where(volume != 0)
    lo = [int(np.min(ix)) for ix in nonzero]
    hi = [int(np.max(ix)) + 1 for ix in nonzero]
    cropped = volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    pad = []
    for s in cropped.shape:
        extra = max(target - s, 0)
        pad.append((extra // 2, extra - extra // 2))
    return np.pad(cropped, pad, mode="constant", constant_values=0)


def apply_random_affine_transform(volume: np.ndarray, rng: np.random.RandomState, rscale: float = 0.5,
                                  rrotation: float = 180.0, rtranslation: float = 5.0, rshear: float = 0.5,
                                  reflect_prob: float = 0.5, mode: str = "grid-wrap") -> np.ndarray:
    """Matrix S·R·Sh (R = Rx·Ry·Rz) plus a translation, nearest-neighbour, wrapping at the edges."""
    scale = rng.uniform(1 - rscale, 1 + rscale, size=3)
    scale = np.where(rng.rand(3) < reflect_prob, -scale, scale)
    ax, ay, az = np.deg2rad(rng.uniform(-rrotation, rrotation, size=3))
    translation = rng.uniform(-rtranslation, rtranslation, size=3)
    shear = rng.uniform(-rshear, rshear, size=3)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    sh = np.array([[1, shear[0], shear[1]], [0, 1, shear[2]], [0, 0, 1]])
    matrix = np.diag(scale) @ (rx @ ry @ rz) @ sh
    return scipy.ndimage.affine_transform(volume, matrix, offset=translation, order=0, mode=mode, cval=0)


def draw_perlin_deformation(side: int, generator: torch.Generator, rng: np.random.RandomState,
                            scales: Sequence[int] = (8, 16, 32), min_std: float = 1.0,
                            max_std: float = 5.0) -> torch.Tensor:
    """(1, 3, side, side, side) displacement in voxels: per scale, Gaussian noise on a
    ceil(side/scale)^3 grid with std U(min_std, max_std), trilinearly upsampled, summed."""
    field = torch.zeros((1, 3, side, side, side))
    for scale in scales:
        std = rng.uniform(min_std, max_std)
        coarse = torch.randn((1, 3) + (math.ceil(side / scale),) * 3, generator=generator) * std
        field += F.interpolate(coarse, size=(side,) * 3, mode="trilinear", align_corners=False)
    return field


def sample_corruption(side: int, generator: torch.Generator, rng: np.random.RandomState) -> np.ndarray:
    """Perlin-deformed sphere mask (uint8 0/1), direct displacement, nearest/reflection."""
    size_ratio = side / SIDE_LENGTH
    radius = rng.randint(48, 72) * size_ratio
    centre = side / 2 + rng.randint(-32, 32, size=3) * size_ratio
    zz, yy, xx = np.meshgrid(*(np.arange(side, dtype=np.float32),) * 3, indexing="ij")
    sphere = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= radius ** 2
    displacement = draw_perlin_deformation(side, generator, rng)
    identity = F.affine_grid(torch.eye(3, 4)[None], [1, 1, side, side, side], align_corners=True)
    grid = identity + displacement.permute(0, 2, 3, 4, 1).flip(-1) * (2.0 / (side - 1))
    warped = F.grid_sample(torch.from_numpy(sphere)[None, None].float(), grid, mode="nearest",
                           padding_mode="reflection", align_corners=True)
    return warped[0, 0].numpy().astype(np.uint8)


def published_label_map(template_paths_or_masks: Sequence[TemplateSource], rng: np.random.RandomState,
                         side_length: int = SIDE_LENGTH, min_templates: int = 20,
                         max_templates: int = 40, draws: dict | None = None) -> np.ndarray:
    """One label map by the published step 1 (``generate_label_ensemble``): uint8 side^3.

    ``template_paths_or_masks``: NIfTI paths (loaded with ``get_fdata()`` every time, as
    published) or in-memory masks (then the load is skipped). ``draws``, if given, receives
    ``n_templates`` and ``masked`` (template k is painted k, so 1..n - 1 hold templates, 2..n in a
    masked map)."""
    generator = torch.Generator().manual_seed(int(rng.randint(2 ** 31)))
    n_templates = rng.randint(min_templates, max_templates)
    label = np.zeros((side_length,) * 3, dtype=np.uint8)
    for k in range(n_templates):
        while True:
            volume = _load_template(template_paths_or_masks[rng.randint(len(template_paths_or_masks))])
            if volume.any():
                break
        volume = crop_and_pad_3d_volume(volume, side_length)
        volume = apply_random_affine_transform(volume, rng)
        roi = volume[:side_length, :side_length, :side_length]
        label[roi > 0] = k
    label = skimage.filters.median(label)
    masked = rng.rand() > 0.33333
    if masked:
        mask = skimage.filters.median(sample_corruption(side_length, generator, rng)) > 0
        label[~mask] = 0
        label[mask] += 1
        if rng.rand() > 0.5:
            footprint = skimage.morphology.ball(int(rng.choice([2, 3, 4])))
            shell = skimage.morphology.dilation(mask, footprint) & ~skimage.morphology.erosion(mask, footprint)
            label[shell] = label.max() + 1
    if draws is not None:
        draws.update(n_templates=n_templates, masked=bool(masked))
    return label


# -- step 2 -------------------------------------------------------------------------------------

def sample_gmm(label: np.ndarray, means: np.ndarray, stds: np.ndarray, rng: np.random.RandomState,
               background_zero_prob: float = 0.25) -> np.ndarray:
    """Per unique label, its voxels (boolean mask) ~ N(mean, std^2); the first label stays 0 with
    probability ``background_zero_prob``."""
    out = np.zeros(label.shape, dtype=np.float32)
    zero_background = rng.rand() < background_zero_prob
    for i, value in enumerate(np.unique(label)):
        if i == 0 and zero_background:
            continue
        mask = label == value
        out[mask] = rng.normal(means[i], stds[i], size=int(mask.sum()))
    return out


def draw_perlin_volume(side: int, generator: torch.Generator, rng: np.random.RandomState,
                       scales: Sequence[int] = (4, 8, 16, 32), max_std: float = 5.0) -> np.ndarray:
    """Per scale, Gaussian noise at side/scale with std U(0, max_std), upsampled x scale, summed."""
    total = torch.zeros((1, 1, side, side, side))
    for scale in scales:
        std = rng.uniform(0, max_std)
        coarse = torch.randn((1, 1) + (side // scale,) * 3, generator=generator) * std
        total += F.interpolate(coarse, scale_factor=scale, mode="trilinear", align_corners=False)
    return total[0, 0].numpy()


_TRANSFORMS = None


def get_transforms():
    """The published MONAI pipeline (built once, like ``get_transforms()``)."""
    global _TRANSFORMS
    if _TRANSFORMS is None:
        import monai.transforms as mt

        keys = ["image"]
        sigma = (0.0, 0.333)
        _TRANSFORMS = mt.Compose([
            mt.ScaleIntensityd(keys=keys),
            mt.RandBiasFieldd(keys=keys, prob=0.98, coeff_range=(0.0, 0.075)),
            mt.RandKSpaceSpikeNoised(keys=keys, prob=0.2),
            mt.RandAdjustContrastd(keys=keys, prob=0.5, gamma=(0.5, 2.0)),
            mt.RandGaussianSmoothd(keys=keys, prob=0.5, sigma_x=sigma, sigma_y=sigma, sigma_z=sigma),
            mt.RandGibbsNoised(keys=keys, prob=0.5, alpha=(0.0, 0.333)),
            mt.RandGaussianSharpend(keys=keys, prob=0.25),
            mt.RandSimulateLowResolutiond(keys=keys, prob=0.333, zoom_range=(0.5, 1.0),
                                          downsample_mode="nearest-exact", upsample_mode="trilinear"),
            mt.ThresholdIntensityd(keys=keys, above=True, threshold=0),
            mt.ScaleIntensityd(keys=keys),
        ])
    return _TRANSFORMS


def published_views(label_map: np.ndarray, rng: np.random.RandomState,
                    means_range: tuple[float, float] = (25, 255), stds_range: tuple[float, float] = (5, 20),
                    perl_mult_factor: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Two views by the published step 2 (``process_volume``, without the NIfTI read and the
    saves): float32 arrays in [0, 1] shaped like ``label_map``."""
    generator = torch.Generator().manual_seed(int(rng.randint(2 ** 31)))
    transforms = get_transforms()
    transforms.set_random_state(state=rng)
    n_labels = len(np.unique(label_map))
    views = []
    for _ in range(2):
        means = rng.uniform(*means_range, size=n_labels)
        stds = rng.uniform(*stds_range, size=n_labels)
        view = np.clip(sample_gmm(label_map, means, stds, rng), 0, None)
        view = (view - view.min()) / (view.max() - view.min())
        view = view * (1 + perl_mult_factor * draw_perlin_volume(label_map.shape[0], generator, rng))
        out = transforms({"image": view[None]})["image"]
        views.append(np.asarray(out[0].detach().cpu().numpy() if torch.is_tensor(out) else out[0]))
    return views[0], views[1]
