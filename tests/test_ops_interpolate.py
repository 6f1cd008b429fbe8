"""synthgen.ops.interpolate and synthgen.ops.labels: separable resampling and argmax labels."""

import torch
import torch.nn.functional as F

from synthgen.ops.interpolate import Sampling, resample_axis, resample_regular, upsample
from synthgen.ops.labels import argmax_upsampled


def test_upsample_matches_f_interpolate():
    x = torch.randn((2, 3, 6, 7, 5), generator=torch.Generator().manual_seed(0))
    for factor in (1, 2, 4):
        expected = F.interpolate(x, scale_factor=factor, mode="trilinear", align_corners=False)
        torch.testing.assert_close(upsample(x, factor), expected, rtol=0, atol=1e-5)


def test_padded_upsample_drops_the_support_nodes():
    x = torch.randn((3, 8, 8, 8), generator=torch.Generator().manual_seed(1))
    full = F.interpolate(x[None], scale_factor=4, mode="trilinear", align_corners=False)[0]
    torch.testing.assert_close(upsample(x, 4, pad=1), full[:, 4:-4, 4:-4, 4:-4], rtol=0, atol=1e-5)


def test_regular_resampling_is_exact_on_linear_ramps():
    d, h, w = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in (5, 6, 7)], indexing="ij")
    ramp = 2 * d - 3 * h + 0.5 * w
    samplings = [Sampling(0.25, 3, 12), Sampling(1.0, 2, 9), Sampling(0.0, 16, 97)]
    out = resample_regular(ramp, samplings)
    axes = [s.start + torch.arange(s.count, dtype=torch.float64) / s.factor for s in samplings]
    dd, hh, ww = torch.meshgrid(*axes, indexing="ij")
    torch.testing.assert_close(out, 2 * dd - 3 * hh + 0.5 * ww)


def test_positions_outside_the_axis_are_rejected():
    try:
        resample_axis(torch.zeros(4, 4), -1, Sampling(0.5, 2, 8))
    except ValueError:
        return
    raise AssertionError("sampling beyond the last sample accepted")


def test_upsample_to_a_shape_that_is_not_a_multiple_of_the_factor():
    x = torch.randn(3, 5, 6, 4, generator=torch.Generator().manual_seed(2))
    default = upsample(x, 3)
    assert torch.equal(upsample(x, 3, shape=(15, 18, 12)), default)
    smaller = upsample(x, 3, shape=(14, 16, 12))
    assert torch.equal(smaller, default[:, :14, :16, :12])
    larger = upsample(x, 3, shape=(17, 18, 14))  # sides with 5, 6, 4 whole blocks of 3
    assert larger.shape == (3, 17, 18, 14)
    assert torch.equal(larger[:, :15, :, :12], default)
    assert torch.equal(larger[:, 15:, :, :12], default[:, -1:].expand(3, 2, 18, 12))
    assert torch.equal(larger[:, :15, :, 12:], default[..., -1:].expand(3, 15, 18, 2))


def test_argmax_upsampled_equals_materialised_argmax():
    coarse = torch.randn((16, 5, 6, 7), generator=torch.Generator().manual_seed(2))
    samplings = [Sampling(0.0, 8, 33), Sampling(0.5, 8, 37), Sampling(0.125, 8, 46)]
    labels = argmax_upsampled(coarse, samplings)
    assert labels.dtype == torch.uint8 and labels.shape == (33, 37, 46)
    reference = resample_regular(coarse, samplings).argmax(0)
    # ties closer than 2**-19 of the range may resolve differently; random fields have ~none
    assert (labels.long() == reference).float().mean() > 0.9999


def test_argmax_upsampled_breaks_exact_ties_towards_the_lower_channel():
    coarse = torch.zeros((3, 2, 2, 2))
    coarse[1] = 1.0
    coarse[2] = 1.0
    labels = argmax_upsampled(coarse, [Sampling(0.0, 2, 3)] * 3)
    assert torch.all(labels == 1)
