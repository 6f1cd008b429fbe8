"""label-ensemble: random anatomies from organ templates, two appearance views (anatomix).

After Dey et al., "Learning general-purpose biomedical volume representations using
randomized synthesis" (§3, App. B.1, Algorithm 1, Fig. 12). One sample is a label map made of
20-40 templates from a bank (Algorithm 1: random affine placement, median smoothing, optional
deformed foreground sphere and envelope) and two views of it, each an independent Gaussian
mixture times Perlin texture through the offline MRI/CT artifact pipeline.

Every random draw comes from ``sample_generator(seed, index, stream)``: stream 0 draws the label
map (template choice and Algorithm 1), streams 1 and 2 the appearance of view 1 and view 2. The
views are therefore a pure function of (label map, seed, index), which is what ``--store
labels`` relies on: such a dataset stores only the label maps (~1/100 of the bytes) and the
reader re-renders the same views with :meth:`LabelEnsemble.derive`, on any device.

Deviations from the published code (each fixes a quirk listed in reference/engines.md §1): see
``synthgen.ops.label_ensemble`` for the label synthesis and ``synthgen.ops.appearance`` for the
views.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from synthgen.engines.base import Engine, FieldSpec
from synthgen.errors import SynthgenError
from synthgen.ops.affine_placement import PlacementConfig
from synthgen.ops.appearance import render_view
from synthgen.ops.label_ensemble import (LabelEnsembleConfig as Algorithm1Config, LabelEnsembleParams,
                                         label_dtype, render_label_map, sample_label_ensemble_params,
                                         sample_template_choice)
from synthgen.seeding import LABEL_STREAM, VIEW_STREAMS, sample_generator
from synthgen.templates import DEFAULT_BANK_NAME, TemplateBank, resolve_bank

STORE_MODES = ("views", "labels")
REFERENCE_SIZE = 128  # the paper's side length; template scales are relative to it


@dataclasses.dataclass(frozen=True)
class LabelEnsembleConfig:
    """Parameters of the label-ensemble engine.

    Attributes:
        size: side of the cubic volume in voxels (>= 32). At sizes other than 128 the templates
            are scaled by size/128, so anatomy fills the same fraction of the volume as in the
            paper at a finer voxel spacing (bank spacing x 128/size).
        templates: template bank path, or "default" for the built-in procedural bank.
        templates_fingerprint: the bank's fingerprint, recorded when a dataset is planned so
            that resuming with a changed bank is refused; leave unset.
        min_templates, max_templates: templates per label map, uniform and inclusive (20..40).
        store: "views" stores the label map and both views; "labels" stores only the label map
            and the reader re-renders the views (``derive``) from (labels, seed, index).
    """

    size: int = 128
    templates: str = DEFAULT_BANK_NAME
    templates_fingerprint: str | None = None
    min_templates: int = 20
    max_templates: int = 40
    store: str = "views"


_BANKS: dict[tuple[str, str | None], TemplateBank] = {}


def load_bank(templates: str, fingerprint: str | None = None) -> TemplateBank:
    """The bank named by a config, opened once per process (shard tasks reuse it)."""
    key = (templates, fingerprint)
    if key not in _BANKS:
        _BANKS[key] = resolve_bank(templates, fingerprint)
    return _BANKS[key]


class LabelEnsemble(Engine):
    """anatomix label ensembles with two appearance views; see the module docstring."""

    name = "label-ensemble"
    Config = LabelEnsembleConfig

    def validate(self) -> None:
        c = self.config
        if not _is_int(c.size) or c.size < 32:
            raise SynthgenError(f"label-ensemble size must be an integer >= 32, got {c.size!r}; "
                                f"the paper uses 128")
        if c.store not in STORE_MODES:
            raise SynthgenError(f"label-ensemble store must be one of {', '.join(STORE_MODES)}, got {c.store!r}")
        if not (_is_int(c.min_templates) and _is_int(c.max_templates) and 1 <= c.min_templates <= c.max_templates):
            raise SynthgenError(f"label-ensemble needs 1 <= min_templates <= max_templates, got "
                                f"{c.min_templates!r} and {c.max_templates!r}")
        if c.max_templates > 65533:
            raise SynthgenError(f"label-ensemble max_templates must be <= 65533 (uint16 labels), "
                                f"got {c.max_templates}")
        if not isinstance(c.templates, str) or not c.templates:
            raise SynthgenError(f"label-ensemble templates must be a bank path or 'default', got {c.templates!r}")

    @property
    def bank(self) -> TemplateBank:
        """The template bank (opened on first use, checked against the recorded fingerprint)."""
        bank = load_bank(self.config.templates, self.config.templates_fingerprint)
        if self.config.min_templates > len(bank):
            raise SynthgenError(f"min_templates={self.config.min_templates} exceeds the {len(bank)} "
                                f"templates of bank {self.config.templates}; lower --set min_templates")
        return bank

    def config_dict(self) -> dict[str, Any]:
        """The full config, with the bank's fingerprint filled in (opens the bank)."""
        config = super().config_dict()
        config["templates_fingerprint"] = self.bank.fingerprint
        return config

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.config.size,) * 3

    @property
    def spacing(self) -> tuple[float, float, float]:
        bank_spacing = self.bank.spacing or (1.5, 1.5, 1.5)
        zoom = REFERENCE_SIZE / self.config.size
        return tuple(float(s) * zoom for s in bank_spacing)  # type: ignore[return-value]

    @property
    def label_dtype(self) -> str:
        # templates 1..N, shifted by one under a foreground mask, plus an envelope label
        return str(label_dtype(self.config.max_templates + 2)).removeprefix("torch.")

    def _view_specs(self) -> dict[str, FieldSpec]:
        return {f"view{k}": FieldSpec("float16", self.shape, "image",
                                      f"view {k}: Gaussian-mixture appearance x Perlin texture through the "
                                      f"offline artifact pipeline, in [0, 1]", overlay="labels")
                for k in (1, 2)}

    @property
    def schema(self) -> dict[str, FieldSpec]:
        labels = {"labels": FieldSpec(self.label_dtype, self.shape, "labels",
                                      "label ensemble: 0 background, one label per placed template "
                                      "(and a foreground envelope)")}
        return {**labels, **self._view_specs()} if self.config.store == "views" else labels

    @property
    def derived_schema(self) -> dict[str, FieldSpec]:
        return self._view_specs() if self.config.store == "labels" else {}

    def label_draws(self, seed: int, index: int) -> tuple[list[int], LabelEnsembleParams]:
        """Every random draw of sample ``index``'s label map: the bank indices of its templates
        in painting order and their placements and foreground mask (CPU, from the label stream)."""
        c = self.config
        generator = sample_generator(seed, index, LABEL_STREAM)
        ids = sample_template_choice(generator, len(self.bank), c.min_templates, c.max_templates)
        zoom = REFERENCE_SIZE / c.size
        config = Algorithm1Config(placement=PlacementConfig(scale_range=(0.5 * zoom, 1.5 * zoom)))
        return ids, sample_label_ensemble_params(generator, len(ids), c.size, config)

    def label_map(self, seed: int, index: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The label map of sample ``index``: (D, H, W) uint8 (uint16 beyond 255 labels)."""
        return self.render_labels(*self.label_draws(seed, index), device)

    def render_labels(self, ids: list[int], params: LabelEnsembleParams,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """The label map of :meth:`label_draws`' ``(ids, params)`` on ``device`` (default CPU):
        (D, H, W) uint8 (uint16 beyond 255 labels)."""
        device = torch.device(device) if device is not None else torch.device("cpu")
        templates = [torch.from_numpy(mask).to(device) for mask in self.bank.masks(ids)]
        labels = render_label_map(templates, params, self.config.size, device)
        return labels.to(getattr(torch, self.label_dtype))

    def render_views(self, labels: torch.Tensor, seed: int, index: int,
                     device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The two views of sample ``index`` from its label map: {"view1", "view2"} float16
        (D, H, W) in [0, 1] on ``device`` (default: the label map's)."""
        device = labels.device if device is None else torch.device(device)
        labels = labels.to(device=device, dtype=torch.int64)
        return {f"view{k}": render_view(labels, sample_generator(seed, index, stream), device).to(torch.float16)
                for k, stream in zip((1, 2), VIEW_STREAMS)}

    def sample(self, seed: int, index: int, device: torch.device | str | None = None
               ) -> dict[str, torch.Tensor]:
        labels = self.label_map(seed, index, device)
        if self.config.store == "labels":
            return {"labels": labels}
        return {"labels": labels, **self.render_views(labels, seed, index)}

    def derive(self, stored: dict[str, torch.Tensor], seed: int, index: int,
               device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        if self.config.store != "labels":
            return {}
        return self.render_views(stored["labels"], seed, index, device)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
