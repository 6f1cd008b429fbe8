"""registration.metrics against answers known in closed form, and Learn2Reg's own formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from registration import metrics
from registration.warp import affine_displacement


def boxes(shape: tuple[int, int, int], *regions: tuple[int, tuple[slice, slice, slice]]) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int64)
    for value, box in regions:
        labels[box] = value
    return labels


def test_dice_known_overlaps_and_absent_labels() -> None:
    cube = (slice(0, 4), slice(0, 4), slice(0, 4))
    shifted = (slice(2, 6), slice(0, 4), slice(0, 4))
    fixed = boxes((8, 8, 8), (1, cube), (5, (slice(6, 8), slice(6, 8), slice(6, 8))))
    warped = boxes((8, 8, 8), (1, shifted), (2, (slice(6, 8), slice(0, 2), slice(0, 2))))
    scores = metrics.dice(fixed, torch.from_numpy(warped), [1, 2, 5, 9])
    assert scores[1] == 0.5  # 32 shared voxels of 64 + 64
    assert all(math.isnan(scores[k]) for k in (2, 5, 9))  # absent from fixed / from warped / both
    assert metrics.dice(fixed, warped).keys() == {1, 2, 5}
    assert metrics.mean_dice({1: 0.5, 2: math.nan, 3: 1.0}) == 0.75
    assert math.isnan(metrics.mean_dice({2: math.nan}))
    background = metrics.dice(fixed, warped, [0])[0]
    assert background == pytest.approx(2 * (512 - 112) / (440 + 440))  # 112 voxels in either foreground


def test_dice_judges_presence_on_the_moving_map_when_given() -> None:
    fixed = boxes((6, 6, 6), (3, (slice(0, 2),) * 3))
    warped = np.zeros_like(fixed)
    assert math.isnan(metrics.dice(fixed, warped, [3])[3])
    assert metrics.dice(fixed, warped, [3], moving_labels=fixed)[3] == 0.0
    assert math.isinf(metrics.hd95(fixed, warped, [3], (1, 1, 1), moving_labels=fixed)[3])


def test_hd95_concentric_cubes_with_anisotropic_spacing() -> None:
    shape, centre, inner, outer = (25, 25, 25), 12, 4, 8
    spacing = np.array([1.0, 2.0, 0.5])
    fixed = boxes(shape, (1, (slice(centre - inner, centre + inner + 1),) * 3))
    warped = boxes(shape, (1, (slice(centre - outer, centre + outer + 1),) * 3))
    offsets = np.argwhere(np.ones((2 * outer + 1,) * 3, dtype=bool)) - outer
    inner_shell = offsets[np.abs(offsets).max(axis=1) == inner]
    outer_shell = offsets[np.abs(offsets).max(axis=1) == outer]
    # inner shell point -> nearest face of the outer box; outer point -> its projection on the inner box
    inner_to_outer = ((outer - np.abs(inner_shell)) * spacing).min(axis=1)
    outer_to_inner = np.linalg.norm((outer_shell - np.clip(outer_shell, -inner, inner)) * spacing, axis=1)
    expected = max(np.percentile(inner_to_outer, 95), np.percentile(outer_to_inner, 95))
    got = metrics.hd95(fixed, warped, [1], tuple(spacing))[1]
    assert got == pytest.approx(expected)
    assert got != pytest.approx(metrics.hd95(fixed, warped, [1], (1.0, 1.0, 1.0))[1])
    assert metrics.hd95(fixed, fixed, [1], (1.0, 2.0, 3.0)) == {1: 0.0}
    assert math.isnan(metrics.hd95(fixed, warped, [4], (1.0, 1.0, 1.0))[4])


def test_hd95_of_a_shifted_box_is_the_shift_in_mm() -> None:
    box = (slice(5, 15), slice(4, 12), slice(6, 16))
    moved = (slice(5, 15), slice(4, 12), slice(9, 19))
    fixed, warped = boxes((20, 20, 24), (2, box)), boxes((20, 20, 24), (2, moved))
    # every surface voxel of one box is within 3 voxels of the other's surface along axis 2, and
    # the end faces are exactly 3 voxels apart: most distances are at most 3 * 0.5 mm
    assert metrics.hd95(fixed, warped, None, (1.0, 1.0, 0.5))[2] == pytest.approx(1.5)


def l2r_jacobian(disp: np.ndarray) -> np.ndarray:
    """Learn2Reg v2.0's jacobian_determinant, written from its description."""
    kernel = np.array([-0.5, 0.0, 0.5])
    grads = []
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = 3
        grads.append([ndimage.correlate(disp[c], kernel.reshape(shape), mode="constant", cval=0.0)
                      for c in range(3)])
    jac = np.array(grads) + np.eye(3).reshape(3, 3, 1, 1, 1)
    jac = jac[:, :, 2:-2, 2:-2, 2:-2]
    return np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))


