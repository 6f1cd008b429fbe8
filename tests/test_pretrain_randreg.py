"""Random-image registration pretraining (Chen et al.): the TransMorph Swin encoder and the
self-distillation head at the published sizes, the losses against their definitions, and the
recipe through the loop (learning, exact resume, on-the-fly and stored pairs alike, export)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pretrain.checkpoint import load_checkpoint
from pretrain.cli import main as pretrain_main
from pretrain.config import build_config
from pretrain.loop import train
from pretrain.losses import distillation_kl, gaussian_kl
from pretrain.models.flow_head import SelfDistillationNet, flow_at_input
from pretrain.models.swin import SwinEncoder
from pretrain.recipes.randreg import RandRegRecipe
from registration.losses import diffusion, local_ncc_gauss, soft_dice
from registration.networks import load_network
from synthgen.engines import get_engine
from synthgen.errors import SynthgenError
from synthgen.runner import generate
from synthgen.ops import upsample_displacement
from synthgen.ops.grids import displacement_to_grid
from synthgen.stream import DeviceStage, ShardStream
from tests.helpers import make_label_ensemble, run_main
from tests.test_pretrain_loop import assert_bitwise_equal, states

SPEC = "generate:random-shapes?n=8&size=64&seed=0&shard_size=4"
TINY_MODEL = {"embed_dim": 12, "depths": [1, 1, 1], "num_heads": [2, 2, 2], "drop_path": 0.0, "width": 4}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_config(**overrides: object):
    return build_config(RandRegRecipe, preset="tiny", overrides={"data.path": SPEC, **overrides})


def test_the_published_encoder_and_network_sizes_and_outputs() -> None:
    """11,858,728 and 12,180,256 parameters: the counts of MIR's SwinTransformer (patch 4, embed
    96, depths 4-4-5, 8 heads, window 3, pat_merg_rf 4) and of SSLHeadNLvl around it, built from
    the published code (MIR @ 01c3618)."""
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    encoder = SwinEncoder()
    assert count(encoder) == 11_858_728 and encoder.stride == 16 and encoder.channels == [96, 192, 384]
    network = SelfDistillationNet().eval()
    assert count(network) == 12_180_256
    with torch.no_grad():
        outputs = encoder.eval()(torch.randn(1, 2, 48, 64, 32))
        stats = network(torch.randn(1, 1, 48, 64, 32), torch.randn(1, 1, 48, 64, 32))
    assert [tuple(o.shape) for o in outputs] == [(1, 96, 12, 16, 8), (1, 192, 6, 8, 4), (1, 384, 3, 4, 2)]
    assert len(stats) == 4 and all(m.shape == s.shape == (1, 3, 24, 32, 16) for m, s in stats)
    mean, log_sigma = stats[-1]
    assert float(mean.abs().max()) < 1e-2 and torch.allclose(log_sigma, torch.full_like(log_sigma, -10.0), atol=1e-3)
    with pytest.raises(ValueError, match="multiples of the encoder's stride 16"):
        encoder(torch.zeros(1, 2, 40, 32, 32))


def test_gaussian_kl_is_torch_distributions_kl_with_exp_log_sigma_as_scale() -> None:
    g = seeded(0)
    mean_p, mean_q = torch.randn(2, 3, 4, 5, 6, generator=g), torch.randn(2, 3, 4, 5, 6, generator=g)
    log_p, log_q = torch.randn(2, 3, 4, 5, 6, generator=g), torch.randn(2, 3, 4, 5, 6, generator=g)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mean_p, log_p.exp()),
                                                 torch.distributions.Normal(mean_q, log_q.exp())).mean()
    assert torch.allclose(gaussian_kl(mean_p, log_p, mean_q, log_q), expected, rtol=1e-5)
    assert float(gaussian_kl(mean_p, log_p, mean_p, log_p)) == pytest.approx(0.0, abs=1e-6)
    levels = [(mean_p, log_p), (mean_q, log_q), (mean_q, log_q)]
    assert torch.allclose(distillation_kl(levels), expected / 2, rtol=1e-5)


def test_ncc_diffusion_and_dice_match_their_definitions() -> None:
    g = seeded(1)
    fixed, warped = torch.rand(2, 1, 20, 18, 16, generator=g), torch.rand(2, 1, 20, 18, 16, generator=g)
    line = torch.exp(-(torch.arange(9.0) - 4) ** 2 / 8)
    line = line / line.sum()
    kernel = (line[:, None, None] * line[None, :, None] * line[None, None, :])[None, None]

    def smooth(x: torch.Tensor) -> torch.Tensor:  # MIR's NCC_gauss: one 3-D convolution
        return F.conv3d(x, kernel, padding=4)

    cov = smooth(fixed * warped) - smooth(fixed) * smooth(warped)
    cc = cov ** 2 / ((smooth(fixed ** 2) - smooth(fixed) ** 2) * (smooth(warped ** 2) - smooth(warped) ** 2) + 1e-5)
    assert float(local_ncc_gauss(fixed, warped)) == pytest.approx(float(-cc.mean()), rel=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision leaves the loss in float32
        assert float(local_ncc_gauss(fixed, warped)) == float(local_ncc_gauss(fixed.float(), warped.float()))
    assert float(local_ncc_gauss(fixed, 3 * fixed + 1)) < float(local_ncc_gauss(fixed, warped)) - 0.5
    flow = torch.randn(1, 3, 6, 7, 8, generator=g)
    expected = sum(((flow.narrow(a, 1, n - 1) - flow.narrow(a, 0, n - 1)) ** 2).mean()
                   for a, n in zip((2, 3, 4), flow.shape[2:])) / 3
    assert torch.allclose(diffusion(flow), expected)
    onehot = F.one_hot(torch.randint(0, 4, (1, 8, 8, 8), generator=g), 4).permute(0, 4, 1, 2, 3).float()
    assert float(soft_dice(onehot, onehot)) == pytest.approx(0.0, abs=1e-5)
    assert float(soft_dice(onehot, onehot.roll(1, dims=1))) == pytest.approx(1.0, abs=1e-5)


def test_training_flows_and_grids_are_the_non_differentiable_kernels_values() -> None:
    """The differentiable x2 flow upsampling equals synthgen.ops.upsample_displacement, and a
    warp grid built through autograd equals the in-place one bit for bit."""
    flow = torch.randn(1, 3, 5, 6, 7, generator=seeded(2))
    assert torch.allclose(flow_at_input(flow, (2,)), upsample_displacement(flow, 2), atol=1e-6)
    assert torch.allclose(flow_at_input(flow, (2, 2)), upsample_displacement(upsample_displacement(flow, 2), 2),
                          atol=1e-5)
    tracked = flow.clone().requires_grad_()
    assert torch.equal(displacement_to_grid(tracked, (9, 8, 7)).detach(), displacement_to_grid(flow, (9, 8, 7)))


@pytest.fixture(scope="module")
def pair_batch() -> dict[str, torch.Tensor]:
    stream = ShardStream(SPEC, shuffle=False, batch_size=1)
    return DeviceStage(SPEC)(next(iter(stream)), "cpu")


def adam_steps(pair_batch: dict[str, torch.Tensor], lr: float, steps: int,
               **overrides: object) -> list[dict[str, float]]:
    config = tiny_config(**overrides)
    recipe = RandRegRecipe(config.model, config.recipe)
    torch.manual_seed(0)
    modules = recipe.build()
    optimiser = torch.optim.AdamW(modules["model"].parameters(), lr=lr)
    history = []
    for step in range(steps):
        losses = recipe.training_step(modules, pair_batch, seeded(step))
        history.append({name: float(value.detach()) for name, value in losses.items()})
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
    return history


def test_a_few_adam_steps_on_one_pair_reduce_the_loss(pair_batch: dict[str, torch.Tensor]) -> None:
    """Without the KL term the loss falls step by step; with it (the published 1e-7 and 4e-4)
    the KL of the near-zero-sigma flows dominates the first steps and the NCC still improves."""
    plain = adam_steps(pair_batch, 1e-3, 12, **{"recipe.kl_weight": 0.0})
    assert set(plain[0]) == {"loss", "ncc", "diffusion"}
    assert plain[-1]["loss"] < plain[0]["loss"] - 0.03 and plain[-1]["ncc"] < plain[6]["ncc"], plain
    published = adam_steps(pair_batch, 4e-4, 12)
    assert set(published[0]) == {"loss", "ncc", "diffusion", "kl"}
    assert published[-1]["ncc"] < published[0]["ncc"] - 0.004, published


def test_dice_ablation_and_kl_switch(pair_batch: dict[str, torch.Tensor]) -> None:
    with_dice = tiny_config(**{"recipe.dice_weight": 1.0, "recipe.kl_weight": 0.0})
    recipe = RandRegRecipe(with_dice.model, with_dice.recipe)
    torch.manual_seed(0)
    losses = recipe.training_step(recipe.build(), pair_batch, seeded(0))
    assert set(losses) == {"loss", "ncc", "diffusion", "dice"} and 0 < float(losses["dice"]) < 1
    expected = losses["ncc"] + 0.5 * losses["diffusion"] + losses["dice"]
    assert float(losses["loss"].detach()) == pytest.approx(float(expected), rel=1e-5)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("randreg") / "whole"
    summary = train("randreg", tiny_config(**{"train.steps": 4}), out)
    assert summary["finished"] and 0 <= summary["val"]["dice"] <= 1
    return out


def test_paused_and_resumed_runs_end_with_the_uninterrupted_weights(reference_run: Path, tmp_path: Path) -> None:
    config = tiny_config(**{"train.steps": 4})
    assert train("randreg", config, tmp_path / "paused", stop_after=2)["step"] == 2
    assert train("randreg", config, tmp_path / "paused", resume=True)["finished"]
    assert_bitwise_equal(states(tmp_path / "paused"), states(reference_run))


def test_a_stored_random_shapes_dataset_trains_to_the_on_the_fly_weights(reference_run: Path, tmp_path: Path) -> None:
    stored = tmp_path / "shapes.zarr"
    generate(get_engine("random-shapes", size=64), str(stored), 8, seed=0, shard_size=4, backend="local",
             progress=False)
    train("randreg", tiny_config(**{"train.steps": 4, "data.path": str(stored)}), tmp_path / "stored")
    assert_bitwise_equal(states(tmp_path / "stored"), states(reference_run))


def test_the_exported_network_reloads_and_predicts_the_trained_flow(reference_run: Path,
                                                                    pair_batch: dict[str, torch.Tensor]) -> None:
    network, settings = load_network(reference_run / "features.pt")
    assert settings == {"input_scale": 2} and isinstance(network, SelfDistillationNet)
    trained = SelfDistillationNet(**network.init_args)
    trained.load_state_dict(load_checkpoint(reference_run / "best.pt")["modules"]["model"]["state_dict"])
    halves = [F.avg_pool3d(pair_batch[k], 2) for k in ("moving", "fixed")]
    with torch.no_grad():
        assert torch.equal(network(*halves)[-1][0], trained.eval()(*halves)[-1][0])


def test_what_randreg_cannot_read_is_a_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    views = make_label_ensemble(tmp_path / "le.zarr", 4, size=32)
    code, _, err = run_main(pretrain_main, capsys, "randreg", "--data", str(views), "--out", str(tmp_path / "a"),
                            "--config", "tiny")
    assert code != 0 and "randreg needs registration pairs" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main(pretrain_main, capsys, "randreg", "--data", "generate:random-shapes?n=4&size=48",
                            "--out", str(tmp_path / "b"), "--config", "tiny")
    assert code != 0 and "each size must be a multiple of 32" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_validation_also_scores_a_real_pair_file(tmp_path: Path) -> None:
    prostate = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "prostate-mr-us"
    if not prostate.is_dir():
        pytest.skip("shared data absent")
    pairs = tmp_path / "pairs.csv"
    case = "case000000.nii.gz"
    pairs.write_text("fixed,moving,fixed_labels,moving_labels\n" + ",".join(
        str(prostate / folder / case) for folder in ("fixed_images", "moving_images", "fixed_labels", "moving_labels")))
    summary = train("randreg", tiny_config(**{"train.steps": 2, "train.val_every": 2, "recipe.val_pairs": str(pairs)}),
                    tmp_path / "run")
    assert 0 <= summary["val"]["real_dice"] <= 1
    with pytest.raises(SynthgenError, match="does not exist|cannot|no such"):
        train("randreg", tiny_config(**{"recipe.val_pairs": str(tmp_path / "missing.csv")}), tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_the_random_images_baseline_is_a_preset_of_the_full_network(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    code, out, _ = run_main(pretrain_main, capsys, "randreg-finetune", "--out", str(tmp_path / "r"), "--config",
                            "random-images", "--print-config")
    config = json.loads(out)
    assert code == 0 and config["data"]["path"].startswith("generate:random-shapes") and config["model"]["init"] == "none"
