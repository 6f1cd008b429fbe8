"""registration.features: spec parsing, extractors, joint PCA, feature checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from registration.features import (EXTRACTOR_NAMES, describe_extractors, fit_joint_pca, get_extractor,
                                   joint_pca, load_feature_module, normalize_intensity, parse_spec,
                                   project, save_feature_checkpoint, save_feature_torchscript)
from registration.features.slicewise import encoded_positions, interpolate_slices
from registration.mind import fill_outside_mask, mind_ssc
from synthgen.errors import SynthgenError

CONV3D = "torch.nn:Conv3d"


class TwoLayer3d(nn.Module):
    """A fully convolutional 3-D net with a 5^3 receptive field."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.first = nn.Conv3d(1, 6, 3, padding=1)
        self.second = nn.Conv3d(6, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


class Encoder2d(nn.Module):
    """A 2-D encoder with a stride-2 stem: (B, C_in, h, w) -> (B, C, h/2, w/2)."""

    def __init__(self, in_channels: int = 1, channels: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 2, stride=2)
        self.head = nn.Conv2d(8, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(x)))


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(x), self.conv(x)


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def volume(shape: tuple[int, int, int] = (24, 28, 32), seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = F.avg_pool3d(torch.rand(1, 1, *shape, generator=generator), 5, stride=1, padding=2)[0, 0]
    return smooth * 300 - 100


def minmax(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min())


def save_module(path: Path, module: nn.Module, args: dict, cls: str | None = None, **defaults) -> str:
    save_feature_checkpoint(path, cls or class_path(type(module)), args, module.state_dict(), **defaults)
    return str(path)


@pytest.fixture()
def conv3d() -> nn.Module:
    torch.manual_seed(1)
    return nn.Conv3d(1, 4, 3, padding=1).eval()


@pytest.fixture()
def two_layer() -> nn.Module:
    torch.manual_seed(2)
    return TwoLayer3d().eval()


@pytest.fixture()
def encoder() -> nn.Module:
    torch.manual_seed(3)
    return Encoder2d().eval()


# --- spec parsing ---------------------------------------------------------------------------

def test_parse_spec_forms():
    assert parse_spec("mind") == parse_spec(" MIND ")
    spec = parse_spec("mind,radius=2,dilation=3")
    assert (spec.name, spec.arg, spec.options) == ("mind", None, {"radius": "2", "dilation": "3"})
    spec = parse_spec("ckpt:/a/b:c.pt,scale=0.1,mind=true")
    assert (spec.name, spec.arg, spec.options) == ("ckpt", "/a/b:c.pt", {"scale": "0.1", "mind": "true"})


@pytest.mark.parametrize("text, message", [
    ("", "no extractor name"), ("ckpt:", "no argument"), ("mind,radius", "malformed option"),
    ("mind,=2", "malformed option"), ("mind,radius=", "malformed option"),
    ("mind,radius=1,radius=2", "given twice")])
def test_parse_spec_rejects_malformed(text, message):
    with pytest.raises(SynthgenError, match=message):
        parse_spec(text)


def test_names_and_help():
    assert EXTRACTOR_NAMES == ("mind", "intensity", "ckpt", "slice2d")
    heads = [line for line in describe_extractors().splitlines() if not line.startswith(" ")]
    assert [head.split("[")[0] for head in heads] == ["mind", "intensity", "ckpt:PATH", "slice2d:PATH"]
    assert "mind=false" in heads[2] and "overlap=0.8" in heads[2] and "pca=none" in heads[0]


@pytest.mark.parametrize("spec, message", [
    ("sift", "unknown feature extractor 'sift'; choose one of mind, intensity, ckpt, slice2d"),
    ("mind:x", "takes no argument"), ("ckpt", "needs a checkpoint path"),
    ("mind,radus=2", "unknown option 'radus'.*valid options: dilation, pca, radius"),
    ("mind,dilation=0", "dilation=0.*integer >= 1"), ("mind,radius=1.5", "radius=1.5"),
    ("mind,pca=0", "pca=0"), ("intensity,norm=zscore", "expected one of minmax, robust, none"),
])
def test_get_extractor_rejects_bad_specs(spec, message):
    with pytest.raises(SynthgenError, match=message):
        get_extractor(spec)


@pytest.mark.parametrize("option, message", [
    ("window=abc", "window=abc.*integer"), ("overlap=1", r"overlap=1.*\[0, 1\)"),
    ("mind=maybe", "true or false"), ("blend=median", "gaussian, constant"), ("scale=nan", "finite"),
    ("every=2", "unknown option 'every'")])
def test_ckpt_rejects_bad_options(tmp_path, conv3d, option, message):
    path = save_module(tmp_path / "m.pt", conv3d, {"in_channels": 1, "out_channels": 4, "kernel_size": 3,
                                                   "padding": 1}, CONV3D)
    with pytest.raises(SynthgenError, match=message):
        get_extractor(f"ckpt:{path},{option}")


def test_slice2d_rejects_bad_axis(tmp_path, encoder):
    path = save_module(tmp_path / "e.pt", encoder, {})
    with pytest.raises(SynthgenError, match="axis=3.*from 0 to 2"):
        get_extractor(f"slice2d:{path},axis=3")


def test_bad_device():
    with pytest.raises(SynthgenError, match="not a torch device"):
        get_extractor("mind", "gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(SynthgenError, match="CUDA is not available"):
            get_extractor("mind", "cuda")


# --- input checks ---------------------------------------------------------------------------

def test_nan_input_is_rejected():
    fixed = volume()
    bad = fixed.clone()
    bad[3, 4, 5] = float("nan")
    for extractor in (get_extractor("intensity"), get_extractor("mind")):
        with pytest.raises(SynthgenError, match="moving image contains NaN"):
            extractor(fixed, bad)
        with pytest.raises(SynthgenError, match="fixed image contains NaN"):
            extractor(bad, fixed)


def test_shape_checks():
    extractor = get_extractor("intensity")
    with pytest.raises(SynthgenError, match=r"fixed image must be a \(D, H, W\) tensor"):
        extractor(volume()[None], volume())
    with pytest.raises(SynthgenError, match="moving mask has shape"):
        extractor(volume(), volume(), moving_mask=torch.ones(3, 3, 3))
    with pytest.raises(SynthgenError, match="fixed mask is empty"):
        extractor(volume(), volume(), fixed_mask=torch.zeros(24, 28, 32))


def test_tiny_mask_for_mind():
    mask = torch.zeros(24, 28, 32)
    mask[5, 5, 5] = 1
    with pytest.raises(SynthgenError, match="MIND-SSC with a mask failed.*larger mask"):
        get_extractor("mind")(volume(), volume(), fixed_mask=mask)


# --- hand-crafted extractors ----------------------------------------------------------------

def test_mind_shapes_and_values():
    fixed, moving = volume(seed=0), volume((20, 24, 28), seed=1)
    f, m = get_extractor("mind")(fixed, moving)
    assert f.shape == (12, 24, 28, 32) and m.shape == (12, 20, 24, 28)
    assert f.dtype == m.dtype == torch.float32
    torch.testing.assert_close(f, mind_ssc(fixed).float())
    f2, _ = get_extractor("mind,radius=2,dilation=3")(fixed, moving)
    torch.testing.assert_close(f2, mind_ssc(fixed, radius=2, dilation=3).float())


def test_mind_fills_outside_masks():
    fixed, moving = volume(seed=0), volume(seed=1)
    mask = torch.zeros_like(fixed)
    mask[4:20, 4:24, 4:28] = 1
    f, m = get_extractor("mind")(fixed, moving, fixed_mask=mask)
    torch.testing.assert_close(f, mind_ssc(fill_outside_mask(fixed, mask)).float())
    torch.testing.assert_close(m, mind_ssc(moving).float())


def test_mind_with_pca():
    f, m = get_extractor("mind,pca=4")(volume(seed=0), volume(seed=1))
    assert f.shape == (4, 24, 28, 32) and m.shape == (4, 24, 28, 32)


def test_intensity_normalisations():
    fixed, moving = volume(seed=0), volume(seed=1)
    fixed[0, 0, 0] = 1e5  # an outlier
    f, m = get_extractor("intensity")(fixed, moving)
    assert f.shape == (1, 24, 28, 32) and f.dtype == torch.float32
    assert f.min() == 0 and f.max() == 1 and (f == 1).sum() > 1  # robust: clipped, outlier ignored
    f_minmax, _ = get_extractor("intensity,norm=minmax")(fixed, moving)
    torch.testing.assert_close(f_minmax[0], minmax(fixed))
    f_none, _ = get_extractor("intensity,norm=none")(fixed, moving)
    torch.testing.assert_close(f_none[0], fixed)
    mask = (torch.rand(fixed.shape) > 0.5).float()
    f_masked, _ = get_extractor("intensity")(fixed, moving, fixed_mask=mask)
    torch.testing.assert_close(f_masked, f * mask)


def test_normalize_constant_volume_is_zero():
    assert normalize_intensity(torch.full((4, 4, 4), 7.0), "robust").abs().max() == 0
    assert normalize_intensity(torch.full((4, 4, 4), 7.0), "minmax").abs().max() == 0


# --- joint PCA ------------------------------------------------------------------------------

def correlated(channels: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(channels, channels, generator=generator) * torch.linspace(3, 0.1, channels)
    return (mixing @ torch.randn(channels, int(torch.tensor(shape).prod()), generator=generator)
            ).reshape(channels, *shape) + 5


def test_pca_basis_properties():
    fixed, moving = correlated(8, (10, 12, 14), 0), correlated(8, (9, 11, 13), 1)
    basis = fit_joint_pca(fixed, moving, 5)
    assert basis.components.shape == (5, 8) and basis.variance.shape == (5,)
    torch.testing.assert_close(basis.components @ basis.components.T, torch.eye(5), atol=1e-5, rtol=0)
    assert (basis.variance[:-1] >= basis.variance[1:]).all()
    peaks = basis.components.gather(1, basis.components.abs().argmax(1, keepdim=True))
    assert (peaks > 0).all()
    f, m = joint_pca(fixed, moving, 5)
    assert f.shape == (5, 10, 12, 14) and m.shape == (5, 9, 11, 13) and f.dtype == torch.float32
    torch.testing.assert_close(f, project(fixed, basis))
    torch.testing.assert_close(m, project(moving, basis))
    both = torch.cat([f.reshape(5, -1), m.reshape(5, -1)], dim=1)
    torch.testing.assert_close(both.mean(1), torch.zeros(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(both.var(1), basis.variance, rtol=1e-3, atol=1e-4)
    full = torch.cat([fixed.reshape(8, -1), moving.reshape(8, -1)], dim=1)
    eigenvalues = torch.linalg.eigvalsh(torch.cov(full.double())).flip(0)[:5].float()
    torch.testing.assert_close(basis.variance, eigenvalues, rtol=1e-3, atol=1e-4)


def test_pca_full_rank_rotation_preserves_distances():
    fixed, moving = correlated(4, (6, 6, 6), 2), correlated(4, (6, 6, 6), 3)
    f, m = joint_pca(fixed, moving, 4)
    torch.testing.assert_close((f - m).norm(dim=0), (fixed - moving).norm(dim=0), atol=1e-3, rtol=1e-4)


def test_pca_subsampling_is_deterministic_and_close():
    fixed, moving = correlated(6, (20, 20, 20), 4), correlated(6, (20, 20, 20), 5)
    a = fit_joint_pca(fixed, moving, 3, max_samples=4000)
    b = fit_joint_pca(fixed, moving, 3, max_samples=4000)
    exact = fit_joint_pca(fixed, moving, 3)
    assert torch.equal(a.components, b.components)
    assert (a.components * exact.components).sum(1).abs().min() > 0.99


def test_pca_larger_than_channels_is_rejected():
    with pytest.raises(SynthgenError, match="pca=13 is not between 1 and the 12 feature channels"):
        get_extractor("mind,pca=13")(volume(seed=0), volume(seed=1))
    with pytest.raises(SynthgenError, match="pca=2 .* 1 feature channels"):
        get_extractor("intensity,pca=2")(volume(seed=0), volume(seed=1))


# --- ckpt: checkpoints and sliding windows ------------------------------------------------------

CONV3D_ARGS = {"in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1}


def test_ckpt_round_trip_matches_in_memory_module(tmp_path, conv3d):
    path = save_module(tmp_path / "m.pt", conv3d, CONV3D_ARGS, CONV3D)
    module, defaults = load_feature_module(path)
    assert defaults == {} and not module.training
    fixed, moving = volume((16, 16, 16), seed=0), volume((16, 16, 16), seed=1)
    f, m = get_extractor(f"ckpt:{path},window=16")(fixed, moving)
    with torch.no_grad():
        expected_f, expected_m = conv3d(minmax(fixed)[None, None])[0], conv3d(minmax(moving)[None, None])[0]
    assert f.shape == (4, 16, 16, 16) and f.dtype == torch.float32
    torch.testing.assert_close(f, expected_f, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m, expected_m, atol=1e-5, rtol=1e-5)


def test_sliding_window_single_window_is_exact(tmp_path, two_layer):
    path = save_module(tmp_path / "m.pt", two_layer, {})
    image = volume((24, 24, 24))
    with torch.no_grad():
        expected = two_layer(minmax(image)[None, None])[0]
    for blend in ("gaussian", "constant"):
        f = get_extractor(f"ckpt:{path},window=24,blend={blend}").network_features(image)
        torch.testing.assert_close(f, expected, atol=1e-5, rtol=1e-5)


def test_sliding_window_tiles_pointwise_net_exactly(tmp_path):
    torch.manual_seed(4)
    pointwise = nn.Conv3d(1, 3, 1).eval()
    path = save_module(tmp_path / "p.pt", pointwise, {"in_channels": 1, "out_channels": 3, "kernel_size": 1},
                       CONV3D)
    image = volume((36, 28, 24))
    with torch.no_grad():
        expected = pointwise(minmax(image)[None, None])[0]
    for overlap in (0.0, 0.5, 0.8):
        f = get_extractor(f"ckpt:{path},window=16,overlap={overlap}").network_features(image)
        torch.testing.assert_close(f, expected, atol=1e-5, rtol=1e-5)


def test_sliding_window_tiles_conv_net(tmp_path, two_layer):
    """Disjoint tiles are exact wherever the 5^3 receptive field stays inside one tile; overlapping
    Gaussian-blended tiles are close everywhere inside the volume's 2-voxel border."""
    path = save_module(tmp_path / "m.pt", two_layer, {})
    image = volume((40, 40, 40))
    with torch.no_grad():
        expected = two_layer(minmax(image)[None, None])[0]
    tiled = get_extractor(f"ckpt:{path},window=20,overlap=0,blend=constant").network_features(image)
    away = torch.ones(40, dtype=torch.bool)
    away[18:22] = False  # within 2 voxels of the tile faces at 20
    inside = away[:, None, None] & away[None, :, None] & away[None, None, :]
    torch.testing.assert_close(tiled[:, inside], expected[:, inside], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tiled, expected, atol=1e-3)
    blended = get_extractor(f"ckpt:{path},window=20,overlap=0.5").network_features(image)
    error = (blended - expected)[:, 2:-2, 2:-2, 2:-2].abs()
    assert error.mean() < 0.1 * expected.abs().mean()


def test_ckpt_scale_mind_and_masks(tmp_path, conv3d):
    path = save_module(tmp_path / "m.pt", conv3d, CONV3D_ARGS, CONV3D)
    fixed, moving = volume((16, 16, 16), seed=0), volume((16, 16, 16), seed=1)
    plain_f, plain_m = get_extractor(f"ckpt:{path},window=16")(fixed, moving)
    mask = torch.zeros_like(fixed)
    mask[2:14, 3:13, 1:15] = 1
    f, m = get_extractor(f"ckpt:{path},window=16,mind=true,scale=0.1")(fixed, moving, fixed_mask=mask)
    assert f.shape == (16, 16, 16, 16) and m.shape == (16, 16, 16, 16)
    torch.testing.assert_close(f[:12], mind_ssc(fill_outside_mask(fixed, mask)).float())
    torch.testing.assert_close(f[12:], plain_f * 0.1 * mask)
    torch.testing.assert_close(m[:12], mind_ssc(moving).float())
    torch.testing.assert_close(m[12:], plain_m * 0.1)


def test_ckpt_pca_reduces_network_channels_only(tmp_path, conv3d):
    path = save_module(tmp_path / "m.pt", conv3d, CONV3D_ARGS, CONV3D)
    fixed, moving = volume((16, 16, 16), seed=0), volume((16, 16, 16), seed=1)
    plain = get_extractor(f"ckpt:{path},window=16")(fixed, moving)
    f, m = get_extractor(f"ckpt:{path},window=16,pca=2,mind=true")(fixed, moving)
    assert f.shape == (14, 16, 16, 16) and m.shape == (14, 16, 16, 16)
    expected = joint_pca(*plain, 2)
    torch.testing.assert_close(f[12:], expected[0])
    torch.testing.assert_close(m[12:], expected[1])


def test_ckpt_coarse_output_is_resized_to_the_image(tmp_path):
    torch.manual_seed(5)
    strided = nn.Conv3d(1, 3, 2, stride=2).eval()
    path = save_module(tmp_path / "s.pt", strided, {"in_channels": 1, "out_channels": 3, "kernel_size": 2,
                                                     "stride": 2}, CONV3D)
    image = volume((16, 16, 16))
    extractor = get_extractor(f"ckpt:{path},window=16")
    assert extractor.network_features(image).shape == (3, 8, 8, 8)
    f, _ = extractor(image, image)
    with torch.no_grad():
        coarse = strided(minmax(image)[None, None])
    torch.testing.assert_close(f, F.interpolate(coarse, size=(16, 16, 16), mode="trilinear")[0],
                               atol=1e-5, rtol=1e-5)


def test_checkpoint_defaults_and_spec_precedence(tmp_path, conv3d):
    path = save_module(tmp_path / "m.pt", conv3d, CONV3D_ARGS, CONV3D, scale=0.1, mind=True, window=16,
                       overlap=0.5, every=4)
    _, defaults = load_feature_module(path)
    assert defaults == {"scale": 0.1, "mind": True, "window": 16, "overlap": 0.5, "every": 4}
    extractor = get_extractor(f"ckpt:{path},scale=2,window=8")
    assert {k: extractor.options[k] for k in ("scale", "mind", "window", "overlap")} == \
        {"scale": 2.0, "mind": True, "window": 8, "overlap": 0.5}
    assert get_extractor(f"ckpt:{path},mind=false").options["mind"] is False


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_files_load(tmp_path, two_layer):
    image = volume((16, 16, 16))
    with torch.no_grad():
        expected = two_layer(minmax(image)[None, None])[0]
    plain = tmp_path / "plain.ts"
    torch.jit.save(torch.jit.script(two_layer), str(plain))
    module, defaults = load_feature_module(plain)
    assert defaults == {} and isinstance(module, torch.jit.ScriptModule)
    f, _ = get_extractor(f"ckpt:{plain},window=16")(image, image)
    torch.testing.assert_close(f, expected, atol=1e-5, rtol=1e-5)
    with_defaults = save_feature_torchscript(tmp_path / "d.ts", two_layer, window=16, scale=0.5)
    assert load_feature_module(with_defaults)[1] == {"window": 16, "scale": 0.5}
    f, _ = get_extractor(f"ckpt:{with_defaults}")(image, image)
    torch.testing.assert_close(f, expected * 0.5, atol=1e-5, rtol=1e-5)


def test_module_with_wrong_output_is_rejected(tmp_path):
    path = save_module(tmp_path / "t.pt", TupleOut(), {})
    with pytest.raises(SynthgenError, match=r"returned tuple.*one \(B, C, D, H, W\) tensor"):
        get_extractor(f"ckpt:{path},window=8")(volume((8, 8, 8)), volume((8, 8, 8)))


def test_network_of_the_wrong_dimensionality_is_rejected(tmp_path, encoder):
    path = save_module(tmp_path / "e.pt", encoder, {})
    with pytest.raises(SynthgenError, match=r"3-D feature module failed on a \(1, 1, 8, 8, 8\) input"):
        get_extractor(f"ckpt:{path},window=8")(volume((8, 8, 8)), volume((8, 8, 8)))


# --- checkpoint errors ------------------------------------------------------------------------

def test_checkpoint_load_errors(tmp_path, conv3d):
    with pytest.raises(SynthgenError, match="does not exist"):
        get_extractor(f"ckpt:{tmp_path / 'missing.pt'}")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SynthgenError, match="could not read feature checkpoint"):
        load_feature_module(garbage)
    bare = tmp_path / "bare.pt"
    torch.save(conv3d.state_dict(), bare)
    with pytest.raises(SynthgenError, match="is not a synthgen-module/1 feature checkpoint"):
        load_feature_module(bare)
    payload = {"format": "synthgen-module/1", "module": "no_such_package.models:Net", "args": {},
               "state_dict": {}, "features": {}}
    torch.save(payload, tmp_path / "import.pt")
    with pytest.raises(SynthgenError, match="cannot import 'no_such_package.models:Net'.*install"):
        load_feature_module(tmp_path / "import.pt")
    torch.save({**payload, "module": "torch.nn:NoSuchLayer"}, tmp_path / "attr.pt")
    with pytest.raises(SynthgenError, match="cannot import 'torch.nn:NoSuchLayer'"):
        load_feature_module(tmp_path / "attr.pt")
    torch.save({**payload, "module": "torch.nn:Conv3d", "args": {"channels": 3}}, tmp_path / "args.pt")
    with pytest.raises(SynthgenError, match="Conv3d\\(\\*\\*args\\).*failed"):
        load_feature_module(tmp_path / "args.pt")
    wrong = dict(CONV3D_ARGS, out_channels=5)
    save_feature_checkpoint(tmp_path / "shape.pt", CONV3D, wrong, conv3d.state_dict())
    with pytest.raises(SynthgenError, match="does not match torch.nn:Conv3d.*wrong shape for bias, weight"):
        load_feature_module(tmp_path / "shape.pt")
    save_feature_checkpoint(tmp_path / "keys.pt", CONV3D, dict(CONV3D_ARGS, bias=False), conv3d.state_dict())
    with pytest.raises(SynthgenError, match="unexpected bias"):
        load_feature_module(tmp_path / "keys.pt")


def test_checkpoint_save_errors(tmp_path, conv3d):
    with pytest.raises(SynthgenError, match="not 'package.module:ClassName'"):
        save_feature_checkpoint(tmp_path / "m.pt", "torch.nn.Conv3d", CONV3D_ARGS, conv3d.state_dict())
    with pytest.raises(SynthgenError, match="unknown feature default 'scael'"):
        save_feature_checkpoint(tmp_path / "m.pt", CONV3D, CONV3D_ARGS, conv3d.state_dict(), scael=0.1)
    with pytest.raises(SynthgenError, match="overlap=2"):
        save_feature_checkpoint(tmp_path / "m.pt", CONV3D, CONV3D_ARGS, conv3d.state_dict(), overlap=2)
    assert not (tmp_path / "m.pt").exists()


# --- slice2d ------------------------------------------------------------------------------------

def per_slice(encoder: nn.Module, image: torch.Tensor, axis: int) -> torch.Tensor:
    """The encoder on every slice along ``axis``, upsampled bilinearly: (C, D, H, W)."""
    slices = minmax(image).movedim(axis, 0)[:, None]
    with torch.no_grad():
        maps = F.interpolate(encoder(slices), size=slices.shape[2:], mode="bilinear", align_corners=False)
    return maps.transpose(0, 1).movedim(1, 1 + axis)


def test_encoded_positions_include_last():
    assert encoded_positions(10, 4).tolist() == [0, 4, 8, 9]
    assert encoded_positions(9, 4).tolist() == [0, 4, 8]
    assert encoded_positions(5, 1).tolist() == [0, 1, 2, 3, 4]
    assert encoded_positions(1, 3).tolist() == [0]


def test_interpolate_slices_is_linear():
    encoded = torch.tensor([[0.0], [4.0], [6.0]])
    out = interpolate_slices(encoded, torch.tensor([0, 4, 6]), 7)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice2d_every_slice_equals_per_slice_encoding(tmp_path, encoder, axis):
    path = save_module(tmp_path / "e.pt", encoder, {})
    fixed, moving = volume((12, 16, 20), seed=0), volume((10, 12, 14), seed=1)
    f, m = get_extractor(f"slice2d:{path},axis={axis},batch=5")(fixed, moving)
    assert f.shape == (5, 12, 16, 20) and m.shape == (5, 10, 12, 14) and f.dtype == torch.float32
    torch.testing.assert_close(f, per_slice(encoder, fixed, axis), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m, per_slice(encoder, moving, axis), atol=1e-5, rtol=1e-5)


def test_slice2d_every_k_interpolates_between_encoded_slices(tmp_path, encoder):
    path = save_module(tmp_path / "e.pt", encoder, {})
    image = volume((11, 16, 16))
    full = per_slice(encoder, image, 0)
    f, _ = get_extractor(f"slice2d:{path},every=4")(image, image)
    for encoded in (0, 4, 8, 10):
        torch.testing.assert_close(f[:, encoded], full[:, encoded], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f[:, 2], (full[:, 0] + full[:, 4]) / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f[:, 9], (full[:, 8] + full[:, 10]) / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f[:, 5], full[:, 4] * 0.75 + full[:, 8] * 0.25, atol=1e-5, rtol=1e-5)


def test_slice2d_rgb_encoder_gets_repeated_standardised_slices(tmp_path):
    torch.manual_seed(6)
    rgb = Encoder2d(in_channels=3).eval()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    probed = save_module(tmp_path / "probed.pt", rgb, {"in_channels": 3}, mean=list(mean), std=list(std))
    image = volume((6, 16, 16))
    f, _ = get_extractor(f"slice2d:{probed}")(image, image)
    slices = minmax(image)[:, None].expand(-1, 3, -1, -1)
    slices = (slices - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = F.interpolate(rgb(slices), size=(16, 16), mode="bilinear").transpose(0, 1)
    torch.testing.assert_close(f, expected, atol=1e-5, rtol=1e-5)
    scripted = save_feature_torchscript(tmp_path / "rgb.ts", rgb)
    g, _ = get_extractor(f"slice2d:{scripted}")(image, image)
    assert g.shape == (5, 6, 16, 16)


def test_slice2d_size_and_pca(tmp_path, encoder):
    path = save_module(tmp_path / "e.pt", encoder, {}, size=32)
    fixed, moving = volume((6, 12, 20), seed=0), volume((6, 12, 20), seed=1)
    extractor = get_extractor(f"slice2d:{path}")
    assert extractor.encode(fixed).shape == (5, 6, 16, 16)
    f, m = extractor(fixed, moving)
    assert f.shape == (5, 6, 12, 20)
    reduced = get_extractor(f"slice2d:{path},pca=3,every=2")
    maps = joint_pca(reduced.encode(fixed), reduced.encode(moving), 3)
    f3, m3 = reduced(fixed, moving)
    assert f3.shape == (3, 6, 12, 20) and m3.shape == (3, 6, 12, 20)
    torch.testing.assert_close(f3, reduced.assemble(maps[0], fixed, None))
    torch.testing.assert_close(m3, reduced.assemble(maps[1], moving, None))


def test_slice2d_bad_mean_length(tmp_path, encoder):
    path = save_module(tmp_path / "e.pt", encoder, {}, mean=[0.1, 0.2])
    with pytest.raises(SynthgenError, match="2 mean values for a module with 1 input channels"):
        get_extractor(f"slice2d:{path}")


@pytest.mark.cuda
def test_cuda_matches_cpu(tmp_path, two_layer, encoder):
    volume_path = save_module(tmp_path / "m.pt", two_layer, {})
    slice_path = save_module(tmp_path / "e.pt", encoder, {})
    fixed, moving = volume((24, 24, 24), seed=0), volume((24, 24, 24), seed=1)
    mask = torch.zeros_like(fixed)
    mask[3:21, 3:21, 3:21] = 1
    for spec in ("mind", "intensity,pca=1", f"ckpt:{volume_path},window=16,mind=true,pca=3",
                 f"slice2d:{slice_path},every=3,pca=2"):
        on_cpu = get_extractor(spec)(fixed, moving, fixed_mask=mask)
        on_gpu = get_extractor(spec, "cuda")(fixed.cuda(), moving, fixed_mask=mask)
        for cpu, gpu in zip(on_cpu, on_gpu):
            assert gpu.device.type == "cuda"
            torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)
