"""Fine-tuning a registration network on real pairs from random-image pretraining (Chen et al.
2025 App. C; the published ``train_TransMorph_SSL.py``): ``synthgen-pretrain randreg-finetune
--init RUN_OR_CKPT|none --data PAIRS``.

The network is :class:`TransMorphTVF`; ``--init`` (``model.init``) loads the encoder of a randreg
run (its directory, ``features.pt``, or a ``last.pt``/``best.pt``) into it, and ``none`` leaves
it randomly initialised (the baseline without pretraining). Unsupervised: the pair is average-
pooled by ``input_scale`` for the network, the flow upsampled to full resolution warps the
moving image, loss = local NCC (voxelmorph's, 9^3 box) + ``diffusion_weight`` x diffusion;
both images are flipped together along the first axis with probability ``flip_prob`` (the
script's ``RandomFlip(0)``). Labels, where the data has them, are only scored: validation Dice
of the moving labels warped (nearest) by the flow, over the non-zero labels of the pair.

Data: a pair dataset (``synthgen ingest --pairs``, random-shapes) or a dataset of single volumes
(``synthgen ingest``), streamed as random pairs (:class:`synthgen.stream.PairStream`). Defaults:
Adam with AMSGrad at 1e-4, diffusion weight 1, a poly decay (power 0.9) per ``poly_every``
steps; the published run is 250 epochs of the 403 IXI training volumes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.checkpoint import FORMAT as CHECKPOINT_FORMAT
from pretrain.checkpoint import class_path
from pretrain.models.flow_head import flow_at_input
from pretrain.models.transmorph import TransMorphTVF
from pretrain.recipe import Recipe
from pretrain.recipes.randreg import EPOCHS, PAIRS_PER_EPOCH, PAPER_DATA, SwinConfig, check_network_input
from registration.losses import diffusion, local_ncc_box
from registration.metrics import dice, mean_dice
from registration.networks import FORMAT as NETWORK_FORMAT
from registration.networks import save_network_checkpoint
from synthgen.errors import SynthgenError, first_line
from synthgen.ops.warp import warp, warp_labels
from synthgen.store import Dataset

PAIR_FIELDS = ("moving", "fixed")
LABEL_FIELDS = ("moving_labels", "fixed_labels")
EPOCH_STEPS = 403  # the published IXI training set


@dataclasses.dataclass(frozen=True)
class TransMorphConfig(SwinConfig):
    """The ``model`` section: the encoder, the refinement decoder and ``init`` (``--init``): a
    randreg run or checkpoint whose encoder starts the network, or "none"."""

    time_steps: int = 12
    svf_steps: int = 7
    head_width: int = 16
    init: str = "none"


@dataclasses.dataclass(frozen=True)
class FinetuneLossConfig:
    """The ``recipe`` section: ``input_scale`` (pooling to the network input), the NCC window,
    ``diffusion_weight`` (lambda) and ``flip_prob`` (a shared flip along the first axis)."""

    input_scale: int = 2
    ncc_window: int = 9
    diffusion_weight: float = 1.0
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.input_scale < 1 or self.ncc_window < 1 or self.diffusion_weight < 0 or not 0 <= self.flip_prob <= 1:
            raise SynthgenError("recipe.input_scale and ncc_window must be >= 1, diffusion_weight >= 0 and "
                                "flip_prob in [0, 1]")


class RandRegFinetuneRecipe(Recipe):
    """``synthgen-pretrain randreg-finetune``; see the module docstring."""

    name: ClassVar[str] = "randreg-finetune"
    ModelConfig: ClassVar[type] = TransMorphConfig
    LossConfig: ClassVar[type] = FinetuneLossConfig
    pairs_from_volumes: ClassVar[bool] = True

    model_config: TransMorphConfig
    loss_config: FinetuneLossConfig

    def __init__(self, model: Any, recipe: Any) -> None:
        super().__init__(model, recipe)
        self.with_labels = True
        self.pretrained = None  # checked here, before a run directory is written
        if model.init != "none":
            args, state = pretrained_encoder(model.init)
            expected = model.encoder_args()
            differ = sorted(k for k in expected if args.get(k) != expected[k])
            if differ:
                raise SynthgenError(f"the encoder of --init {model.init} differs from model.* in "
                                    f"{', '.join(f'{k} ({args.get(k)!r})' for k in differ)}; set those model keys to "
                                    f"match")
            self.pretrained = state

    @classmethod
    def defaults(cls) -> dict[str, dict[str, Any]]:
        return {"data": {"batch_size": 1},
                "optim": {"name": "adam", "lr": 1e-4, "weight_decay": 0.0, "amsgrad": True},
                "schedule": {"name": "poly", "power": 0.9, "poly_every": EPOCH_STEPS},
                "train": {"steps": 250 * EPOCH_STEPS, "val_every": EPOCH_STEPS, "ckpt_every": 1000}}

    @classmethod
    def presets(cls) -> dict[str, dict[str, dict[str, Any]]]:
        """``tiny`` (CPU tests) and ``random-images``: the paper's baseline that trains the whole
        network on random-shapes pairs only (SynthMorph-style; 50 x 3000 pairs at 224^3 made on
        the training device, from scratch, no flips), with this recipe's losses and optimiser."""
        return {"random-images": {"data": {"path": PAPER_DATA},
                                  "train": {"steps": PAIRS_PER_EPOCH * EPOCHS, "val_every": PAIRS_PER_EPOCH,
                                            "val_batches": 50},
                                  "schedule": {"poly_every": PAIRS_PER_EPOCH},
                                  "model": {"init": "none"}, "recipe": {"flip_prob": 0.0}},
                "tiny": {"data": {"workers": 0},
                         "train": {"steps": 3, "log_every": 1, "val_every": 3, "val_batches": 1},
                         "schedule": {"poly_every": 1},
                         "model": {"embed_dim": 12, "depths": [1, 1, 1], "num_heads": [2, 2, 2], "drop_path": 0.0,
                                   "time_steps": 2, "svf_steps": 3, "head_width": 4}}}

    @property
    def fields(self) -> tuple[str, ...]:
        return PAIR_FIELDS + LABEL_FIELDS if self.with_labels else PAIR_FIELDS

    def check_dataset(self, dataset: Dataset) -> None:
        schema, single = dataset.full_schema, self.pairs_volumes(dataset)
        images = ("image",) if single else PAIR_FIELDS
        if not all(name in schema and schema[name].kind == "image" for name in images):
            raise SynthgenError(f"randreg-finetune needs registration pairs (fields moving, fixed) or single volumes "
                                f"(field image) to pair; {dataset.path} was made by engine {dataset.info.engine!r} "
                                f"with fields {', '.join(schema)}; make one with `synthgen ingest --pairs PAIRS.csv` "
                                f"or `synthgen ingest --images DIR`")
        labels = ("labels",) if single else LABEL_FIELDS
        self.with_labels = self.with_labels and all(name in schema for name in labels)

    def check_crop(self, shape: tuple[int, int, int]) -> None:
        check_network_input(shape, self.loss_config.input_scale, self.model_config.stride)

    def build(self) -> dict[str, nn.Module]:
        config = self.model_config
        try:
            network = TransMorphTVF(config.encoder_args(), config.time_steps, config.svf_steps, config.head_width)
        except ValueError as err:
            raise SynthgenError(f"model section: {err}") from None
        if self.pretrained is not None:
            network.encoder.load_state_dict(self.pretrained)
        return {"model": network}

    def _losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The full-resolution flow of the pair and ``{"loss", "ncc", "diffusion"}``."""
        scale = self.loss_config.input_scale
        pooled = [F.avg_pool3d(batch[k], scale) if scale > 1 else batch[k] for k in ("moving", "fixed")]
        flow = flow_at_input(model(*pooled).float(), (scale,))
        warped = warp(batch["moving"], flow, padding="zeros")
        ncc = local_ncc_box(batch["fixed"], warped, self.loss_config.ncc_window)
        smooth = diffusion(flow)
        return flow, {"loss": ncc + self.loss_config.diffusion_weight * smooth, "ncc": ncc, "diffusion": smooth}

    def _flipped(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        if float(torch.rand((), generator=generator)) >= self.loss_config.flip_prob:
            return batch
        return {name: value.flip(2) if value.dim() == 5 else value for name, value in batch.items()}

    def training_step(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                      generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``{"loss", "ncc", "diffusion"}`` of ``moving``, ``fixed`` (B, 1, D, H, W) float32; the
        flip is drawn from ``generator``."""
        _, losses = self._losses(modules["model"], self._flipped(batch, generator))
        return {name: value if name == "loss" else value.detach() for name, value in losses.items()}

    def validation_step(self, modules: dict[str, nn.Module], batch: dict[str, torch.Tensor],
                        generator: torch.Generator) -> dict[str, float]:
        """The losses without the flip, and ``"dice"`` where the pairs have labels: the mean Dice
        over the non-zero labels of each pair (Learn2Reg's rule), averaged over the batch."""
        with torch.no_grad():
            flow, losses = self._losses(modules["model"], batch)
            scores = {"loss": float(losses["loss"]), "ncc": float(losses["ncc"])}
            if "moving_labels" in batch:
                dices = [mean_dice(dice(batch["fixed_labels"][i, 0].cpu().numpy(),
                                        warp_labels(batch["moving_labels"][i, 0], flow[i]).cpu().numpy(),
                                        moving_labels=batch["moving_labels"][i, 0].cpu().numpy()))
                         for i in range(flow.shape[0])]
                scores["dice"] = sum(dices) / len(dices)
        return scores

    def export_features(self, modules: dict[str, nn.Module], path: str) -> str:
        """Save the (unwrapped) network as a registration-network checkpoint (``net:`` in the harness)."""
        model = modules["model"]
        return str(save_network_checkpoint(path, class_path(model), model.init_args, model.state_dict(),
                                           input_scale=self.loss_config.input_scale))


