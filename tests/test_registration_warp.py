"""registration.warp: composition order, grid/normalised/L2R/mm conversions, files, label warps."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from registration import warp
from synthgen.errors import SynthgenError
from synthgen.ops.grids import identity_grid, resample


def wavy_field(shape: tuple[int, int, int], amplitude: float, phase: float) -> torch.Tensor:
    """A smooth (3, D, H, W) float64 displacement: per channel a product of sines."""
    x = identity_grid(shape, dtype=torch.float64)
    channels = [amplitude * torch.sin(2 * math.pi * x[(i + 1) % 3] / 17 + phase + i)
                * torch.cos(2 * math.pi * x[(i + 2) % 3] / 23 + 0.5 * phase) for i in range(3)]
    return torch.stack(channels)


def quadratic(shape: tuple[int, int, int]) -> torch.Tensor:
    x = identity_grid(shape, dtype=torch.float64)
    return 0.05 * x[0] ** 2 - 0.3 * x[1] + 0.02 * x[1] * x[2] + 1.0


def core(t: torch.Tensor, k: int = 4) -> torch.Tensor:
    return t[..., k:-k, k:-k, k:-k]


def test_compose_equals_warping_by_first_then_by_then() -> None:
    shape = (24, 26, 28)
    first, then = wavy_field(shape, 1.5, 0.3), wavy_field(shape, 2.0, 1.7)
    image = quadratic(shape)
    sequential = warp.warp_image(warp.warp_image(image, first), then)
    once = warp.warp_image(image, warp.compose(first, then))
    swapped = warp.warp_image(image, warp.compose(then, first))
    error = (core(sequential) - core(once)).abs().max()
    assert error < 0.05  # two trilinear interpolations of a quadratic vs one
    assert (core(sequential) - core(swapped)).abs().max() > 20 * error


def test_grid_round_trips_and_sampling_agrees_with_warp_image() -> None:
    shape = (9, 10, 11)
    disp = wavy_field(shape, 1.0, 0.0)
    torch.testing.assert_close(warp.from_grid(warp.to_grid(disp)), disp)
    torch.testing.assert_close(warp.from_normalized(warp.to_normalized(disp)), disp)
    batch = torch.stack([disp, -disp])
    assert warp.to_grid(batch).shape == (2, *shape, 3)
    torch.testing.assert_close(warp.from_grid(warp.to_grid(batch)), batch)
    image = quadratic(shape)
    sampled = resample(image[None, None], warp.to_grid(disp)[None])[0, 0]
    torch.testing.assert_close(sampled, warp.warp_image(image, disp))


def test_normalised_units_and_axis_order() -> None:
    shape = (5, 7, 11)
    disp = torch.zeros(3, *shape)
    disp[2] = 1.0  # one voxel along W: 2 / (11 - 1) normalised units, first grid component (x)
    disp[0] = 2.0  # two voxels along D: 2 * 2 / (5 - 1), last grid component (z)
    norm = warp.to_normalized(disp)
    torch.testing.assert_close(norm[..., 0], torch.full(shape, 0.2))
    torch.testing.assert_close(norm[..., 1], torch.zeros(shape))
    torch.testing.assert_close(norm[..., 2], torch.full(shape, 1.0))
    grid = warp.to_grid(torch.zeros(3, *shape))
    assert grid[0, 0, 0].tolist() == [-1.0, -1.0, -1.0] and grid[-1, -1, -1].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("suffix", [".nii.gz", ".npz"])
def test_learn2reg_files_round_trip(tmp_path, suffix: str) -> None:
    disp = wavy_field((6, 7, 8), 3.0, 0.2).float()
    path = tmp_path / f"disp_0001_0002{suffix}"
    warp.save_displacement(path, disp, spacing=(1.5, 1.0, 2.0))
    torch.testing.assert_close(warp.load_displacement(path, shape=(6, 7, 8)), disp)
    if suffix == ".npz":
        on_disk = np.load(path)["arr_0"]
    else:
        image = nib.load(path)
        on_disk = np.asanyarray(image.dataobj)
        assert image.header.get_zooms()[:3] == (1.5, 1.0, 2.0)
    assert on_disk.shape == (6, 7, 8, 3) and on_disk.dtype == np.float32
    np.testing.assert_array_equal(on_disk[..., 1], disp[1].numpy())
    np.testing.assert_array_equal(warp.to_l2r(disp), on_disk)
    torch.testing.assert_close(warp.from_l2r(on_disk), disp)


def test_load_displacement_errors(tmp_path) -> None:
    path = tmp_path / "d.npz"
    warp.save_displacement(path, torch.zeros(3, 4, 4, 4))
    with pytest.raises(SynthgenError, match="fixed image is"):
        warp.load_displacement(path, shape=(4, 4, 5))
    np.savez(tmp_path / "bad.npz", np.zeros((4, 4, 4, 2)))
    with pytest.raises(SynthgenError, match=r"\(D, H, W, 3\)"):
        warp.load_displacement(tmp_path / "bad.npz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(SynthgenError, match="junk.nii.gz"):
        warp.load_displacement(tmp_path / "junk.nii.gz")
    with pytest.raises(SynthgenError, match=".nii.gz or .npz"):
        warp.save_displacement(tmp_path / "d.mha", torch.zeros(3, 4, 4, 4))


def test_voxel_mm_scaling() -> None:
    disp = torch.ones(3, 2, 3, 4)
    mm = warp.voxels_to_mm(disp, (2.0, 1.0, 0.5))
    assert [float(mm[i].mean()) for i in range(3)] == [2.0, 1.0, 0.5]
    torch.testing.assert_close(warp.mm_to_voxels(mm, (2.0, 1.0, 0.5)), disp)
    batch = warp.voxels_to_mm(disp[None].repeat(2, 1, 1, 1, 1), (3.0, 1.0, 1.0))
    assert float(batch[1, 0].mean()) == 3.0


def test_affine_displacement_translates_and_scales() -> None:
    matrix = np.diag([2.0, 1.0, 1.0, 1.0])
    matrix[1, 3] = 3.0
    disp = warp.affine_displacement(matrix, (4, 5, 6))
    x = identity_grid((4, 5, 6))
    torch.testing.assert_close(disp[0], x[0])
    torch.testing.assert_close(disp[1], torch.full((4, 5, 6), 3.0))
    source = torch.arange(10 * 10 * 10, dtype=torch.float32).view(10, 10, 10)
    torch.testing.assert_close(warp.warp_image(source, disp), source[0:8:2, 3:8, 0:6])


def test_nearest_warp_keeps_label_values() -> None:
    shape = (20, 21, 22)
    generator = torch.Generator().manual_seed(0)
    values = torch.tensor([0, 3, 7, 250], dtype=torch.int64)
    labels = values[torch.randint(0, 4, shape, generator=generator)]
    warped = warp.warp_labels(labels, wavy_field(shape, 2.5, 0.9).float())
    assert warped.dtype == torch.int64 and warped.shape == shape
    assert set(torch.unique(warped).tolist()) <= {0, 3, 7, 250}
    assert not torch.equal(warped, labels)
    torch.testing.assert_close(warp.warp_labels(labels, torch.zeros(3, *shape)), labels)
