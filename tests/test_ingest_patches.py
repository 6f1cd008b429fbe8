"""`synthgen ingest --patches`: foreground patches of whole resampled volumes (3D DINO's data)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import GaussianSmooth
from scipy import ndimage
from skimage.morphology import ball, binary_closing

from synthgen import open_dataset
from synthgen.cli import main
from synthgen.ingest.patches import choose_patch, foreground_mask
from synthgen.ingest.run import ingest
from tests.helpers import run_main
from tests.test_ingest import MNI, PROSTATE, percentile_normalised, sampled_at_output_voxels

pytestmark = pytest.mark.skipif(not MNI.is_dir(), reason="shared data absent (see shared/data/README.md)")


def published_mri_mask(volume: np.ndarray) -> np.ndarray:
    """EytanKats/med_ssl_3d utils/img_ops.extract_foreground_mask_mri, as published."""
    smooth = GaussianSmooth(sigma=1.0)(torch.from_numpy(volume)[None])[0].numpy()
    mask = smooth > np.percentile(smooth, 40)
    with warnings.catch_warnings():  # skimage 0.26 deprecates the published call, unchanged since
        warnings.simplefilter("ignore", FutureWarning)
        mask = binary_closing(mask, ball(7))
    mask = ndimage.binary_fill_holes(mask)
    labeled, count = ndimage.label(mask)
    if count > 0:
        counts = np.bincount(labeled.ravel())
        counts[0] = 0
        mask = labeled == np.argmax(counts)
    return mask


def test_foreground_mask_is_the_published_mri_rule() -> None:
    image = np.asanyarray(nib.load(PROSTATE / "moving_images" / "case000003.nii.gz").dataobj).astype(np.float32)
    ours = foreground_mask(torch.from_numpy(image / image.max())).numpy()
    published = published_mri_mask(image / image.max())
    assert 0.2 < published.mean() < 0.95  # a real body mask, not all or nothing
    assert np.array_equal(ours, published)


def test_choose_patch_takes_the_first_good_draw_else_the_best() -> None:
    mask = torch.zeros(40, 40, 40, dtype=torch.bool)
    mask[:, :, :20] = True  # a patch of side 10 is all foreground iff it starts at w <= 10
    start, fraction = choose_patch(mask, (10, 10, 10), 1.0, torch.Generator().manual_seed(0))
    assert start[2] <= 10 and fraction == 1.0
    again = choose_patch(mask, (10, 10, 10), 1.0, torch.Generator().manual_seed(0))
    assert again == (start, fraction)
    corner = torch.zeros(40, 40, 40, dtype=torch.bool)
    corner[:5, :5, :5] = True  # no position reaches 0.5: the best draw, its true fraction
    start, fraction = choose_patch(corner, (10, 10, 10), 0.5, torch.Generator().manual_seed(1))
    box = corner[start[0]:start[0] + 10, start[1]:start[1] + 10, start[2]:start[2] + 10]
    assert fraction == pytest.approx(float(box.float().mean())) and fraction < 0.5


def test_mni_patches_are_crops_of_the_resampled_volume_with_enough_foreground(tmp_path: Path) -> None:
    out = tmp_path / "patches.zarr"
    report = ingest(str(MNI / "mni.nii.gz"), str(out), size=48, spacing=2.0, per_volume=4, seed=3,
                    backend="local", progress=False)
    assert report.written.samples_written == 4
    dataset = open_dataset(str(out))
    source, source_affine = percentile_normalised(MNI / "mni.nii.gz")
    starts = set()
    for k in range(4):
        sample = dataset[k]
        expected = sampled_at_output_voxels(source, source_affine, sample["affine"], (48, 48, 48), order=1)
        assert np.abs(sample["image"].astype(np.float32) - expected).max() < 2e-3
        assert nib.aff2axcodes(sample["affine"]) == ("R", "A", "S")
        starts.add(tuple(np.round(sample["affine"][:3, 3], 3)))
        body = foreground_mask(torch.from_numpy(expected)).float().mean()
        assert body > 0.5  # the patch lies mostly in the brain (its mask here sees only the patch)
    assert len(starts) == 4  # four different positions
    again = tmp_path / "again.zarr"
    ingest(str(MNI / "mni.nii.gz"), str(again), size=48, spacing=2.0, per_volume=4, seed=4, backend="local",
           progress=False)
    assert not np.array_equal(open_dataset(str(again))[0]["affine"], dataset[0]["affine"])  # the seed matters


@pytest.mark.parametrize("argv, needle", [
    (("--patches", "96", "--spacing", "1"), "smaller than the (96, 96, 96) patches"),
    (("--patches", "32", "--size", "32"), "not both"),
    (("--per-volume", "3"), "need --patches"),
    (("--patches", "32", "--per-volume", "0"), "--per-volume must be at least 1"),
])
def test_bad_patch_options_are_one_line_and_write_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                          argv: tuple[str, ...], needle: str) -> None:
    code, _, err = run_main(main, capsys, "ingest", "--images", str(PROSTATE / "fixed_images"), *argv,
                            "--out", str(tmp_path / "out.zarr"), "--backend", "local", "--quiet")
    assert code != 0 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out.zarr").exists()