def pretrained_encoder(source: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The encoder arguments and weights of a randreg run directory (its ``features.pt``), its
    exported network, or one of its checkpoints (``last.pt``, ``best.pt``, ``step-N.pt``).

    Raises:
        SynthgenError: a missing file, or one that is not a randreg run's (naming what it is).
    """
    path = Path(source)
    if path.is_dir():
        path = path / "features.pt"
    if not path.is_file():
        raise SynthgenError(f"--init {source}: no such randreg run or checkpoint ({path} does not exist); give a "
                            f"`synthgen-pretrain randreg` run directory or checkpoint, or none")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for unreadable or foreign files
        raise SynthgenError(f"--init {source}: {path} is not a readable checkpoint ({first_line(exc)}); give a "
                            f"`synthgen-pretrain randreg` run or checkpoint, or none") from None
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found == CHECKPOINT_FORMAT:
        if payload["recipe"] != "randreg":
            raise SynthgenError(f"--init {source} is a {payload['recipe']} checkpoint; give a `synthgen-pretrain "
                                f"randreg` run or checkpoint, or none")
        payload = payload["modules"]["model"]
    elif found != NETWORK_FORMAT:
        raise SynthgenError(f"--init {source}: {path} is no randreg run's checkpoint or network (format {found!r}); "
                            f"give a `synthgen-pretrain randreg` run or checkpoint, or none")
    args, state = payload["args"], payload["state_dict"]
    encoder = {key[len("encoder."):]: value for key, value in state.items() if key.startswith("encoder.")}
    if "encoder" not in args or not encoder:
        raise SynthgenError(f"--init {source} holds no Swin encoder; give a `synthgen-pretrain randreg` run")
    return dict(args["encoder"]), encoder
