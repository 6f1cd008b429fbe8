"""registration.metrics against answers known in closed form, and Learn2Reg's own formulas."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from registration import metrics
from registration.datasets import load_pair, read_pairs
from registration.warp import affine_displacement

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PAIRS = Path(__file__).resolve().parents[1] / "benchmarks" / "registration" / "pairs"


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


def test_a_label_wiped_out_by_the_warp_scores_dice_0_and_hd95_inf() -> None:
    fixed = boxes((8, 8, 8), (3, (slice(0, 2),) * 3), (4, (slice(4, 8),) * 3))
    moving = boxes((8, 8, 8), (3, (slice(1, 3),) * 3), (4, (slice(4, 8),) * 3), (5, (slice(0, 1),) * 3))
    warped = np.where(moving == 3, 0, moving)  # the warp wiped label 3 out
    dice = metrics.dice(fixed, warped, [3, 4, 5], moving_labels=moving)
    hd95 = metrics.hd95(fixed, warped, [3, 4, 5], (1, 1, 1), moving_labels=moving)
    assert dice[3] == 0.0 and dice[4] == 1.0 and math.isnan(dice[5])  # 5: absent from fixed
    assert math.isinf(hd95[3]) and hd95[4] == 0.0 and math.isnan(hd95[5])
    assert metrics.label_mean(dice) == 0.5 and math.isinf(metrics.label_mean(hd95))  # as nanmean
    # judged on the warped map, the wiped-out label drops out and inflates the mean
    assert math.isnan(metrics.dice(fixed, warped, [3])[3])
    assert metrics.label_mean(metrics.dice(fixed, warped, [3, 4])) == 1.0
    with pytest.raises(ValueError, match="not on the fixed grid"):
        metrics.dice(fixed, warped, [3], moving_labels=moving[:4])


def l2r_hd95(fixed: np.ndarray, warped: np.ndarray, label: int, spacing) -> float:
    """HD95 by DeepMind's surface-distance package, the call of Learn2Reg's compute_hd95."""
    reference = pytest.importorskip("surface_distance")
    distances = reference.compute_surface_distances(fixed == label, warped == label, tuple(spacing))
    return reference.compute_robust_hausdorff(distances, 95.0)


def ball(shape: tuple[int, int, int], centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


HAND_MADE = {
    "concentric cubes": (boxes((25, 25, 25), (1, (slice(8, 17),) * 3)),
                         boxes((25, 25, 25), (1, (slice(4, 21),) * 3)), (1.0, 2.0, 0.5)),
    "sphere vs shifted ellipsoid": (ball((30, 28, 26), (14, 13, 12), (8, 8, 8)).astype(np.int64),
                                    ball((30, 28, 26), (16, 12, 13), (10, 6, 7)).astype(np.int64),
                                    (0.7, 1.3, 2.9)),
    "shifted box on the volume's faces": (boxes((12, 14, 16), (1, (slice(0, 8), slice(3, 14), slice(2, 9)))),
                                          boxes((12, 14, 16), (1, (slice(2, 12), slice(0, 11), slice(4, 12)))),
                                          (0.4, 0.4, 0.4)),
}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the reference's scipy.ndimage.filters
@pytest.mark.parametrize("name", list(HAND_MADE))
def test_hd95_matches_the_surface_distance_package_on_hand_made_shapes(name: str) -> None:
    fixed, warped, spacing = HAND_MADE[name]
    expected = l2r_hd95(fixed, warped, 1, spacing)
    got = metrics.hd95(fixed, warped, [1], spacing)[1]
    assert got == pytest.approx(expected, rel=1e-12) and got > 0
    assert metrics.hd95(fixed, warped, [1], (1, 1, 1))[1] == pytest.approx(
        l2r_hd95(fixed, warped, 1, (1.0, 1.0, 1.0)), rel=1e-12)  # Learn2Reg's unit spacing
    assert metrics.hd95(fixed, fixed, [1], spacing) == {1: 0.0}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_hd95_matches_the_surface_distance_package_on_many_labels() -> None:
    rng = np.random.default_rng(3)
    smooth = ndimage.gaussian_filter(rng.normal(size=(6, 24, 20, 22)), sigma=(0, 3, 3, 3))
    fixed = smooth.argmax(axis=0) * 7  # ids 0, 7, ..., 35 (0 is scored like the others when listed)
    warped = np.roll(fixed, (2, -1, 3), axis=(0, 1, 2))
    spacing = (1.2, 0.8, 2.0)
    got = metrics.hd95(fixed, warped, None, spacing)
    assert list(got) == [7, 14, 21, 28, 35]
    for label, value in {**got, **metrics.hd95(fixed, warped, [0], spacing)}.items():
        assert value == pytest.approx(l2r_hd95(fixed, warped, label, spacing), rel=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not beside the project")
def test_hd95_matches_the_surface_distance_package_on_a_real_pair() -> None:
    spec = read_pairs(PAIRS / "prostate-mr-us.csv")[0]
    pair = load_pair(spec)  # gland of an ultrasound and of an MR resampled onto it, 0.4 mm
    fixed, moving = pair.fixed_labels.numpy(), pair.moving_labels.numpy()
    for label in pair.label_ids:
        expected = l2r_hd95(fixed, moving, label, pair.spacing)
        assert metrics.hd95(fixed, moving, [label], pair.spacing)[label] == pytest.approx(expected, rel=1e-12)
        assert expected > 1.0


def test_hd95_of_a_shifted_box_is_the_shift_in_mm() -> None:
    box = (slice(5, 15), slice(4, 12), slice(6, 16))
    moved = (slice(5, 15), slice(4, 12), slice(9, 19))
    fixed, warped = boxes((20, 20, 24), (2, box)), boxes((20, 20, 24), (2, moved))
    # every surface element of one box is within 3 voxels of the other's surface along axis 2,
    # and the end faces (nearly half the area) are exactly 3 voxels apart: 3 * 0.5 mm
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
