"""Augmentation transforms (synthgen.ops.augment): kernels against MONAI/TorchIO with identical
parameters, the properties each transform promises, determinism, probabilities, batching."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthgen.ops.augment import (OfflineConfig, OnlineAugment, OnlineAugmentConfig, affine, apply_offline,
                                  bias_field, blur, contrast, flip, gamma, gaussian_smooth, gibbs, kspace_spike,
                                  low_resolution, motion, noise, normalize, offline_params, sharpen)
from synthgen.ops.augment._common import filter_axis, pad_indices
from synthgen.ops.augment.scale_intensity import scale_intensity
from synthgen.ops.augment.threshold import threshold_intensity
from synthgen.seeding import sample_generator

monai_transforms = pytest.importorskip("monai.transforms")
tio = pytest.importorskip("torchio")

SHAPE = (32, 36, 40)
TRUE = torch.tensor([True])


def rand(shape=SHAPE, seed=0, batch=1) -> torch.Tensor:
    return torch.rand(batch, 1, *shape, generator=torch.Generator().manual_seed(seed))


def smooth_image(size: int = 40, seed: int = 0) -> torch.Tensor:
    """A blob image with a zero border (so padding conventions do not matter)."""
    x = torch.zeros(1, 1, size, size, size)
    x[0, 0, 8:size - 8, 10:size - 10, 12:size - 12] = torch.rand(size - 16, size - 20, size - 24,
                                                                  generator=torch.Generator().manual_seed(seed))
    return F.avg_pool3d(F.pad(x, (1,) * 6), 3, 1)


def step_image(size: int = 32) -> torch.Tensor:
    x = torch.full((1, 1, size, size, size), 0.2)
    x[..., size // 2:] = 0.8
    return x


def high_frequency_energy(x: torch.Tensor, fraction: float = 0.5) -> float:
    """Spectral energy beyond ``fraction`` of the Nyquist radius."""
    spectrum = torch.fft.fftn(x.double(), dim=(-3, -2, -1)).abs() ** 2
    freqs = [torch.fft.fftfreq(n, dtype=torch.float64) * 2 for n in x.shape[-3:]]
    radius = (freqs[0].view(-1, 1, 1) ** 2 + freqs[1].view(1, -1, 1) ** 2 + freqs[2].view(1, 1, -1) ** 2).sqrt()
    return float(spectrum[..., radius > fraction].sum())


def slice_params(params, b: int):
    """Row ``b`` of batched params (tensor fields with a batch axis; nested dataclasses)."""
    if dataclasses.is_dataclass(params):
        return dataclasses.replace(params, **{f.name: slice_params(getattr(params, f.name), b)
                                              for f in dataclasses.fields(params)})
    if isinstance(params, tuple):
        return tuple(slice_params(p, b) for p in params)
    if isinstance(params, torch.Tensor) and params.dim() > 0:
        return params[b:b + 1]
    return params


def params_equal(p, q) -> bool:
    if dataclasses.is_dataclass(p):
        return all(params_equal(getattr(p, f.name), getattr(q, f.name)) for f in dataclasses.fields(p))
    if isinstance(p, tuple):
        return all(params_equal(a, b) for a, b in zip(p, q))
    if isinstance(p, torch.Tensor):
        return p.device.type == "cpu" and torch.equal(p, q)
    return p == q


# ----------------------------------------------------------------------------- shared helpers

@pytest.mark.parametrize("mode", ["replicate", "symmetric", "zeros"])
def test_filter_axis_matches_padded_correlation(mode):
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 5, 9):
        for radius in (0, 1, 3, 6):
            x = torch.rand(2, 1, n, 3, 4, generator=g, dtype=torch.float64)
            w = torch.rand(2 * radius + 1, generator=g, dtype=torch.float64)
            w = (w + w.flip(0)) / 2
            source = torch.cat([x, torch.zeros(2, 1, 1, 3, 4, dtype=torch.float64)], 2) if mode == "zeros" else x
            padded = source.index_select(2, pad_indices(n, radius, radius, mode, "cpu"))
            expected = sum(padded.narrow(2, t, n) * w[t] for t in range(2 * radius + 1))
            assert torch.allclose(filter_axis(x, 2, w, mode), expected)
            per_sample = filter_axis(x, 2, torch.stack([w, 2 * w]), mode)
            assert torch.allclose(per_sample, torch.cat([expected[:1], 2 * expected[1:]]))


# ----------------------------------------------------------------------------- offline transforms

def test_scale_intensity_and_threshold():
    x = rand() * 5 - 2
    y = scale_intensity(x)
    assert float(y.min()) == 0.0 and float(y.max()) == 1.0
    assert torch.allclose(y, torch.as_tensor(monai_transforms.ScaleIntensity()(x[0]))[None])
    assert torch.equal(scale_intensity(torch.full((4, 4, 4), 3.0)), torch.zeros(4, 4, 4))
    t = threshold_intensity(x)
    assert float(t.min()) == 0.0 and torch.equal(t[x > 0], x[x > 0])
    assert torch.equal(t, torch.as_tensor(monai_transforms.ThresholdIntensity(0.0, above=True)(x[0]))[None])


def test_bias_field_matches_monai_legendre():
    x = rand()
    c = torch.rand(1, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.075
    field = monai_transforms.RandBiasField()._generate_random_field(list(SHAPE), 3, c[0].tolist())
    expected = x[0, 0].numpy() * np.exp(field)
    assert np.allclose(bias_field.bias_field(x, c, 3, "legendre")[0, 0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_bias_field_matches_torchio_monomials():
    x = rand()
    c = torch.rand(1, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64) - 0.5
    expected = tio.BiasField(coefficients=c[0].tolist(), order=3)(tio.ScalarImage(tensor=x[0])).data[0]
    assert torch.allclose(bias_field.bias_field(x, c, 3, "monomial")[0, 0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("basis", ["legendre", "monomial"])
def test_bias_field_is_smooth_and_multiplicative(basis):
    params = bias_field.sample_params(torch.Generator().manual_seed(0), 1, p=1.0,
                                      coeff_range=(-0.5, 0.5), basis=basis)
    ones = torch.ones(1, 1, *SHAPE)
    field = bias_field.apply(ones, params)
    assert float(field.min()) > 0
    x = rand() + 0.1
    assert torch.allclose(bias_field.apply(x, params), x * field, rtol=1e-6)
    log = field.double().log()[0, 0]
    for axis in range(3):  # a cubic along every axis: 4th differences vanish
        assert float(log.diff(n=4, dim=axis).abs().max()) < 1e-4


def monai_spike_value(x: torch.Tensor) -> float:
    k = torch.fft.fftshift(torch.fft.fftn(x[0, 0].double()))
    return float(torch.log(k.abs() + 1e-10).mean() * 2.5)


@pytest.mark.parametrize("loc", [(5, 30, 7), (16, 18, 20), (31, 0, 39)])
def test_kspace_spike_matches_monai(loc):
    x = rand()
    fraction = torch.tensor([[(i + 0.5) / n for i, n in zip(loc, SHAPE)]], dtype=torch.float64)
    index = kspace_spike.location_index(fraction, SHAPE)
    assert index.tolist() == [list(loc)]
    ours = kspace_spike.kspace_spike(x, index, torch.tensor([1.0]))
    expected = monai_transforms.KSpaceSpikeNoise([(0,) + loc], [monai_spike_value(x)])(x[0])
    assert float((ours - x).abs().max()) > 1e-3  # the spike is visible
    assert torch.allclose(ours[0], torch.as_tensor(expected), atol=2e-6)
    # a single Fourier component (and its Hermitian partner) changed
    changed = torch.fft.fftn((ours - x)[0, 0].double()).abs() > 1e-3
    assert 1 <= int(changed.sum()) <= 2


def test_contrast_matches_monai_and_fixes_endpoints():
    x = rand()
    x[0, 0, 0, 0, 0], x[0, 0, -1, -1, -1] = 0.0, 1.0
    out = contrast.adjust_contrast(x, torch.tensor([1.7]))
    assert float(out[0, 0, 0, 0, 0]) == 0.0 and float(out[0, 0, -1, -1, -1]) == 1.0
    assert torch.allclose(out[0], torch.as_tensor(monai_transforms.AdjustContrast(1.7)(x[0])), atol=1e-6)
    constant = torch.full((1, 1, 4, 4, 4), 0.3)
    assert torch.equal(contrast.adjust_contrast(constant, torch.tensor([2.0])), constant)


def test_gaussian_smooth_matches_monai_with_zero_padding():
    x = rand()
    sigma = torch.tensor([[0.1, 0.25, 0.333]], dtype=torch.float64)
    expected = monai_transforms.GaussianSmooth(sigma=sigma[0].tolist())(x[0])
    assert torch.allclose(gaussian_smooth.gaussian_smooth(x, sigma, "zeros")[0], torch.as_tensor(expected), atol=1e-6)
    # default replicate padding keeps the faces' brightness (up to the kernel's ~1e-5 truncation)
    constant = torch.ones(1, 1, *SHAPE)
    assert torch.allclose(gaussian_smooth.gaussian_smooth(constant, sigma), constant, atol=1e-4)
    assert float(gaussian_smooth.gaussian_smooth(constant, sigma, "zeros").min()) < 0.95


def test_sharpen_matches_monai_and_sharpens_edges():
    x = rand()
    s1 = torch.tensor([[0.6, 0.8, 1.0]], dtype=torch.float64)
    s2 = torch.tensor([[0.55, 0.7, 0.5]], dtype=torch.float64)
    expected = monai_transforms.GaussianSharpen(s1[0].tolist(), s2[0].tolist(), 20.0)(x[0])
    ours = sharpen.sharpen(x, s1, s2, torch.tensor([20.0]), "zeros")
    assert torch.allclose(ours[0], torch.as_tensor(expected), atol=2e-5)
    step = step_image()
    out = sharpen.sharpen(step, s1, s2, torch.tensor([20.0]))
    line = out[0, 0, 16, 16]
    assert float(line.diff().abs().max()) > 1.2 * 0.6  # steeper than the input's one-voxel step of 0.6
    assert float(line.max()) > 1.0 and float(line.min()) < 0.0  # overshoot on both sides of the edge
    # flat far from the edge (MONAI's erf kernels sum to 1 - 1e-5)
    assert torch.allclose(line[:8], torch.full((8,), 0.2), atol=2e-4)
    assert torch.allclose(sharpen.sharpen(torch.ones(1, 1, *SHAPE), s1, s2, torch.tensor([20.0])),
                          torch.ones(1, 1, *SHAPE), atol=2e-4)  # no bright faces (replicate)


def test_sharpen_sigma2_law():
    p = sharpen.sample_params(torch.Generator().manual_seed(0), 500)
    assert bool((p.sigma1 >= 0.5).all() and (p.sigma1 <= 1).all())
    assert bool((p.sigma2 >= 0.5).all() and (p.sigma2 <= p.sigma1).all())
    assert bool((p.alpha >= 10).all() and (p.alpha <= 30).all())


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.333])
def test_gibbs_matches_monai_and_removes_high_frequencies(alpha):
    x = rand()
    a = torch.tensor([alpha], dtype=torch.float64)
    ours = gibbs.gibbs(x, a)
    assert torch.allclose(ours[0], torch.as_tensor(monai_transforms.GibbsNoise(alpha)(x[0])), atol=2e-6)
    # nothing survives beyond the mask radius (index units; +1 for the half-bin centre offset)
    index = [torch.fft.fftfreq(n, dtype=torch.float64) * n for n in SHAPE]
    distance = (index[0].view(-1, 1, 1) ** 2 + index[1].view(1, -1, 1) ** 2 + index[2].view(1, 1, -1) ** 2).sqrt()
    outside = distance > (1 - alpha) * max(SHAPE) * 2 ** 0.5 / 2 + 1
    assert bool(outside.any())
    spectrum = torch.fft.fftn(ours[0, 0].double()).abs() ** 2
    assert float(spectrum[outside].sum()) < 1e-9 * float(spectrum.sum())
    assert high_frequency_energy(ours, 0.75) < high_frequency_energy(x, 0.75)


def test_low_resolution_matches_monai_and_removes_high_frequencies():
    x = rand()
    transform = monai_transforms.RandSimulateLowResolution(prob=1.0, downsample_mode="nearest-exact")
    transform.randomize()
    transform.zoom_factor = 0.63
    ours = low_resolution.simulate_low_resolution(x, 0.63)
    assert torch.equal(ours[0], torch.as_tensor(transform(x[0], randomize=False)))
    assert high_frequency_energy(ours) < 0.3 * high_frequency_energy(x)


def test_offline_pipeline_range_dtype_determinism():
    view = rand((32, 32, 32))[0, 0] * 200
    for i in range(8):
        a = apply_offline(view, offline_params(sample_generator(5, i)))
        b = apply_offline(view, offline_params(sample_generator(5, i)))
        assert a.dtype == torch.float32 and a.shape == view.shape
        assert float(a.min()) == 0.0 and float(a.max()) == 1.0
        assert torch.equal(a, b)


def test_offline_pipeline_all_transforms_threads_and_batch():
    config = OfflineConfig(p_bias=1, p_spike=1, p_contrast=1, p_smooth=1, p_gibbs=1, p_sharpen=1,
                           p_low_resolution=1)
    views = rand((32, 32, 32), batch=3) * 100
    params = offline_params(sample_generator(0, 0), config, batch_size=3)
    previous = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(apply_offline(views, params))
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(outs[0], outs[1])
    for b in range(3):  # each sample of a batch equals that sample alone
        alone = apply_offline(views[b, 0], slice_params(params, b))
        assert torch.allclose(outs[0][b, 0], alone, atol=1e-6)


def test_offline_params_probabilities_and_fixed_draws():
    g = torch.Generator().manual_seed(0)
    draws = [offline_params(g) for _ in range(400)]
    rates = {
        "bias": (0.98, [bool(d.bias.fire[0]) for d in draws]),
        "spike": (0.2, [bool(d.spike.fire[0]) for d in draws]),
        "contrast": (0.5, [bool(d.contrast.fire[0]) for d in draws]),
        "smooth": (0.5, [bool(d.smooth.fire[0]) for d in draws]),
        "gibbs": (0.5, [bool(d.gibbs.fire[0]) for d in draws]),
        "sharpen": (0.25, [bool(d.sharpen.fire[0]) for d in draws]),
        "low_resolution": (0.333, [bool(d.low_resolution.fire[0]) for d in draws]),
    }
    for name, (p, fired) in rates.items():
        sd = (400 * p * (1 - p)) ** 0.5
        assert abs(sum(fired) - 400 * p) <= 3.5 * sd + 1, name
    # the number of draws does not depend on the probabilities
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    offline_params(g1, OfflineConfig(p_bias=0, p_spike=0, p_gibbs=0))
    offline_params(g2, OfflineConfig(p_bias=1, p_spike=1, p_gibbs=1))
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_offline_params_ranges():
    p = offline_params(torch.Generator().manual_seed(0), batch_size=300)
    assert float(p.bias.coefficients.min()) >= 0 and float(p.bias.coefficients.max()) <= 0.075
    assert float(p.contrast.gamma.min()) >= 0.5 and float(p.contrast.gamma.max()) <= 2
    assert float(p.smooth.sigma.max()) <= 0.333 and float(p.gibbs.alpha.max()) <= 0.333
    assert float(p.low_resolution.zoom.min()) >= 0.5 and float(p.low_resolution.zoom.max()) <= 1
    assert float(p.spike.factor.min()) >= 0.95 and float(p.spike.factor.max()) <= 1.1


# ----------------------------------------------------------------------------- online transforms

def test_percentile_normalisation_matches_numpy():
    for shape in ((16, 16, 16), (64, 64, 64)):
        x = rand(shape, batch=2) * 3 + 1
        q = normalize.upper_percentile(x, 99.99)
        for b in range(2):
            assert abs(float(q[b]) - np.percentile(x[b].numpy(), 99.99)) < 1e-6
        out = normalize.percentile_normalize(x)
        for b in range(2):
            low, high = x[b].min(), np.percentile(x[b].numpy(), 99.99)
            assert torch.allclose(out[b], (x[b] - low) / (float(high) - low), atol=1e-6)
    ties = torch.zeros(1, 1, 64, 64, 64)
    ties[..., :2] = 1.0  # many equal top values: the prefilter must keep them all
    assert float(normalize.upper_percentile(ties, 99.99)[0]) == 1.0


def test_flip_is_an_involution_and_matches_torchio():
    x = rand(batch=4)
    labels = (x * 10).to(torch.uint8)
    params = flip.sample_params(torch.Generator().manual_seed(3), 4, p=1.0)
    assert params.axes.any()
    assert torch.equal(flip.apply(flip.apply(x, params), params), x)
    assert torch.equal(flip.apply(flip.apply(labels, params), params), labels)
    for b in range(4):
        axes = params.flipped_axes(b)
        expected = tio.Flip(axes=tuple(axes))(tio.ScalarImage(tensor=x[b])).data if axes else x[b]
        assert torch.equal(flip.apply(x, params)[b], expected)


def test_flip_probabilities():
    p = flip.sample_params(torch.Generator().manual_seed(0), 4000)
    effective = p.axes & p.fire[:, None]
    assert abs(float(p.fire.double().mean()) - 0.9) < 0.02
    assert bool((abs(effective.double().mean(0) - 0.45) < 0.03).all())


def test_affine_identity_params_are_identity():
    x = rand(batch=2)
    labels = (x * 7).to(torch.int16)
    params = affine.identity_params(2)
    assert torch.allclose(affine.apply(x, params), x, atol=1e-5)
    assert torch.equal(affine.apply(labels, params), labels)


def test_affine_matches_torchio():
    x = smooth_image()
    scales = torch.tensor([[0.8, 1.2, 1.1]], dtype=torch.float64)
    degrees = torch.tensor([[20.0, -10.0, 30.0]], dtype=torch.float64)
    translation = torch.tensor([[2.0, -3.0, 1.5]], dtype=torch.float64)
    ours = affine.apply(x, affine.AffineParams(TRUE, scales, degrees, translation))
    expected = tio.Affine(scales=scales[0].tolist(), degrees=degrees[0].tolist(),
                          translation=translation[0].tolist())(tio.ScalarImage(tensor=x[0])).data
    assert torch.allclose(ours[0], expected, atol=1e-5)


def test_affine_labels_stay_in_label_set():
    labels = torch.randint(3, 9, (2, 1, 24, 24, 24), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    params = affine.sample_params(torch.Generator().manual_seed(1), 2, p=1.0)
    out = affine.apply(labels, params)
    assert out.dtype == torch.uint8 and out.shape == labels.shape
    assert set(out.unique().tolist()) <= set(labels.unique().tolist()) | {0}
    assert bool((out == 0).any())  # rotated by up to 45 degrees: padding reaches the corners


def test_blur_matches_torchio():
    x = rand()
    std = torch.tensor([[0.0, 0.7, 1.9]], dtype=torch.float64)
    expected = tio.Blur(std=std[0].tolist())(tio.ScalarImage(tensor=x[0])).data
    assert torch.allclose(blur.gaussian_blur(x, std)[0], expected, atol=1e-6)


def test_gamma_matches_torchio():
    x = rand() - 0.3
    assert torch.equal(gamma.signed_gamma(x, torch.tensor([0.8]))[0],
                       tio.Gamma(0.8)(tio.ScalarImage(tensor=x[0])).data)
    y = rand()
    y[0, 0, 0, 0, 0], y[0, 0, 1, 0, 0] = 0.0, 1.0
    out = gamma.signed_gamma(y, torch.tensor([1.4]))
    assert float(out[0, 0, 0, 0, 0]) == 0.0 and float(out[0, 0, 1, 0, 0]) == 1.0
    assert torch.equal(out, tio.Gamma(1.4)(tio.ScalarImage(tensor=y[0])).data[None])


def test_noise_is_seeded_and_scaled():
    x = torch.zeros(2, 1, 32, 32, 32)
    params = noise.sample_params(torch.Generator().manual_seed(0), 2, p=1.0)
    a, b = noise.apply(x, params), noise.apply(x, params)
    assert torch.equal(a, b)
    for i in range(2):
        assert abs(float(a[i].std()) / float(params.std[i]) - 1) < 0.02
    assert not torch.equal(a[0] / params.std[0], a[1] / params.std[1])


def test_motion_matches_torchio_for_translations():
    """Without rotation TorchIO's lost rotation centre does not matter; translations are in LPS
    for TorchIO's motion, i.e. the first two axes are negated in voxel space."""
    x = smooth_image()
    translation = torch.tensor([[[3.0, -2.0, 4.0], [-1.0, 5.0, -3.0]]], dtype=torch.float64)
    times = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    ours = motion.motion(x, torch.zeros(1, 2, 3, dtype=torch.float64),
                         translation * torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64), times)
    expected = tio.Motion(degrees=np.zeros((2, 3)), translation=translation[0].numpy(), times=times[0].numpy(),
                          image_interpolation="linear")(tio.ScalarImage(tensor=x[0])).data
    assert torch.allclose(ours[0], expected, atol=1e-5)
    still = motion.motion(x, torch.zeros(1, 2, 3, dtype=torch.float64), torch.zeros(1, 2, 3, dtype=torch.float64),
                          times)
    assert torch.allclose(still, x, atol=1e-5)


