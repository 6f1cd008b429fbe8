"""MIND-SSC and the mask fill against the published ConvexAdam (PyPI convexadam 0.2.0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from registration.mind import fill_outside_mask, mind_ssc

reference_utils = pytest.importorskip("convexAdam.convex_adam_utils")
reference_main = pytest.importorskip("convexAdam.convex_adam_MIND")


def smooth_volume(shape: tuple[int, ...], seed: int, sigma: float = 1.5) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(gaussian_filter(rng.random(shape), sigma).astype(np.float32))


def reference_mind(image: torch.Tensor, radius: int, dilation: int) -> torch.Tensor:
    """The reference's descriptors of one (D, H, W) volume as (12, D, H, W)."""
    return reference_utils.MINDSSC(image[None, None], radius, dilation, device="cpu")[0]


@pytest.mark.parametrize(("radius", "dilation"), [(1, 2), (2, 1), (0, 3)])
def test_matches_reference_descriptors(radius: int, dilation: int) -> None:
    image = smooth_volume((22, 19, 25), seed=radius)
    ours = mind_ssc(image, radius=radius, dilation=dilation)
    assert ours.shape == (12, 22, 19, 25) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, reference_mind(image, radius, dilation), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(9, 2, 7), (9, 1, 7)])
def test_patch_wider_than_an_axis_matches_reference(shape: tuple[int, ...]) -> None:
    """A patch radius of 2 over an axis of 1 or 2 voxels replicates the border voxel (the
    reference's replication padding)."""
    image = smooth_volume(shape, seed=5)
    torch.testing.assert_close(mind_ssc(image, radius=2, dilation=1),
                               reference_mind(image, 2, 1), rtol=1e-5, atol=1e-6)


def test_batched_input_is_per_sample() -> None:
    images = torch.stack([smooth_volume((16, 18, 14), seed=s) * (1 + 4 * s) for s in range(2)])
    ours = mind_ssc(images[:, None])
    assert ours.shape == (2, 12, 16, 18, 14)
    for b in range(2):
        torch.testing.assert_close(ours[b], reference_mind(images[b], 1, 2), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours[b], mind_ssc(images[b]))


def test_dtypes() -> None:
    image = smooth_volume((12, 12, 12), seed=3)
    assert mind_ssc(image.double()).dtype == torch.float64
    torch.testing.assert_close(mind_ssc(image.double()).float(), mind_ssc(image), rtol=1e-5,
                               atol=1e-6)
    assert mind_ssc((image * 100).to(torch.int16)).dtype == torch.float32


def test_constant_image_is_finite() -> None:
    assert torch.equal(mind_ssc(torch.full((8, 8, 8), 3.0)), torch.ones(12, 8, 8, 8))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="image must be"):
        mind_ssc(torch.zeros(2, 8, 8, 8))
    with pytest.raises(ValueError, match="mask shape"):
        mind_ssc(torch.zeros(8, 8, 8), mask=torch.ones(8, 8, 7))


def box_mask(shape: tuple[int, int, int]) -> torch.Tensor:
    mask = torch.zeros(shape)
    mask[4:-5, 3:-4, 6:-3] = 1
    mask[10:13, 8:12, 2:6] = 1
    return mask


def test_masked_descriptors_match_reference() -> None:
    shape = (24, 20, 26)
    images = [smooth_volume(shape, seed=s) for s in (4, 5)]
    masks = [box_mask(shape), box_mask(shape).flip(0)]
    expected = reference_main.extract_features(images[0], images[1], 1, 2, True, masks[0], masks[1],
                                               device=torch.device("cpu"), dtype=torch.float32)
    for image, mask, reference in zip(images, masks, expected):
        torch.testing.assert_close(mind_ssc(image, mask=mask.bool()), reference[0], rtol=1e-5,
                                   atol=1e-6)


def test_fill_outside_mask() -> None:
    shape = (21, 18, 23)
    image = smooth_volume(shape, seed=6)
    mask = box_mask(shape).bool()
    filled = fill_outside_mask(image, mask)
    eroded = torch.nn.functional.avg_pool3d(
        torch.nn.functional.pad(mask.float()[None, None], (1,) * 6, mode="replicate"), 3, 1)[0, 0] > 0.9
    assert torch.equal(filled[eroded], image[eroded])
    outside = ~eroded
    assert not torch.allclose(filled[outside], image[outside])
    low, high = image[eroded].min(), image[eroded].max()
    assert bool((filled >= low - 1e-6).all() and (filled <= high + 1e-6).all())
    assert fill_outside_mask(image.double(), mask).dtype == torch.float64


def test_fill_outside_a_label_map_erodes_its_foreground() -> None:
    shape = (21, 18, 23)
    image = smooth_volume(shape, seed=7)
    labels = box_mask(shape).long() * 7
    labels[8:14] = torch.where(labels[8:14] > 0, 3, 0)  # a multi-label mask: ids {0, 3, 7}
    filled = fill_outside_mask(image, labels)
    torch.testing.assert_close(filled, fill_outside_mask(image, labels != 0), rtol=0, atol=0)
    # eroding the raw ids would keep the label's rim (mean 7 * 18 / 27 > 0.9), not fill it
    rim = (labels != 0) & ~(torch.nn.functional.avg_pool3d(torch.nn.functional.pad(
        (labels != 0).float()[None, None], (1,) * 6, mode="replicate"), 3, 1)[0, 0] > 0.9)
    assert bool(rim.any()) and not torch.allclose(filled[rim], image[rim])


def test_fill_outside_empty_mask() -> None:
    with pytest.raises(ValueError, match="no voxel"):
        fill_outside_mask(torch.zeros(8, 8, 8), torch.zeros(8, 8, 8, dtype=torch.bool))


def test_same_result_on_one_thread_and_threads_restored() -> None:
    image = smooth_volume((20, 18, 22), seed=7)
    threads = torch.get_num_threads()
    several = mind_ssc(image)
    assert torch.get_num_threads() == threads
    torch.set_num_threads(1)
    try:
        single = mind_ssc(image)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, several)
