"""Label ensembles: Algorithm 1 of Dey et al. (anatomix), as device-agnostic torch kernels.

One label map from binary shape templates:

1. Place each chosen template with a random affine about its centre, the centre at a uniformly
   random position over the volume, labels k + 1 in painting order, later templates
   overwriting earlier ones (:mod:`synthgen.ops.affine_placement`).
2. Median-smooth the label map over a 3x3x3 cube (a median of label values, exactly
   ``skimage.filters.median`` as published; :func:`synthgen.ops.morphology.median3`).
3. With p = 2/3 mask it with a deformed sphere (labels + 1 inside, 0 outside) and, with p = 1/2
   within that branch, add an envelope label around the mask (:mod:`synthgen.ops.foreground`).

Randomness is separate from computation: ``sample_*`` functions draw every random number on the
CPU from a ``torch.Generator`` into frozen dataclasses (Python numbers, small CPU tensors);
``render_label_map`` is deterministic and runs on any device. A caller (the label-ensemble
engine) draws which templates to use with :func:`sample_template_choice`, then the parameters
with :func:`sample_label_ensemble_params`, and may record or override them.

Deviations from the published code are listed in the docstrings of the three modules above; in
short: templates are placed once each, about their centre, at a uniform position, with no
wrap-around copies (spread over the volume as the published copies are) and labels start at 1 (the
published code paints the first template as background), only the region a template can reach
is computed, integer ranges are inclusive (paper notation), all lengths scale with
``size / 128`` and the envelope label is ``n_templates + 2``. Labels are uint8, or uint16 when
more than 255 labels are possible.

Cost at 128^3, one CPU thread, 30 templates of 40-80 voxels per side (CPU-s, median of 12;
``SYNTHGEN_TIMING=1 pytest tests/test_label_synthesis.py -k timing -s``): placement ~0.06,
median ~0.011, foreground mask ~0.015, masking + envelope (r = 4) ~0.01; a whole masked and
enveloped map ~0.1 s, against 10.7 s for the published step 1. Everything is elementwise
integer/float arithmetic, gathers and min/max, so results do not depend on the thread count;
the placement and the median are integer-exact on every device (the foreground mask goes through
float32 interpolation, where another device could round a tie differently).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from synthgen.ops.affine_placement import (PlacementConfig, PlacementParams, paint_template,
                                           place_templates, placement_box, placement_slabs,
                                           prepare_template, sample_placement_params)
from synthgen.ops.foreground import (ForegroundConfig, ForegroundParams, apply_foreground,
                                     deformation_field, deformed_sphere, foreground_mask,
                                     sample_foreground_params)
from synthgen.ops.morphology import binary_median3, dilate_ball, envelope, erode_ball, median3

__all__ = [
    "ForegroundConfig", "ForegroundParams", "LabelEnsembleConfig", "LabelEnsembleParams",
    "PlacementConfig", "PlacementParams", "apply_foreground", "binary_median3",
    "deformation_field", "deformed_sphere", "dilate_ball", "envelope", "erode_ball",
    "foreground_mask", "label_dtype", "median3", "paint_template", "place_templates",
    "placement_box", "placement_slabs", "prepare_template", "render_label_map",
    "sample_foreground_params", "sample_label_ensemble_params", "sample_placement_params",
    "sample_template_choice", "synthesize_label_map",
]


@dataclasses.dataclass(frozen=True)
class LabelEnsembleConfig:
    """Every probability and range of Algorithm 1 (published defaults).

    Attributes:
        placement: ranges of the per-template affine.
        foreground: foreground mask and envelope parameters.
        median: median-smooth the placed templates (Algorithm 1, line 8).
    """

    placement: PlacementConfig = PlacementConfig()
    foreground: ForegroundConfig = ForegroundConfig()
    median: bool = True


@dataclasses.dataclass(frozen=True)
class LabelEnsembleParams:
    """Every random draw of one label map, given its templates.

    Attributes:
        placements: one affine per template, in painting order.
        foreground: the foreground mask (``masked=False`` for an unconstrained map).
    """

    placements: tuple[PlacementParams, ...]
    foreground: ForegroundParams = ForegroundParams()

    @property
    def n_templates(self) -> int:
        return len(self.placements)

    @property
    def kind(self) -> str:
        """"unconstrained", "foreground_masked" or "foreground_masked_enveloped" (the published
        file-name prefixes)."""
        if not self.foreground.masked:
            return "unconstrained"
        return "foreground_masked" + ("_enveloped" if self.foreground.envelope_radius else "")

    @property
    def max_label(self) -> int:
        """The largest label the map can contain."""
        extra = 0
        if self.foreground.masked:
            extra = 2 if self.foreground.envelope_radius is not None else 1
        return self.n_templates + extra

    @property
    def envelope_label(self) -> int | None:
        return self.n_templates + 2 if self.foreground.envelope_radius is not None else None


def sample_template_choice(generator: torch.Generator, bank_size: int, min_templates: int = 20,
                           max_templates: int = 40) -> list[int]:
    """Which templates one label map uses, in painting order.

    The count is uniform in ``min_templates..max_templates`` **inclusive** (the paper's
    U{20, 40}; the published code's ``np.random.randint(20, 40)`` gives 20..39), and templates
    are drawn uniformly with replacement, as published.

    Returns:
        List of bank indices in [0, bank_size).
    """
    if bank_size < 1:
        raise ValueError(f"the template bank is empty (bank_size={bank_size})")
    if not 1 <= min_templates <= max_templates:
        raise ValueError(f"need 1 <= min_templates <= max_templates, got {min_templates}, "
                         f"{max_templates}")
    n = int(torch.randint(min_templates, max_templates + 1, (), generator=generator))
    return torch.randint(bank_size, (n,), generator=generator).tolist()


def sample_label_ensemble_params(generator: torch.Generator, n_templates: int, size: int = 128,
                                 config: LabelEnsembleConfig = LabelEnsembleConfig()
                                 ) -> LabelEnsembleParams:
    """Draw every random number of one label map on the CPU: the ``n_templates`` affines (in
    painting order), then the foreground mask."""
    placements = tuple(sample_placement_params(generator, size, config.placement)
                       for _ in range(n_templates))
    foreground = sample_foreground_params(generator, size, config.foreground)
    return LabelEnsembleParams(placements, foreground)


def label_dtype(max_label: int) -> torch.dtype:
    """uint8 up to 255 labels, uint16 beyond."""
    if max_label > 65535:
        raise ValueError(f"{max_label} labels do not fit uint16")
    return torch.uint8 if max_label <= 255 else torch.uint16


def render_label_map(templates: Sequence[torch.Tensor], params: LabelEnsembleParams,
                     size: int = 128, device: torch.device | str | None = None, *,
                     median: bool = True) -> torch.Tensor:
    """Deterministic part of Algorithm 1: place, median-smooth, mask.

    Args:
        templates: binary (d_k, h_k, w_k) masks (bool/uint8, nonzero inside), one per placement,
            cropped to their bounding box at the output's isotropic spacing.
        params: the draws (:func:`sample_label_ensemble_params`).
        size: side of the cubic output volume.
        device: where to compute (default: the first template's device, else CPU).
        median: apply the 3x3x3 median (Algorithm 1, line 8).

    Returns:
        (size, size, size) uint8 tensor (uint16 beyond 255 labels) on ``device``: 0 background,
        templates 1..N (2..N+1 when masked), envelope N+2.
    """
    if len(templates) != params.n_templates:
        raise ValueError(f"got {len(templates)} templates but {params.n_templates} placements")
    if device is None:
        device = templates[0].device if len(templates) else "cpu"
    out_dtype = label_dtype(params.max_label)
    work = torch.uint8 if out_dtype == torch.uint8 else torch.int32  # uint16 lacks CPU kernels
    labels = place_templates(templates, params.placements, size, device=device, dtype=work)
    if median:
        labels = median3(labels)
    fg = params.foreground
    if fg.masked:
        labels = apply_foreground(labels, foreground_mask(fg, size, device), fg.envelope_radius,
                                  params.envelope_label)
    return labels if labels.dtype == out_dtype else labels.to(out_dtype)


def synthesize_label_map(templates: Sequence[torch.Tensor], size: int = 128,
                         generator: torch.Generator | None = None,
                         device: torch.device | str | None = None, *,
                         config: LabelEnsembleConfig = LabelEnsembleConfig(),
                         params: LabelEnsembleParams | None = None) -> torch.Tensor:
    """One label ensemble from the templates the caller chose (Algorithm 1).

    Args:
        templates: binary template masks in painting order (see :func:`render_label_map`).
        size: side of the cubic output volume.
        generator: CPU generator every draw comes from (required unless ``params`` is given).
        device: where to compute (default: the first template's device).
        config: probabilities and ranges (used when drawing).
        params: pre-drawn parameters; overrides ``generator`` and ``config``.

    Returns:
        (size, size, size) uint8 (uint16 beyond 255 labels) label map on ``device``.
    """
    if params is None:
        if generator is None:
            raise ValueError("synthesize_label_map needs a generator or params")
        params = sample_label_ensemble_params(generator, len(templates), size, config)
    return render_label_map(templates, params, size, device, median=config.median)
