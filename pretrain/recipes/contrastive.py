"""The anatomix recipe: multi-positive supervised contrastive pretraining of a UNet on two views of
a label ensemble (Dey et al. §3, App. B.2-B.4; reference/trainers.md §3).

Data: a label-ensemble dataset (``view1``, ``view2``, ``labels``), or any dataset with an
``image`` and its ``labels`` (``synthgen ingest --labels``), whose image fills both views (the
online augmentation then differs per view), alone or mixed (``--data synth.zarr:0.8,real.zarr:0.2``).

One step: both views of each sample go through the UNet as one batch (so BatchNorm statistics
are shared by the views, as the published code); at each loss layer (conv outputs before their
norm) ``locations`` voxels are drawn per sample, shared by its two views; each layer's samples
go through its projection head; the SupCon loss (:func:`pretrain.losses.supcon_loss`) contrasts
the 2 x ``locations`` embeddings of each sample, with the labels nearest-resized to the layer's
grid; the layers' losses are averaged with equal weights. Positives are only sought within a
sample (label values of different samples are unrelated), which is the published code's
behaviour at its batch size of one.

Settings follow the published code where the paper is less specific: the loss layers are the
last encoder conv, the first bottleneck conv, the first conv of the three coarsest decoder
levels and the output (the published ``nn.Sequential`` indices 27, 31, 38, 45, 52, 65; the
paper's Table 7 numbering would put the encoder layer on the first conv of its level); the
heads are 256 wide with three blocks; Adam (beta1 0.5, no weight decay) at 2e-4 decays linearly
to 0 (the paper's App. B.3 describes a step decay); a batch is one 128^3 pair.
Deviation: one optimiser with two parameter groups (UNet, heads) instead of two optimisers with
the same settings, which is the same update for Adam.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from pretrain.checkpoint import class_path
from pretrain.losses import ProjectionHeads, gather_locations, labels_at, sample_locations, supcon_loss
from pretrain.models import UNet
from pretrain.recipe import Recipe
from registration.features import save_feature_checkpoint
from synthgen.errors import SynthgenError
from synthgen.store import Dataset

FIELDS = ("view1", "view2", "labels")
LOSS_LAYERS = ("enc3_conv2", "bottleneck_conv1", "dec3_conv1", "dec2_conv1", "dec1_conv1", "output")
FEATURE_DEFAULTS = {"scale": 0.1, "mind": True, "window": 128}
"""anatomix's registration recipe: features x 0.1 after MIND-SSC, 128^3 windows (App. B.4)."""


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The ``model`` section: :class:`pretrain.models.UNet` arguments (3-D)."""

    in_channels: int = 1
    out_channels: int = 16
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    norm: str = "batch"
    padding_mode: str = "reflect"


@dataclasses.dataclass(frozen=True)
class ContrastiveLossConfig:
    """The ``recipe`` section.

    Attributes:
        temperature: SupCon tau.
        locations: voxels drawn per sample and layer (all of a smaller grid).
        layers: UNet layer names the loss is applied to (see ``UNet.layers``).
        head_width: width of the projection heads.
        head_layers: Linear-BN blocks per head.
    """

    temperature: float = 0.33
    locations: int = 512
    layers: tuple[str, ...] = LOSS_LAYERS
    head_width: int = 256
    head_layers: int = 3

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise SynthgenError(f"recipe.temperature must be > 0, got {self.temperature}")
        if self.locations < 2:
            raise SynthgenError(f"recipe.locations must be >= 2, got {self.locations}")
        if not self.layers:
            raise SynthgenError("recipe.layers is empty; name at least one UNet layer, e.g. output")
        if self.head_width < 1 or self.head_layers < 1:
            raise SynthgenError(f"recipe.head_width and recipe.head_layers must be >= 1, got "
                                f"{self.head_width} and {self.head_layers}")


class ContrastiveRecipe(Recipe):
    """``synthgen-pretrain contrastive``; see the module docstring."""

    name: ClassVar[str] = "contrastive"
    ModelConfig: ClassVar[type] = UNetConfig
    LossConfig: ClassVar[type] = ContrastiveLossConfig

    model_config: UNetConfig
    loss_config: ContrastiveLossConfig

    @classmethod
    def defaults(cls) -> dict[str, dict[str, Any]]:
        return {"data": {"crop": 128, "batch_size": 1},
                "optim": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999], "weight_decay": 0.0},
                "schedule": {"name": "linear", "warmup_steps": 0},
                "train": {"steps": 600_000}}

    @classmethod
    def presets(cls) -> dict[str, dict[str, dict[str, Any]]]:
        return {"tiny": {"data": {"crop": 64, "batch_size": 2},
                         "train": {"steps": 3, "log_every": 1},
                         "model": {"widths": [4, 8, 16, 32, 64]},
                         "recipe": {"locations": 64, "head_width": 32}}}

    @property
    def fields(self) -> tuple[str, ...]:
        return FIELDS

    @property
    def augment(self) -> bool:
        return True

    @property
    def field_sources(self) -> dict[str, tuple[str, ...]]:
        """A label ensemble's two views, or one image (real, ingested) as both views: the
        online augmentation then makes the views differ in appearance only."""
        return {"view1": ("view1", "image"), "view2": ("view2", "image"), "labels": ("labels",)}

    def check_dataset(self, dataset: Dataset) -> None:
        schema = dataset.full_schema
        if self.fills(dataset, {"view1": "image", "view2": "image", "labels": "labels"}):
            return
        raise SynthgenError(
            f"contrastive pretraining needs two views and their label map (fields view1, view2, labels) or an "
            f"image and its label map (image, labels); {dataset.path} was made by engine {dataset.info.engine!r} "
            f"with fields {', '.join(schema)}; make a dataset with `synthgen generate --engine label-ensemble "
            f"--out PATH` or `synthgen ingest --images DIR --labels DIR --out PATH`")

    def check_crop(self, shape: tuple[int, int, int]) -> None:
        try:
            model = UNet(dims=3, **dataclasses.asdict(self.model_config))
            model.check_input((1, self.model_config.in_channels, *shape))
        except ValueError as err:
            raise SynthgenError(f"data.crop {tuple(shape)}: {err} (set data.crop)") from None

    def build(self) -> dict[str, nn.Module]:
        try:
            model = UNet(dims=3, **dataclasses.asdict(self.model_config))
        except ValueError as err:
            raise SynthgenError(f"model section: {err}") from None
        unknown = [name for name in self.loss_config.layers if name not in model.layers]
        if unknown:
            raise SynthgenError(f"recipe.layers names unknown UNet layer(s) {', '.join(unknown)}; "
                                f"valid: {', '.join(model.layers)}")
        heads = ProjectionHeads({name: model.layers[name].channels for name in self.loss_config.layers},
                                self.loss_config.head_width, self.loss_config.head_layers)
        return {"model": model, "heads": heads}

    def param_groups(self, modules: dict[str, nn.Module]) -> list[dict[str, Any]]:
        return [{"name": name, "params": list(modules[name].parameters())} for name in ("model", "heads")]

    def training_step(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                      generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"loss": mean over layers, "supcon/<layer>": each layer's loss (detached)}`` of a batch
        of ``view1``, ``view2`` (B, 1, D, H, W) float32 and ``labels`` (B, 1, D, H, W) int64;
        D, H, W multiples of 16. Draws the locations from ``generator``, layer by layer."""
        config = self.loss_config
        labels = batch["labels"]
        size = labels.shape[0]
        features = modules["model"](torch.cat([batch["view1"], batch["view2"]]), return_layers=config.layers)
        samples, layer_labels = {}, {}
        for name in config.layers:
            grid = features[name].shape[2:]
            locations = sample_locations(size, grid, config.locations, generator).to(labels.device)
            samples[name] = gather_locations(features[name], locations).reshape(-1, features[name].shape[1])
            layer_labels[name] = labels_at(labels, grid, locations).repeat(1, 2)
        projected = modules["heads"](samples)
        losses = {}
        for name in config.layers:
            views = projected[name].reshape(2, size, -1, projected[name].shape[-1])
            embeddings = torch.cat([views[0], views[1]], dim=1)
            losses[name] = supcon_loss(embeddings, layer_labels[name], config.temperature)
        loss = torch.stack(list(losses.values())).mean()
        return {"loss": loss, **{f"supcon/{name}": value.detach() for name, value in losses.items()}}

    def export_features(self, modules: dict[str, nn.Module], path: str) -> str:
        """Save the (unwrapped) UNet as a ``synthgen-module/1`` feature checkpoint with anatomix's
        registration defaults (:data:`FEATURE_DEFAULTS`); the heads are not exported."""
        model = modules["model"]
        return str(save_feature_checkpoint(path, class_path(model), model.init_args, model.state_dict(),
                                           **FEATURE_DEFAULTS))
