"""GMM appearance, multiplicative texture and ``render_view`` (synthgen.ops.appearance)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest
from torch.overrides import TorchFunctionMode

from synthgen.ops import appearance as A
from synthgen.seeding import sample_generator

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def blob_labels(size: int = 32, k: int = 12, seed: int = 0) -> torch.Tensor:
    """A (size^3) uint8 label map of k smooth blobs (values 0..k-1)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, k, 4, 4, 4, generator=g)
    return F.interpolate(coarse, size=(size,) * 3, mode="trilinear").argmax(1)[0].to(torch.uint8)


def slab_labels() -> torch.Tensor:
    """Four big regions (64 x 64 x 16 voxels each) for per-label statistics."""
    labels = torch.zeros(64, 64, 64, dtype=torch.uint8)
    for k in range(4):
        labels[:, :, 16 * k:16 * (k + 1)] = k
    return labels


def test_gmm_params_ranges_and_determinism():
    p1 = A.sample_gmm_params(50, torch.Generator().manual_seed(3))
    p2 = A.sample_gmm_params(50, torch.Generator().manual_seed(3))
    assert torch.equal(p1.means, p2.means) and torch.equal(p1.stds, p2.stds)
    assert p1.zero_background == p2.zero_background
    assert p1.means.shape == (50,) and p1.num_labels == 50
    assert float(p1.means.min()) >= 25 and float(p1.means.max()) <= 255
    assert float(p1.stds.min()) >= 5 and float(p1.stds.max()) <= 20


def test_gmm_per_label_statistics_before_normalisation():
    labels = slab_labels()
    g = torch.Generator().manual_seed(0)
    params = A.GMMParams(A.sample_gmm_params(4, g).means, A.sample_gmm_params(4, g).stds, False)
    raw = A.render_gmm(labels, params, torch.Generator().manual_seed(1), normalize=False)
    for k in range(4):
        values = raw[labels == k].double()
        n = values.numel()
        assert n == 64 * 64 * 16
        mean, std = float(params.means[k]), float(params.stds[k])
        assert abs(float(values.mean()) - mean) < 5 * std / n ** 0.5
        assert abs(float(values.std()) / std - 1) < 0.02


def test_gmm_zero_background_and_normalisation():
    labels = slab_labels()
    params = A.sample_gmm_params(4, torch.Generator().manual_seed(0))
    zero = A.GMMParams(params.means, params.stds, True)
    raw = A.render_gmm(labels, zero, torch.Generator().manual_seed(1), normalize=False)
    assert bool((raw[labels == 0] == 0).all())
    assert bool((raw[labels != 0] != 0).any())
    out = A.render_gmm(labels, zero, torch.Generator().manual_seed(1))
    assert out.dtype == torch.float32 and out.shape == labels.shape
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert bool((out[labels == 0] == 0).all())
    # clip at 0 then min-max, exactly as published
    expected = raw.clamp(min=0)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(out, expected, atol=1e-6)


def test_gmm_generator_equals_explicit_noise():
    labels = blob_labels()
    params = A.sample_gmm_params(12, torch.Generator().manual_seed(0))
    from_generator = A.render_gmm(labels, params, torch.Generator().manual_seed(5))
    noise = A.voxel_noise(labels.shape, torch.Generator().manual_seed(5))
    assert torch.equal(from_generator, A.render_gmm(labels, params, noise))
    means, stds = params.tables()
    if not params.zero_background:
        assert torch.equal(means, params.means.float())
    manual = means[labels.long()] + stds[labels.long()] * noise
    assert torch.allclose(A.render_gmm(labels, params, noise, normalize=False), manual, rtol=1e-6, atol=1e-4)