def test_motion_segment_weights_partition_kspace():
    params = motion.sample_params(torch.Generator().manual_seed(0), 50, p=1.0)
    weights = motion.segment_weights(params.times, 32)
    assert torch.allclose(weights.sum(1), torch.ones(50, 17))
    assert bool((weights[:, 0, 0] == 1).all())  # the original image owns the k-space centre


def batch_of(b: int = 2, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(b, 10, 4, 4, 4, generator=g)
    labels = F.interpolate(coarse, size=(size,) * 3, mode="trilinear").argmax(1, keepdim=True).to(torch.uint8)
    views = [(torch.rand(b, 1, size, size, size, generator=g) * 0.2 + labels / 10).to(torch.float16)
             for _ in range(2)]
    return {"view1": views[0], "view2": views[1], "labels": labels, "index": torch.arange(b)}


def test_online_augment_outputs():
    batch = batch_of(3)
    out = OnlineAugment()(batch, torch.Generator().manual_seed(0))
    for key in ("view1", "view2"):
        assert out[key].dtype == torch.float32 and out[key].shape == batch[key].shape
        assert bool(torch.isfinite(out[key]).all())
    assert out["labels"].dtype == torch.uint8 and out["labels"].shape == batch["labels"].shape
    assert set(out["labels"].unique().tolist()) <= set(batch["labels"].unique().tolist()) | {0}
    assert torch.equal(out["index"], batch["index"])


def test_online_augment_determinism_and_cpu_params():
    batch = batch_of(2)
    augment = OnlineAugment()
    a = augment(batch, torch.Generator().manual_seed(4))
    b = augment(batch, torch.Generator().manual_seed(4))
    assert all(torch.equal(a[k], b[k]) for k in ("view1", "view2", "labels"))
    p = augment.sample_params(2, torch.Generator().manual_seed(4))
    q = augment.sample_params(2, torch.Generator().manual_seed(4))
    assert params_equal(p, q)
    # bitwise independent of the CPU thread count (every transform firing)
    everything = OnlineAugment(OnlineAugmentConfig(p_flip=1, p_affine=1, p_blur=1, p_noise=1, p_bias=1,
                                                   p_gamma=1, p_motion=1))
    previous = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(everything(batch, torch.Generator().manual_seed(4)))
    finally:
        torch.set_num_threads(previous)
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in ("view1", "view2", "labels"))


