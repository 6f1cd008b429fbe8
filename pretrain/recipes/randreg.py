"""Random-image registration pretraining (Chen et al. 2025 §2, App. A-C; reference/trainers.md
§4): a TransMorph Swin encoder with a self-distillation head learns to register random-shapes
pairs, the paper's proxy task; fine-tuning then puts the encoder into a full registration network.

One step, as the published ``train_SSL.py``: the generated (moving, fixed) pair, (B, 1, S, S, S),
is average-pooled by ``input_scale`` (224^3 -> 112^3) for the network; the ensemble's flow,
sampled ``mean + exp(log_sigma / 2) * eps``, is upsampled x2 to the network input (the head) and
x ``input_scale`` to S (the script), magnitudes scaled alike, and warps the full-resolution
moving image (trilinear, zero padding). Loss: local NCC (Gaussian window 9, sigma 2) of the
warped and fixed images + ``diffusion_weight`` x the diffusion of the full-resolution flow +
``kl_weight`` x the mean KL of each level's Gaussian flow to the ensemble's, and, for the
paper's Table 1 ablation, ``dice_weight`` x a soft Dice of the warped one-hot shape labels.

Defaults are the published script's: weights (NCC 1, diffusion 0.5, KL 1e-7) — the fine-tuning
script loads a run named with diffusion 1, so lambda = 1 is also plausible for the paper — AdamW
at 4e-4 with a per-epoch poly decay (power 0.9) over 50 epochs of 3000 pairs, batch 1, pairs
generated on the training device at 224^3 (``generate:random-shapes?...``; a stored
random-shapes dataset gives bitwise the same pairs). Validation: Dice of the shape labels warped
(nearest) by the mean flow, besides the losses.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.checkpoint import class_path
from pretrain.losses import distillation_kl
from pretrain.models.flow_head import SelfDistillationNet, flow_at_input, sample_flow
from pretrain.recipe import Recipe
from registration.losses import diffusion, local_ncc_gauss, soft_dice
from registration.datasets import RegistrationPair, load_pair, read_pairs
from registration.metrics import dice, mean_dice
from registration.network_inference import mean_pair_dice
from registration.networks import save_network_checkpoint
from synthgen.errors import SynthgenError
from synthgen.ops.warp import warp, warp_labels
from synthgen.store import Dataset

FIELDS = ("moving", "fixed", "moving_labels", "fixed_labels")
PAIRS_PER_EPOCH, EPOCHS = 3000, 50
PAPER_DATA = f"generate:random-shapes?n={PAIRS_PER_EPOCH * EPOCHS}&size=224&seed=0"


@dataclasses.dataclass(frozen=True)
class SwinConfig:
    """:class:`SwinEncoder` arguments (the paper's encoder by default)."""

    patch_size: int = 4
    embed_dim: int = 96
    depths: tuple[int, ...] = (4, 4, 5)
    num_heads: tuple[int, ...] = (8, 8, 8)
    window_size: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    drop_path: float = 0.3

    def encoder_args(self) -> dict[str, Any]:
        """The encoder's constructor arguments (2 input channels), as its ``init_args``."""
        names = [field.name for field in dataclasses.fields(SwinConfig)]
        args = {name: getattr(self, name) for name in names}
        return {"in_channels": 2, **args, "depths": list(self.depths), "num_heads": list(self.num_heads)}

    @property
    def stride(self) -> int:
        return self.patch_size * 2 ** (len(self.depths) - 1)


@dataclasses.dataclass(frozen=True)
class SwinHeadConfig(SwinConfig):
    """The ``model`` section: the encoder and the self-distillation head's width."""

    width: int = 16

    def network_args(self) -> dict[str, Any]:
        return {"encoder": self.encoder_args(), "width": self.width}


@dataclasses.dataclass(frozen=True)
class RandRegLossConfig:
    """The ``recipe`` section.

    Attributes:
        input_scale: average pooling of the pair to the network input (2: 224^3 -> 112^3).
        ncc_window, ncc_sigma: the local NCC's Gaussian window.
        diffusion_weight: lambda (the published script 0.5; 1 is also plausible for the paper).
        kl_weight: eta, the self-distillation weight (0: the ablation without it).
        dice_weight: weight of a soft Dice of the warped shape labels (the Table 1 ablation; 0: off).
        val_pairs: a pairs file of the harness (CSV or ``dataset.json``) whose labelled pairs are
            registered by the network at each validation ("real_dice"; empty: none).
    """

    input_scale: int = 2
    ncc_window: int = 9
    ncc_sigma: float = 2.0
    diffusion_weight: float = 0.5
    kl_weight: float = 1e-7
    dice_weight: float = 0.0
    val_pairs: str = ""

    def __post_init__(self) -> None:
        if self.input_scale < 1 or self.ncc_window < 1 or self.ncc_window % 2 == 0:
            raise SynthgenError(f"recipe.input_scale must be >= 1 and recipe.ncc_window odd, got "
                                f"{self.input_scale}, {self.ncc_window}")
        if min(self.diffusion_weight, self.kl_weight, self.dice_weight) < 0:
            raise SynthgenError("recipe.diffusion_weight, kl_weight and dice_weight must be >= 0")


class RandRegRecipe(Recipe):
    """``synthgen-pretrain randreg``; see the module docstring."""

    name: ClassVar[str] = "randreg"
    ModelConfig: ClassVar[type] = SwinHeadConfig
    LossConfig: ClassVar[type] = RandRegLossConfig

    model_config: SwinHeadConfig
    loss_config: RandRegLossConfig

    def __init__(self, model: Any, recipe: Any) -> None:
        super().__init__(model, recipe)
        self.num_labels = 0
        self.val_pairs = read_pairs(recipe.val_pairs) if recipe.val_pairs else []  # checked before the run starts
        self._loaded_pairs: list[RegistrationPair] | None = None

    @classmethod
    def defaults(cls) -> dict[str, dict[str, Any]]:
        return {"data": {"path": PAPER_DATA, "batch_size": 1, "val_shards": 1},
                "optim": {"name": "adamw", "lr": 4e-4, "weight_decay": 0.01},
                "schedule": {"name": "poly", "power": 0.9, "poly_every": PAIRS_PER_EPOCH},
                "train": {"steps": PAIRS_PER_EPOCH * EPOCHS, "val_every": PAIRS_PER_EPOCH, "val_batches": 50,
                          "ckpt_every": 1000}}

    @classmethod
    def presets(cls) -> dict[str, dict[str, dict[str, Any]]]:
        return {"tiny": {"data": {"path": "generate:random-shapes?n=8&size=64&seed=0&shard_size=4", "workers": 0},
                         "train": {"steps": 3, "log_every": 1, "val_every": 3, "val_batches": 1},
                         "schedule": {"poly_every": 1},
                         "model": {"embed_dim": 12, "depths": [1, 1, 1], "num_heads": [2, 2, 2], "drop_path": 0.0,
                                   "width": 4}}}

    @property
    def fields(self) -> tuple[str, ...]:
        return FIELDS

    def check_dataset(self, dataset: Dataset) -> None:
        schema = dataset.full_schema
        if not self.fills(dataset, {"moving": "image", "fixed": "image", "moving_labels": "labels",
                                    "fixed_labels": "labels"}):
            raise SynthgenError(f"randreg needs registration pairs with their label maps (fields moving, fixed, "
                                f"moving_labels, fixed_labels); {dataset.path} was made by engine "
                                f"{dataset.info.engine!r} with fields {', '.join(schema)}; use a random-shapes "
                                f"dataset or spec (e.g. \"{PAPER_DATA}\") or `synthgen ingest --pairs`")
        self.num_labels = max(self.num_labels, int(dataset.info.config.get("num_labels", 0)))

    def check_crop(self, shape: tuple[int, int, int]) -> None:
        check_network_input(shape, self.loss_config.input_scale, self.model_config.stride)

    def build(self) -> dict[str, nn.Module]:
        try:
            return {"model": SelfDistillationNet(**self.model_config.network_args())}
        except ValueError as err:
            raise SynthgenError(f"model section: {err}") from None

    def _flows(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator | None
               ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The full-resolution flow (sampled with ``generator``, the mean without) and the stats."""
        scale = self.loss_config.input_scale
        moving, fixed = (F.avg_pool3d(batch[k], scale) if scale > 1 else batch[k] for k in ("moving", "fixed"))
        stats = model(moving, fixed)
        mean, log_sigma = stats[-1]
        half = sample_flow(mean, log_sigma, generator) if generator is not None else mean
        return flow_at_input(half.float(), (2, scale)), stats

    def training_step(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                      generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"loss", "ncc", "diffusion", "kl"[, "dice"]}`` of a batch of ``moving``, ``fixed``
        (B, 1, S, S, S) float32 and their labels (B, 1, S, S, S) int64; the noise from ``generator``."""
        config = self.loss_config
        flow, stats = self._flows(modules["model"], batch, generator)
        warped = warp(batch["moving"], flow, padding="zeros")
        losses = {"ncc": local_ncc_gauss(batch["fixed"], warped, config.ncc_window, config.ncc_sigma),
                  "diffusion": diffusion(flow)}
        loss = losses["ncc"] + config.diffusion_weight * losses["diffusion"]
        if config.kl_weight > 0:
            losses["kl"] = distillation_kl([(m.float(), s.float()) for m, s in stats])
            loss = loss + config.kl_weight * losses["kl"]
        if config.dice_weight > 0:
            losses["dice"] = self._soft_dice(batch, flow)
            loss = loss + config.dice_weight * losses["dice"]
        return {"loss": loss, **{name: value.detach() for name, value in losses.items()}}

    def _soft_dice(self, batch: dict[str, torch.Tensor], flow: torch.Tensor) -> torch.Tensor:
        largest = int(torch.maximum(batch["moving_labels"].max(), batch["fixed_labels"].max()))
        classes = max(self.num_labels, largest + 1)
        onehot = {k: F.one_hot(batch[k][:, 0], classes).permute(0, 4, 1, 2, 3).float()
                  for k in ("moving_labels", "fixed_labels")}
        return soft_dice(onehot["fixed_labels"], warp(onehot["moving_labels"], flow, padding="zeros"))

    def validation_step(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                        generator: torch.Generator) -> dict[str, float]:
        """The training losses (noise from ``generator``) and ``"dice"``: the mean Dice over the
        shape labels 0..num_labels-1 (all of them, as the published ``dice_Shape_VOI``) of the
        moving labels warped (nearest) by the mean flow, averaged over the batch."""
        with torch.no_grad():
            scores = {k: float(v) for k, v in self.training_step(modules, batch, generator).items()}
            flow, _ = self._flows(modules["model"], batch, None)
            labels = range(self.num_labels) if self.num_labels else None
            dices = [mean_dice(dice(batch["fixed_labels"][i, 0].cpu().numpy(),
                                    warp_labels(batch["moving_labels"][i, 0], flow[i]).cpu().numpy(), labels))
                     for i in range(flow.shape[0])]
            scores["dice"] = sum(dices) / len(dices)
        return scores

    def validation_extras(self, modules: dict[str, nn.Module], device: torch.device) -> dict[str, float]:
        """``"real_dice"``: the network's mean Dice on the labelled pairs of ``recipe.val_pairs``."""
        if not self.val_pairs:
            return {}
        if self._loaded_pairs is None:
            self._loaded_pairs = [pair for pair in map(load_pair, self.val_pairs)
                                  if pair.fixed_labels is not None and pair.moving_labels is not None]
            if not self._loaded_pairs:
                raise SynthgenError(f"recipe.val_pairs {self.loss_config.val_pairs} has no pair with labels to score")
        return {"real_dice": mean_pair_dice(modules["model"], self._loaded_pairs, self.loss_config.input_scale, device)}

    def export_features(self, modules: dict[str, nn.Module], path: str) -> str:
        """Save the (unwrapped) network as a registration-network checkpoint
        (:mod:`registration.networks`); it registers pairs, it is no single-image feature extractor."""
        model = modules["model"]
        return str(save_network_checkpoint(path, class_path(model), model.init_args, model.state_dict(),
                                           input_scale=self.loss_config.input_scale))



def check_network_input(shape: tuple[int, ...], input_scale: int, stride: int) -> None:
    """Raise SynthgenError unless volumes of ``shape``, pooled by ``input_scale``, fit an
    encoder of total ``stride``."""
    multiple = input_scale * stride
    if any(n % multiple for n in shape):
        raise SynthgenError(f"volumes of {tuple(shape)} do not fit the network: with recipe.input_scale {input_scale} "
                            f"each size must be a multiple of {multiple} (set data.crop, or make the data at another "
                            f"size)")
