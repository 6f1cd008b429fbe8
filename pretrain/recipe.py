"""What a pretraining method supplies; :mod:`pretrain.loop` does everything else.

A recipe names the stream fields it reads, checks that a dataset can feed it, builds its modules,
turns one on-device batch into losses, and exports a feature extractor. The loop owns devices,
mixed precision, the optimiser and schedule, gradient clipping, checkpoints and exact resume,
validation, logging and DDP, so the contrastive, registration and DINO recipes share all of it.

Modules are saved with their constructor arguments: every module a recipe builds carries an
``init_args`` dict (JSON-serialisable constructor keyword arguments), and the checkpoint stores
``{"class": "package.module:Name", "args": init_args, "state_dict": ...}`` per module, so a
checkpoint reloads without re-specifying the architecture.

Randomness inside a step (e.g. which voxels a loss samples) must come from the ``generator``
the loop passes: it is seeded from (run seed, step, rank), so a resumed run draws exactly what
an uninterrupted one would.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from synthgen.store import Dataset


class Recipe(ABC):
    """One pretraining method. Subclasses set :attr:`name`, :attr:`ModelConfig` and
    :attr:`LossConfig` (dataclasses: the config file's ``model`` and ``recipe`` sections) and
    implement the abstract methods.

    Args:
        model: the ``model`` section, an instance of :attr:`ModelConfig`.
        recipe: the ``recipe`` section, an instance of :attr:`LossConfig`.
    """

    name: ClassVar[str]
    ModelConfig: ClassVar[type]
    LossConfig: ClassVar[type]
    pairs_from_volumes: ClassVar[bool] = False
    """A recipe of ``moving``/``fixed`` pairs sets this to stream a dataset of single volumes
    (``image``[, ``labels``]) as random pairs (:class:`synthgen.stream.PairStream`)."""

    def __init__(self, model: Any, recipe: Any) -> None:
        self.model_config = model
        self.loss_config = recipe

    @classmethod
    def defaults(cls) -> dict[str, dict[str, Any]]:
        """The paper's settings for the loop's sections (``data``, ``optim``, ``schedule``,
        ``train``) as nested overrides of the loop's own defaults."""
        return {}

    @classmethod
    def presets(cls) -> dict[str, dict[str, dict[str, Any]]]:
        """Named presets (at least ``tiny``: a few steps at 64^3 on CPU), each nested overrides
        of every section, applied on top of :meth:`defaults`."""
        return {}

    @property
    @abstractmethod
    def fields(self) -> tuple[str, ...]:
        """The stream fields a batch needs (e.g. ``("view1", "view2", "labels")``)."""

    @property
    def field_sources(self) -> dict[str, tuple[str, ...]]:
        """For each of :attr:`fields`, the dataset fields that can fill it, in order of
        preference (default: the field itself). The contrastive recipe's views, for instance,
        come from a label ensemble's ``view1``/``view2`` or, both of them, from an ingested
        ``image``."""
        return {name: (name,) for name in self.fields}

    @property
    def augment(self) -> bool:
        """Whether the loop applies the label-ensemble online augmentation on the device."""
        return False

    @abstractmethod
    def check_dataset(self, dataset: Dataset) -> None:
        """Raise :class:`synthgen.errors.SynthgenError` (one line: the problem and the fix) when
        ``dataset`` cannot feed this recipe (wrong engine, missing fields; see
        :meth:`field_map`)."""

    def pairs_volumes(self, dataset: Dataset) -> bool:
        """Whether ``dataset`` holds single volumes that this recipe of pairs streams as random
        pairs (:attr:`pairs_from_volumes`, and an ``image`` but no ``moving`` field)."""
        schema = dataset.full_schema
        return self.pairs_from_volumes and "moving" not in schema and "image" in schema

    def fills(self, dataset: Dataset, kinds: dict[str, str]) -> bool:
        """Whether ``dataset`` fills each recipe field of ``kinds`` (name -> ``"image"`` or
        ``"labels"``) through :meth:`field_map` with a field of that kind."""
        schema, fields = dataset.full_schema, self.field_map(dataset)
        return all(name in fields and schema[fields[name]].kind == kind for name, kind in kinds.items())

    def field_map(self, dataset: Dataset) -> dict[str, str]:
        """Each of :attr:`fields` -> the field of ``dataset`` (stored or derived) that fills it:
        the first of its :attr:`field_sources` the dataset has (absent where it has none); for
        single volumes paired on the fly, the pair stream's own names."""
        if self.pairs_volumes(dataset):
            return {name: name for name in self.fields}
        schema = dataset.full_schema
        found = {name: next((s for s in sources if s in schema), None)
                 for name, sources in self.field_sources.items()}
        return {name: source for name, source in found.items() if source is not None}

    def check_crop(self, shape: tuple[int, int, int]) -> None:
        """Raise :class:`synthgen.errors.SynthgenError` when volumes of spatial ``shape`` (the
        crop, or the whole volume without one) cannot go through the recipe's network (default:
        any shape can)."""

    @abstractmethod
    def build(self) -> dict[str, nn.Module]:
        """The trainable modules, by name; ``"model"`` is the network that is exported. Each
        has an ``init_args`` dict."""

    def param_groups(self, modules: dict[str, nn.Module]) -> list[dict[str, Any]]:
        """Optimiser parameter groups (default: every parameter of every module, one group)."""
        return [{"params": [p for m in modules.values() for p in m.parameters()]}]

    @abstractmethod
    def training_step(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                      generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Losses of one on-device batch (volumes (B, 1, D, H, W): images float32, labels
        int64). Returns scalars; ``"loss"`` is the one optimised, the others are logged."""

    def validation_step(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                        generator: torch.Generator) -> dict[str, float]:
        """Scores of one validation batch (default: the training losses, without gradients;
        the loop has already put the modules in eval mode)."""
        with torch.no_grad():
            return {k: float(v) for k, v in self.training_step(modules, batch, generator).items()}

    def validation_extras(self, modules: dict[str, nn.Module], device: torch.device) -> dict[str, float]:
        """Scores beyond the held-out batches, computed at each validation (default none), e.g.
        Dice on real pairs while pretraining on synthetic ones; the loop logs them with the
        validation losses (rank 0's, without DDP averaging: every rank computes the same)."""
        return {}

    @abstractmethod
    def export_features(self, modules: dict[str, nn.Module], path: str) -> str:
        """Write a feature checkpoint that ``synthgen-bench register --features ckpt:PATH``
        loads (see :mod:`registration.features`); returns the path."""