class _CountOps(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("normalize", [True, False])
def test_render_gmm_has_no_loop_over_labels(normalize):
    """The number of torch operations does not depend on the number of labels."""
    counts = []
    for k in (2, 200):
        labels = (torch.arange(32 ** 3) % k).view(32, 32, 32).to(torch.int16)
        params = A.sample_gmm_params(k, torch.Generator().manual_seed(0))
        noise = A.voxel_noise(labels.shape, torch.Generator().manual_seed(0))
        with _CountOps() as mode:
            A.render_gmm(labels, params, noise, normalize=normalize)
        counts.append(mode.count)
    assert counts[0] == counts[1]


def test_gmm_rejects_out_of_range_labels():
    params = A.sample_gmm_params(3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        A.render_gmm(torch.full((4, 4, 4), 3, dtype=torch.uint8), params, torch.Generator())
    with pytest.raises(TypeError):
        A.render_gmm(torch.zeros(4, 4, 4), params, torch.Generator())


def test_background_zero_probability():
    g = torch.Generator().manual_seed(0)
    zeros = sum(A.sample_gmm_params(5, g).zero_background for _ in range(400))
    assert 100 - 3 * 8.7 <= zeros <= 100 + 3 * 8.7  # Binomial(400, 0.25): sd 8.66


def test_texture_matches_published_interpolation():
    """sum_s std_s * F.interpolate(grid_s, x s, trilinear), as draw_perlin_volume."""
    shape = (32, 32, 32)
    params = A.sample_texture_params(shape, torch.Generator().manual_seed(0))
    assert [tuple(g.shape) for g in params.grids] == [(8,) * 3, (4,) * 3, (2,) * 3, (1,) * 3]
    assert float(params.stds.min()) >= 0 and float(params.stds.max()) <= 5
    expected = torch.zeros(shape)
    for scale, std, grid in zip(params.scales, params.stds.tolist(), params.grids):
        expected += F.interpolate((std * grid)[None, None], scale_factor=scale, mode="trilinear")[0, 0]
    assert torch.allclose(A.render_texture(params, shape), expected, atol=1e-5)


def test_texture_crops_non_multiple_shapes():
    shape = (20, 24, 28)
    params = A.sample_texture_params(shape, torch.Generator().manual_seed(0))
    texture = A.render_texture(params, shape)
    assert texture.shape == shape
    view = torch.rand(shape)
    assert torch.allclose(A.apply_texture(view, texture), view * (1 + 0.02 * texture))


@pytest.mark.parametrize("device", DEVICES)
def test_render_view_range_dtype_and_determinism(device):
    labels = blob_labels(32)
    a = A.render_view(labels, sample_generator(7, 3), device)
    b = A.render_view(labels, sample_generator(7, 3), device)
    assert a.dtype == torch.float32 and a.shape == labels.shape and a.device.type == device
    assert float(a.min()) == 0.0 and float(a.max()) == 1.0
    assert torch.equal(a, b)
    c = A.render_view(labels, sample_generator(7, 4), device)
    assert not torch.equal(a, c)
    # two calls on one generator: the two independent views of a sample
    g = sample_generator(7, 3)
    first, second = A.render_view(labels, g, device), A.render_view(labels, g, device)
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_render_view_label_dtypes_agree():
    labels = blob_labels(32)
    outs = [A.render_view(labels.to(dtype), sample_generator(1, 1))
            for dtype in (torch.uint8, torch.int16, torch.int64)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_render_view_independent_of_thread_count():
    labels = blob_labels(48, k=20)
    previous = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append([A.render_view(labels, sample_generator(11, i)) for i in range(6)])
    finally:
        torch.set_num_threads(previous)
    for one, two in zip(*results):
        assert torch.equal(one, two)


def test_view_params_are_cpu_and_identical():
    p1 = A.sample_view_params(12, (32, 32, 32), sample_generator(0, 0))
    p2 = A.sample_view_params(12, (32, 32, 32), sample_generator(0, 0))
    assert torch.equal(p1.gmm.means, p2.gmm.means)
    assert all(torch.equal(x, y) and x.device.type == "cpu" for x, y in zip(p1.texture.grids, p2.texture.grids))
    assert torch.equal(p1.offline.bias.coefficients, p2.offline.bias.coefficients)