def test_jacobian_matches_the_learn2reg_formula() -> None:
    rng = np.random.default_rng(0)
    disp = ndimage.gaussian_filter(rng.normal(size=(3, 14, 15, 16)), sigma=(0, 1.5, 1.5, 1.5)) * 6
    got = metrics.jacobian_determinant(disp)
    assert got.shape == (10, 11, 12) and got.dtype == np.float64
    np.testing.assert_allclose(got, l2r_jacobian(disp), rtol=0, atol=1e-12)
    assert got.min() < 1.0 < got.max()
    scaling = np.diag([2.0, 0.5, 3.0, 1.0])
    affine = metrics.jacobian_determinant(affine_displacement(scaling, (9, 9, 9)))
    np.testing.assert_allclose(affine, np.full((5, 5, 5), 3.0), rtol=1e-6)


def test_sdlogj_the_learn2reg_offset_and_fold_counting() -> None:
    e = math.e
    jac = np.array([-2.0, e - 3.0, 1.0, e])  # two folds; J + 3 = {1, e, 4, e + 3}
    assert metrics.fold_pct(jac) == 50.0
    assert metrics.fold_pct(np.clip(jac + 3.0, 1e-9, 1e9)) == 0.0  # what Learn2Reg's counter sees
    logs_plain = np.log(np.clip(jac, 1e-9, 1e9))
    assert metrics.sdlogj(jac) == pytest.approx(np.std(logs_plain))
    assert metrics.sdlogj(jac) > 9.0  # log(1e-9) = -20.7 for the folds
    assert metrics.sdlogj_l2r(jac) == pytest.approx(np.std([0.0, 1.0, math.log(4.0), math.log(e + 3.0)]))
    assert metrics.sdlogj_l2r(np.array([-2.0, e - 3.0])) == pytest.approx(0.5)
    assert metrics.sdlogj(np.array([1.0, e])) == pytest.approx(0.5)
    assert metrics.sdlogj(np.full((3, 3), 2.0)) == 0.0
    mask = np.array([False, False, True, True])
    assert metrics.fold_pct(jac, mask) == 0.0
    assert metrics.sdlogj(jac, mask) == pytest.approx(0.5)


def test_tre_samples_the_field_at_the_fixed_landmarks() -> None:
    fixed = np.array([[10.0, 10.0, 10.0], [10.3, 12.7, 9.2]])
    moving = np.array([[13.0, 14.0, 10.0], [10.3, 12.7, 9.2]])
    zero = torch.zeros(3, 24, 24, 24)
    np.testing.assert_allclose(metrics.tre(fixed, moving, zero, (2.0, 1.0, 1.0)), [math.sqrt(52.0), 0.0])
    x = np.indices((24, 24, 24), dtype=np.float64)
    linear = np.stack([0.1 * x[1], np.full(x[0].shape, -0.5), 0.05 * x[0] + 0.02 * x[2]])
    expected_shift = np.stack([0.1 * fixed[:, 1], np.full(2, -0.5), 0.05 * fixed[:, 0] + 0.02 * fixed[:, 2]], 1)
    errors = metrics.tre(fixed, fixed + expected_shift, linear, (1.5, 1.5, 1.5))
    np.testing.assert_allclose(errors, 0.0, atol=1e-6)
    assert metrics.tre(fixed, fixed, linear, (1.0, 1.0, 1.0))[0] == pytest.approx(
        np.linalg.norm(expected_shift[0]), abs=1e-6)


def test_endpoint_error_known_offsets() -> None:
    true = torch.zeros(3, 4, 5, 6)
    estimate = true.clone()
    estimate[0], estimate[1] = 3.0, 4.0
    assert metrics.endpoint_error(estimate, true) == pytest.approx(5.0)
    assert metrics.endpoint_error(estimate, true, spacing=(2.0, 1.0, 1.0)) == pytest.approx(math.sqrt(52.0))
    estimate[:, :2] = 0.0
    per_voxel = metrics.endpoint_error_map(estimate, true)
    assert per_voxel.shape == (4, 5, 6)
    assert metrics.endpoint_error(estimate, true) == pytest.approx(2.5)
    mask = np.zeros((4, 5, 6), dtype=bool)
    mask[:2] = True
    assert metrics.endpoint_error(estimate, true, mask=mask) == 0.0
