"""synthgen.ops.svf, warp and jacobian: displacement conventions, integration, composition."""

import math

import torch

from synthgen.ops.grids import identity_grid
from synthgen.ops.jacobian import jacobian_determinant
from synthgen.ops.perlin import perlin_noise, random_gradients
from synthgen.ops.svf import compose, integrate_svf, upsample_displacement
from synthgen.ops.warp import warp, warp_image, warp_labels


def smooth_field(shape, amplitude, period, seed):
    """(3, *shape) Perlin displacement/velocity, |u| <~ amplitude voxels."""
    lattice = [n // period + 2 for n in shape]
    gradients = random_gradients(3, lattice, torch.Generator().manual_seed(seed))
    coords = [torch.arange(n, dtype=torch.float64) / period for n in shape]
    return perlin_noise(gradients, coords) * amplitude


def linear_volume(shape):
    """f(x) = 1 + 2 x_0 - x_1 + 0.5 x_2: trilinear interpolation reproduces it exactly."""
    x = identity_grid(shape)
    return 1 + 2 * x[0] - x[1] + 0.5 * x[2]


def interior(t, border):
    return t[..., border:-border, border:-border, border:-border]


def test_warp_samples_at_x_plus_u():
    shape = (16, 18, 20)
    u = smooth_field(shape, 2.0, 8, seed=0)
    warped = warp_image(linear_volume(shape), u)
    x = identity_grid(shape) + u
    expected = 1 + 2 * x[0] - x[1] + 0.5 * x[2]
    torch.testing.assert_close(interior(warped, 3), interior(expected, 3), rtol=0, atol=1e-4)


def test_warp_with_offset_and_scale_addresses_a_larger_or_coarser_volume():
    shape = (8, 8, 8)
    u = smooth_field(shape, 1.0, 4, seed=1)
    big = linear_volume((20, 20, 20))
    expected = warp_image(big[5:13, 4:12, 6:14], u)
    got = warp(big, u, offset=(5, 4, 6))
    torch.testing.assert_close(interior(got, 2), interior(expected, 2), rtol=0, atol=1e-4)
    coarse = warp(big, u, scale=0.5, offset=(1.0, 2.0, 3.0))
    x = (identity_grid(shape) + u) * 0.5 + torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)
    torch.testing.assert_close(coarse, 1 + 2 * x[0] - x[1] + 0.5 * x[2], rtol=0, atol=1e-4)


def test_composition_agrees_with_successive_warps():
    shape = (20, 20, 20)
    a = smooth_field(shape, 1.5, 8, seed=2)
    b = smooth_field(shape, 1.5, 8, seed=3)
    volume = linear_volume(shape)
    twice = warp_image(warp_image(volume, a), b)
    once = warp_image(volume, compose(a, b))
    torch.testing.assert_close(interior(twice, 5), interior(once, 5), rtol=0, atol=1e-3)


def test_constant_velocity_integrates_to_a_translation():
    velocity = torch.empty(3, 12, 12, 12)
    for axis, value in enumerate((1.5, -0.7, 2.25)):
        velocity[axis] = value
    torch.testing.assert_close(integrate_svf(velocity, 7), velocity, rtol=0, atol=1e-5)


def test_exp_v_composed_with_exp_minus_v_is_identity():
    velocity = smooth_field((32, 32, 32), 3.0, 16, seed=4)
    forward, backward = integrate_svf(velocity, 7), integrate_svf(-velocity, 7)
    for residual in (compose(forward, backward), compose(backward, forward)):
        assert interior(residual, 4).abs().max() < 0.05


def test_integration_is_batched_and_zero_steps_is_the_velocity():
    velocity = torch.stack([smooth_field((12, 12, 12), 2.0, 6, seed=s) for s in (5, 6)])
    batched = integrate_svf(velocity, 5)
    torch.testing.assert_close(batched[1], integrate_svf(velocity[1], 5))
    torch.testing.assert_close(integrate_svf(velocity, 0), velocity)


def test_upsampled_affine_displacement_is_the_same_map_in_fine_voxels():
    a = torch.tensor([[0.1, 0.02, 0.0], [-0.03, 0.05, 0.01], [0.0, 0.04, -0.08]])
    b = torch.tensor([0.5, -1.0, 2.0])
    coarse = torch.einsum("ij,jdhw->idhw", a, identity_grid((10, 10, 10))) + b.view(3, 1, 1, 1)
    fine = upsample_displacement(coarse, 4, pad=1)
    # coarse node j + 1 (pad) sits at fine voxel 4 j + 1.5, so fine voxel y is node (y - 1.5)/4 + 1
    y = identity_grid((32, 32, 32))
    nodes = (y - 1.5) / 4 + 1
    expected = 4 * (torch.einsum("ij,jdhw->idhw", a, nodes) + b.view(3, 1, 1, 1))
    torch.testing.assert_close(fine, expected, rtol=0, atol=1e-4)


def test_jacobian_of_identity_and_of_a_linear_map():
    assert torch.all(jacobian_determinant(torch.zeros(3, 5, 6, 7)) == 1)
    matrix = torch.tensor([[1.2, 0.3, 0.0], [-0.1, 0.9, 0.2], [0.05, 0.0, 1.1]])
    x = identity_grid((6, 7, 8))
    u = torch.einsum("ij,jdhw->idhw", matrix - torch.eye(3), x)
    det = jacobian_determinant(u[None])
    assert det.shape == (1, 6, 7, 8)
    torch.testing.assert_close(det, torch.full_like(det, float(torch.linalg.det(matrix))),
                               rtol=0, atol=1e-4)


def test_jacobian_flags_a_fold():
    u = torch.zeros(3, 8, 8, 8)
    u[0] = -1.5 * identity_grid((8, 8, 8))[0]          # x_0 -> -0.5 x_0: orientation reversed
    assert torch.all(jacobian_determinant(u) < 0)


def test_warp_labels_matches_nearest_grid_sample_and_keeps_dtype():
    generator = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 200, (18, 19, 20), generator=generator, dtype=torch.uint8)
    u = smooth_field((18, 19, 20), 3.0, 8, seed=8)
    fast = warp_labels(labels, u)
    reference = warp(labels.float(), u, mode="nearest").to(torch.uint8)
    assert fast.dtype == torch.uint8
    assert (fast == reference).float().mean() > 0.999          # ties at exact half voxels only


def test_warp_labels_zero_padding_and_offset():
    labels = torch.arange(1, 1 + 6 ** 3, dtype=torch.int32).reshape(6, 6, 6)
    shift = torch.zeros(3, 6, 6, 6)
    shift[0] = 2.0
    out = warp_labels(labels, shift, padding="zeros")
    assert torch.equal(out[:4], labels[2:]) and torch.all(out[4:] == 0)
    window = warp_labels(labels, torch.zeros(3, 2, 2, 2), offset=(1, 2, 3))
    assert torch.equal(window, labels[1:3, 2:4, 3:5])
    assert math.isclose(float(warp_labels(labels, shift)[5, 0, 0]), float(labels[5, 0, 0]))
