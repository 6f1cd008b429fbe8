"""synthgen.ops.grids: the one voxel <-> normalised coordinate convention (align_corners=True)."""

import torch

from synthgen.ops.grids import (displacement_to_grid, identity_grid, normalized_to_voxel, resample,
                                sample, voxel_to_normalized)


def test_round_trip_voxel_normalized_voxel():
    g = torch.Generator().manual_seed(0)
    shape = (5, 7, 9)
    coords = torch.rand((2, 3, 4, 6, 8), generator=g) * 10 - 2
    back = normalized_to_voxel(voxel_to_normalized(coords, shape), shape)
    torch.testing.assert_close(back, coords, rtol=0, atol=1e-5)
    unbatched = coords[0]
    torch.testing.assert_close(normalized_to_voxel(voxel_to_normalized(unbatched, shape), shape),
                               unbatched, rtol=0, atol=1e-5)


def test_corner_voxels_map_to_minus_one_and_one_in_xyz_order():
    shape = (4, 6, 8)
    coords = torch.tensor([[0.0, 0.0, 0.0], [3.0, 5.0, 7.0], [3.0, 0.0, 0.0]]).T.reshape(3, 3, 1, 1)
    grid = voxel_to_normalized(coords, shape)[:, 0, 0]          # (3 points, xyz)
    torch.testing.assert_close(grid[0], torch.tensor([-1.0, -1.0, -1.0]))
    torch.testing.assert_close(grid[1], torch.tensor([1.0, 1.0, 1.0]))
    # the last voxel along D (axis 0) is z = +1, the last grid component
    torch.testing.assert_close(grid[2], torch.tensor([-1.0, -1.0, 1.0]))


def test_identity_grid_and_sampling_pick_the_right_voxel():
    volume = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(1, 1, 4, 5, 6)
    ident = identity_grid((4, 5, 6))
    assert ident.shape == (3, 4, 5, 6)
    assert ident[0, 3, 0, 0] == 3 and ident[1, 0, 4, 0] == 4 and ident[2, 0, 0, 5] == 5
    out = sample(volume, ident[None], mode="bilinear")
    torch.testing.assert_close(out, volume)
    point = torch.tensor([2.0, 1.0, 4.0]).view(1, 3, 1, 1, 1)
    assert sample(volume, point, mode="nearest").item() == volume[0, 0, 2, 1, 4].item()


def test_displacement_to_grid_matches_explicit_conversion():
    g = torch.Generator().manual_seed(1)
    u = torch.randn((2, 3, 5, 6, 7), generator=g)
    source = (9, 8, 11)
    offset = (1.5, -2.0, 0.25)
    shift = torch.tensor(offset).view(1, 3, 1, 1, 1)
    expected = voxel_to_normalized(identity_grid((5, 6, 7))[None] + u + shift, source)
    torch.testing.assert_close(displacement_to_grid(u, source, offset), expected, rtol=0, atol=1e-5)
    scaled = voxel_to_normalized((identity_grid((5, 6, 7))[None] + u) * 0.5 + shift, source)
    torch.testing.assert_close(displacement_to_grid(u, source, offset, scale=0.5), scaled,
                               rtol=0, atol=1e-5)


def test_resample_rejects_unknown_modes():
    volume = torch.zeros(1, 1, 2, 2, 2)
    grid = torch.zeros(1, 1, 1, 1, 3)
    for kwargs in ({"mode": "cubic"}, {"padding": "wrap"}):
        try:
            resample(volume, grid, **kwargs)
        except ValueError:
            continue
        raise AssertionError(f"{kwargs} accepted")


def test_image_coordinates_convert_like_a_one_voxel_deep_volume():
    g = torch.Generator().manual_seed(2)
    coords = torch.rand((4, 2, 3, 5), generator=g) * 12 - 1
    grid = voxel_to_normalized(coords, (9, 11))
    assert grid.shape == (4, 3, 5, 2)
    depth = torch.zeros_like(coords[:, :1])
    as_volume = voxel_to_normalized(torch.cat([depth, coords], dim=1)[:, :, None], (1, 9, 11))
    assert torch.equal(grid, as_volume[:, 0, ..., :2])
    assert torch.equal(voxel_to_normalized(coords[0], (9, 11)), grid[0])
    corners = torch.tensor([[0.0, 0.0], [8.0, 10.0], [8.0, 0.0]]).T.reshape(2, 3, 1)
    torch.testing.assert_close(voxel_to_normalized(corners, (9, 11))[:, 0],
                               torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]))
    for bad in ((9,), (2, 3, 4, 5)):
        try:
            voxel_to_normalized(coords, bad)
        except ValueError:
            continue
        raise AssertionError(f"shape {bad} accepted")
