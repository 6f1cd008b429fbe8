"""The anatomix recipe: its UNet, the projection heads, the SupCon loss and the recipe end to end on
a tiny label-ensemble dataset (CPU, small sizes)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pretrain.recipes.contrastive import LOSS_LAYERS, ContrastiveLossConfig, ContrastiveRecipe, UNetConfig
from pretrain.losses import ProjectionHeads, gather_locations, labels_at, sample_locations, supcon_loss
from pretrain.models import UNet
from registration.features import get_extractor, load_feature_module
from synthgen import open_dataset
from synthgen.engines import get_engine
from synthgen.errors import SynthgenError
from synthgen.runner import generate
from synthgen.stream import DeviceStage, ShardStream
from tests.helpers import make_label_ensemble

SIZE = 32
LOOP_SECTIONS = {"data", "optim", "schedule", "train", "model", "recipe"}


def tiny_recipe(**recipe_overrides) -> ContrastiveRecipe:
    tiny = ContrastiveRecipe.presets()["tiny"]
    return ContrastiveRecipe(UNetConfig(**tiny["model"]),
                             ContrastiveLossConfig(**{**tiny["recipe"], **recipe_overrides}))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def label_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_label_ensemble(tmp_path_factory.mktemp("contrastive") / "le.zarr", 2, size=SIZE, seed=4,
                               shard_size=2)


@pytest.fixture(scope="module")
def batch(label_ensemble: Path) -> dict[str, torch.Tensor]:
    """Both samples as one augmented on-device batch, through the stream the loop uses."""
    recipe = tiny_recipe()
    stream = ShardStream(str(label_ensemble), fields=recipe.fields, shuffle=False, batch_size=2)
    stage = DeviceStage(str(label_ensemble), augment=recipe.augment)
    return stage(next(iter(stream)), "cpu")


# ---------------------------------------------------------------- the UNet

def test_paper_unet_has_the_published_parameter_count_and_reloads_from_its_args() -> None:
    model = UNet()
    assert sum(p.numel() for p in model.parameters()) == 5_899_344
    args = json.loads(json.dumps(model.init_args))
    assert UNet(**args).state_dict().keys() == model.state_dict().keys()
    assert not any(isinstance(m, nn.Conv3d) and m.bias is not None for m in model.modules()), \
        "batch norm: convolutions carry no bias"


def test_loss_layers_are_pre_norm_convolutions_with_documented_channels_and_resolutions() -> None:
    model = UNet().train()
    documented = {"enc3_conv2": (128, 8), "bottleneck_conv1": (256, 16), "dec3_conv1": (128, 8),
                  "dec2_conv1": (64, 4), "dec1_conv1": (32, 2), "output": (16, 1)}
    assert {name: tuple(model.layers[name]) for name in LOSS_LAYERS} == documented
    seen = {}
    model.encoder[3][1].conv.register_forward_hook(lambda _m, _i, out: seen.setdefault("conv", out.clone()))
    x = torch.randn(1, 1, SIZE, SIZE, SIZE, generator=seeded(0))
    taps = model(x, return_layers=LOSS_LAYERS)
    assert list(taps) == list(LOSS_LAYERS)
    for name, (channels, stride) in documented.items():
        assert taps[name].shape == (1, channels, *(SIZE // stride,) * 3)
    assert torch.equal(taps["enc3_conv2"], seen["conv"]), "the tap is the convolution's own output"
    assert float(taps["enc3_conv2"].detach().mean(dim=(0, 2, 3, 4)).abs().max()) > 1e-3, "not batch-normalised"
    model.eval()
    assert torch.allclose(model(x, return_layers=["output"])["output"], model(x))


def test_unet_rejects_bad_inputs_and_names_clearly() -> None:
    model = UNet(widths=[4, 8, 8, 8, 8])
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.zeros(1, 1, 40, 32, 32))
    with pytest.raises(ValueError, match="at least 32"):
        model(torch.zeros(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="unknown UNet layer.*decoder_9"):
        model(torch.zeros(1, 1, 32, 32, 32), return_layers=["decoder_9"])


def test_one_class_serves_2d_and_instance_norm() -> None:
    model = UNet(in_channels=2, out_channels=3, widths=[4, 8, 16], dims=2, norm="instance")
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert any(isinstance(m, nn.InstanceNorm2d) for m in model.modules())
    taps = model(torch.randn(2, 2, 16, 12), return_layers=["bottleneck_conv2", "output"])
    assert taps["bottleneck_conv2"].shape == (2, 16, 4, 3) and taps["output"].shape == (2, 3, 16, 12)


# ---------------------------------------------------------------- heads, sampling, loss

def test_projection_heads_follow_the_published_mlp() -> None:
    heads = ProjectionHeads({"a": 5, "b": 7}, width=16, depth=3)
    mlp = heads.heads["a"]
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    norms = [m for m in mlp if isinstance(m, nn.BatchNorm1d)]
    assert len(linears) == 3 and all(m.bias is None for m in linears)
    assert [m.affine for m in norms] == [True, True, False]
    assert not isinstance(mlp[-1], nn.ReLU), "no ReLU before the L2 normalisation"
    out = heads({"b": torch.randn(10, 7)})
    assert list(out) == ["b"] and out["b"].shape == (10, 16)


def test_sampled_locations_are_distinct_reproducible_and_gathered_per_view() -> None:
    locations = sample_locations(3, (4, 5, 6), 50, seeded(1))
    assert locations.shape == (3, 50) and locations.dtype == torch.int64
    assert all(len(set(row.tolist())) == 50 for row in locations) and int(locations.max()) < 120
    assert torch.equal(locations, sample_locations(3, (4, 5, 6), 50, seeded(1)))
    assert sample_locations(1, (2, 2, 2), 512, seeded(1)).shape == (1, 8), "small grids: every voxel"
    sparse = sample_locations(4, (16, 16, 16), 512, seeded(1))  # 1/8 of the grid: repeats redrawn
    assert all(len(set(row.tolist())) == 512 for row in sparse) and int(sparse.max()) < 16 ** 3
    features = torch.randn(2 * 3, 7, 4, 5, 6)
    picked = gather_locations(features, locations)
    assert picked.shape == (2, 3, 50, 7)
    view, sample, k = 1, 2, 17
    z, y, x = (int(i) for i in torch.unravel_index(locations[sample, k], (4, 5, 6)))
    assert torch.equal(picked[view, sample, k], features[view * 3 + sample, :, z, y, x])


@pytest.mark.parametrize("count", [16, 100])  # sparse (redrawn repeats) and dense (ranked keys)
def test_sampled_locations_cover_the_grid_uniformly(count: int) -> None:
    hits = torch.bincount(sample_locations(2000, (8, 8, 8), count, seeded(2)).flatten(), minlength=512)
    expected = 2000 * count / 512
    assert float(hits.min()) > 0.6 * expected and float(hits.max()) < 1.4 * expected


def test_labels_on_a_layer_grid_are_the_nearest_resized_label_map() -> None:
    labels = torch.randint(0, 9, (2, 1, 16, 8, 16), generator=seeded(2))
    grid = (4, 2, 8)
    locations = sample_locations(2, grid, 20, seeded(3))
    nearest = F.interpolate(labels.float(), size=grid, mode="nearest").long().reshape(2, -1)
    assert torch.equal(labels_at(labels, grid, locations), nearest.gather(1, locations))


def supcon_reference(z: torch.Tensor, labels: torch.Tensor, tau: float) -> float:
    """Eq. 1 of the paper, anchor by anchor (mean over anchors)."""
    z = F.normalize(z.double(), dim=-1)
    total = []
    for i in range(len(z)):
        others = [q for q in range(len(z)) if q != i]
        denominator = torch.logsumexp(torch.stack([z[i] @ z[q] / tau for q in others]), 0)
        positives = [p for p in others if labels[p] == labels[i]]
        total.append(-sum(z[i] @ z[p] / tau - denominator for p in positives) / len(positives))
    return float(sum(total) / len(total))


def test_supcon_matches_equation_1_anchor_by_anchor() -> None:
    z = torch.randn(2, 12, 5, generator=seeded(4))
    labels = torch.tensor([[0, 1, 2, 0, 1, 2] * 2, [3, 3, 3, 4, 4, 4] * 2])
    expected = sum(supcon_reference(z[g], labels[g], 0.33) for g in range(2)) / 2
    assert float(supcon_loss(z, labels, 0.33)) == pytest.approx(expected, rel=1e-5)


def test_supcon_is_lower_for_label_aligned_features_than_for_shuffled_labels() -> None:
    labels = torch.randint(0, 6, (1, 128), generator=seeded(5))
    features = F.one_hot(labels, 6).float() + 0.1 * torch.randn(1, 128, 6, generator=seeded(6))
    shuffled = labels[:, torch.randperm(128, generator=seeded(7))]
    aligned = float(supcon_loss(features, labels, 0.33))
    assert aligned < float(supcon_loss(features, shuffled, 0.33)) - 0.5
    assert aligned < float(supcon_loss(torch.randn(1, 128, 6, generator=seeded(8)), labels, 0.33)) - 0.5


def test_supcon_of_one_hot_features_on_identical_views_is_the_closed_form_minimum() -> None:
    """Identical views, features = one-hot labels: each anchor's positives all sit at cos 1 and
    the rest at cos 0, so loss_i = log((n_k - 1) + (N - n_k) exp(-1/tau)) for a label of n_k."""
    view = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    labels = torch.cat([view, view])[None]
    tau = 0.33
    counts = torch.bincount(labels[0])[labels[0]].double()
    n = labels.shape[1]
    expected = torch.log((counts - 1) + (n - counts) * math.exp(-1 / tau)).mean()
    loss = supcon_loss(F.one_hot(labels, 4).float(), labels, tau)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(loss) < float(supcon_loss(torch.randn(1, n, 4, generator=seeded(9)), labels, tau))


def test_supcon_invariances_and_finite_gradients() -> None:
    z = torch.randn(3, 40, 8, generator=seeded(10), requires_grad=True)
    labels = torch.randint(0, 5, (3, 40), generator=seeded(11))
    loss = supcon_loss(z, labels, 0.33)
    order = torch.randperm(40, generator=seeded(12))
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=seeded(13)))[0]
    relabel = torch.tensor([7, 2, 9, 0, 4])
    for other in (supcon_loss(z[:, order], labels[:, order], 0.33),  # anchor order
                  supcon_loss(z @ rotation, labels, 0.33),  # rotation of the embedding space
                  supcon_loss(3.0 * z, labels, 0.33),  # scale (cosine similarity)
                  supcon_loss(z, relabel[labels], 0.33),  # label values
                  supcon_loss(z[[2, 0, 1]], labels[[2, 0, 1]], 0.33)):  # group order
        assert other.item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(z.grad).all() and float(z.grad.abs().sum()) > 0


# ---------------------------------------------------------------- the recipe

def test_defaults_and_presets_use_the_loop_sections_and_the_config_fields() -> None:
    defaults = ContrastiveRecipe.defaults()
    assert set(defaults) <= LOOP_SECTIONS
    assert defaults["optim"] == {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999], "weight_decay": 0.0}
    assert defaults["schedule"]["name"] == "linear" and defaults["data"] == {"crop": 128, "batch_size": 1}
    tiny = ContrastiveRecipe.presets()["tiny"]
    assert set(tiny) <= LOOP_SECTIONS and tiny["data"]["crop"] == 64
    recipe = tiny_recipe()
    assert recipe.loss_config.layers == LOSS_LAYERS and recipe.loss_config.temperature == 0.33
    assert ContrastiveLossConfig().locations == 512 and ContrastiveLossConfig().head_width == 256
    assert UNet(**dataclasses.asdict(UNetConfig())).init_args == UNet().init_args, "defaults: the paper's UNet"


def test_build_gives_the_unet_and_one_head_per_loss_layer() -> None:
    modules = ContrastiveRecipe(UNetConfig(), ContrastiveLossConfig()).build()
    assert sum(p.numel() for p in modules["model"].parameters()) == 5_899_344
    assert list(modules["heads"].heads) == list(LOSS_LAYERS)
    assert modules["heads"].init_args["in_channels"]["bottleneck_conv1"] == 256
    groups = ContrastiveRecipe(UNetConfig(), ContrastiveLossConfig()).param_groups(modules)
    assert [g["name"] for g in groups] == ["model", "heads"]
    assert sum(len(g["params"]) for g in groups) == len(list(modules["model"].parameters())) + len(
        list(modules["heads"].parameters()))
    with pytest.raises(SynthgenError, match="unknown UNet layer.*valid: stem"):
        tiny_recipe(layers=("enc9_conv1",)).build()
    with pytest.raises(SynthgenError, match="model section: norm"):
        ContrastiveRecipe(UNetConfig(norm="group"), ContrastiveLossConfig()).build()


def test_check_dataset_accepts_label_ensembles_and_rejects_random_shapes(
        small_dataset: Path, label_ensemble: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe()
    recipe.check_dataset(open_dataset(str(label_ensemble)))
    labels_only = tmp_path / "labels.zarr"
    generate(get_engine("label-ensemble", size=SIZE, store="labels"), str(labels_only), 1, seed=4,
             backend="local", progress=False)
    recipe.check_dataset(open_dataset(str(labels_only)))  # views derived on read
    with pytest.raises(SynthgenError, match="engine 'random-shapes'.*synthgen generate --engine label-ensemble") as err:
        recipe.check_dataset(open_dataset(str(small_dataset)))
    assert "\n" not in str(err.value)


def test_training_step_is_a_pure_function_of_the_generator(batch: dict[str, torch.Tensor]) -> None:
    recipe = tiny_recipe()
    torch.manual_seed(0)
    modules = recipe.build()
    first = recipe.training_step(modules, batch, seeded(5))
    assert set(first) == {"loss", *(f"supcon/{name}" for name in LOSS_LAYERS)}
    assert first["loss"].requires_grad and first["loss"].ndim == 0
    loss = first["loss"].item()
    assert loss == pytest.approx(sum(first[f"supcon/{name}"].item() for name in LOSS_LAYERS) / 6)
    assert recipe.training_step(modules, batch, seeded(5))["loss"].item() == loss
    assert recipe.training_step(modules, batch, seeded(6))["loss"].item() != loss


def test_a_few_adam_steps_of_the_tiny_config_reduce_the_loss(batch: dict[str, torch.Tensor]) -> None:
    assert batch["view1"].shape == (2, 1, SIZE, SIZE, SIZE) and batch["labels"].dtype == torch.int64
    recipe = tiny_recipe()
    torch.manual_seed(0)
    modules = recipe.build()
    optim = ContrastiveRecipe.defaults()["optim"]
    optimizer = torch.optim.Adam(recipe.param_groups(modules), lr=1e-3, betas=tuple(optim["betas"]))

    def probe() -> float:
        with torch.no_grad():
            return float(recipe.training_step(modules, batch, seeded(123))["loss"])

    before = probe()
    for step in range(6):
        optimizer.zero_grad()
        recipe.training_step(modules, batch, seeded(step))["loss"].backward()
        optimizer.step()
    assert probe() < before - 0.05


def test_exported_features_load_in_the_registration_harness(tmp_path: Path) -> None:
    recipe = tiny_recipe()
    modules = recipe.build()
    path = recipe.export_features(modules, str(tmp_path / "features.pt"))
    module, defaults = load_feature_module(path)
    assert isinstance(module, UNet) and defaults["scale"] == 0.1 and defaults["mind"] is True
    assert not any(key.startswith("heads") for key in module.state_dict())
    image = torch.rand(SIZE, SIZE, SIZE, generator=seeded(14))
    fixed, moving = get_extractor(f"ckpt:{path},window={SIZE}")(image, image.flip(0))
    assert fixed.shape == moving.shape == (12 + 16, SIZE, SIZE, SIZE)
    with torch.no_grad():
        expected = 0.1 * modules["model"].eval()(((image - image.min()) / (image.max() - image.min()))[None, None])
    assert torch.allclose(fixed[12:], expected[0], atol=1e-4)


@pytest.mark.parametrize("shape, message", [((40, 64, 64), "multiple of 16"), ((16, 16, 16), "at least 32")])
def test_crops_the_unet_cannot_take_are_rejected_before_training(shape: tuple[int, int, int],
                                                                 message: str) -> None:
    recipe = ContrastiveRecipe(UNetConfig(), ContrastiveLossConfig())
    recipe.check_crop((64, 64, 64))
    with pytest.raises(SynthgenError, match=f"data.crop.*{message}.*set data.crop"):
        recipe.check_crop(shape)