def test_online_augment_batch_equals_samples():
    """Each sample of a batch gets exactly its own parameters (all transforms firing)."""
    config = OnlineAugmentConfig(p_flip=1, p_affine=1, p_blur=1, p_noise=1, p_bias=1, p_gamma=1, p_motion=1)
    augment = OnlineAugment(config)
    batch = batch_of(3)
    params = augment.sample_params(3, torch.Generator().manual_seed(2))
    together = augment.apply(batch, params)
    for b in range(3):
        alone = augment.apply({k: v[b:b + 1] for k, v in batch.items()}, slice_params(params, b))
        assert torch.equal(together["labels"][b:b + 1], alone["labels"])
        for key in ("view1", "view2"):
            assert torch.allclose(together[key][b:b + 1], alone[key], atol=1e-5)


def test_online_augment_identity_config_only_normalises():
    config = dict(p_flip=0, p_affine=0, p_blur=0, p_noise=0, p_bias=0, p_gamma=0, p_motion=0)
    batch = batch_of(2)
    out = OnlineAugment(config)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(out["labels"], batch["labels"])
    assert torch.allclose(out["view1"], normalize.percentile_normalize(batch["view1"]))


def test_online_probabilities():
    augment = OnlineAugment()
    p = augment.sample_params(4000, torch.Generator().manual_seed(0))
    expected = {"affine": (p.affine.fire, 0.5), "blur": (p.views[0].blur.fire, 0.33),
                "noise": (p.views[1].noise.fire, 0.33), "bias": (p.views[0].bias.fire, 0.5),
                "gamma": (p.views[1].gamma.fire, 0.5), "motion": (p.views[0].motion.fire, 0.33)}
    for name, (fire, prob) in expected.items():
        assert abs(float(fire.double().mean()) - prob) < 0.03, name
    assert not torch.equal(p.views[0].blur.fire, p.views[1].blur.fire)  # views drawn independently
    assert float(p.affine.scales.min()) >= 0.6 and float(p.affine.scales.max()) <= 1.4
    assert float(p.affine.degrees.abs().max()) <= 45
    assert float(p.views[0].gamma.log_gamma.abs().max()) <= 0.4
    assert float(p.views[0].bias.coefficients.abs().max()) <= 0.5


@pytest.mark.cuda
def test_online_augment_on_cuda_matches_cpu_where_deterministic():
    config = dict(p_noise=0)  # noise fields come from device generators
    batch = batch_of(2)
    params = OnlineAugment(config).sample_params(2, torch.Generator().manual_seed(1))
    cpu = OnlineAugment(config).apply(batch, params)
    gpu = OnlineAugment(config).apply({k: v.cuda() for k, v in batch.items()}, params)
    for key in ("view1", "view2"):
        assert torch.allclose(cpu[key], gpu[key].cpu(), atol=1e-4)
