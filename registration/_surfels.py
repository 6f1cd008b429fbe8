"""Surface distances between two masks as DeepMind's ``surface-distance`` computes them, the
method behind Learn2Reg's HD95 (``compute_surface_distances`` and ``compute_robust_hausdorff``).

The surface of a mask lives on the lattice of voxel corners: each corner gets the 8-bit code of
its 2x2x2 neighbourhood of voxels (outside the volume counts as background), and a corner whose
code is neither 0 nor 255 is a surface element ("surfel") whose area (mm^2) is that of the
marching-cubes triangles of its code. Every surfel of one mask gets the Euclidean distance (mm)
to the nearest surfel of the other (``scipy.ndimage.distance_transform_edt`` with the spacing,
on the lattice of the two masks' joint bounding box, as the reference), and the robust Hausdorff
distance is the smallest distance reached by ``percent`` % of the surface area, the larger of the
two directions. Every step follows the reference's arithmetic, so the results agree to the bit.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

# DeepMind surface-distance (Apache-2.0) lookup_tables._NEIGHBOUR_CODE_TO_NORMALS: per neighbour
# code 0..255, the surfel's triangle normals (length = area at unit spacing), written as absolute
# components in eighths ("400 222" is (0.5, 0, 0) and (0.25, 0.25, 0.25)); the signs do not enter
# the area. Bit 7 of a code is the corner's (-1, -1, -1) voxel, bit 0 its (0, 0, 0) voxel.
_NORMALS_IN_EIGHTHS = (
    '000', '111', '111', '220 220', '111', '202 202', '111 111', '400 222 111', '111', '111 111',
    '202 202', '400 222 111', '220 220', '400 222 111', '400 222 111', '400 400', '111', '022 022',
    '111 111', '040 222 111', '111 111', '004 222 111', '111 111 111', '111 222 222 111',
    '111 111', '022 022 111', '202 202 111', '111 333 022 202', '111 220 220', '333 022 111 220',
    '400 111 222 111', '400 111 222', '111', '111 111', '022 022', '040 111 222', '111 111',
    '111 202 202', '022 022 111', '333 022 111 202', '111 111', '111 111 111', '004 222 111',
    '222 222 111 111', '111 220 220', '400 222 111 111', '022 333 111 220', '400 222 111',
    '220 220', '040 222 111', '040 111 222', '040 040', '220 220 111', '333 202 111 220',
    '111 040 222 111', '040 222 111', '111 220 220', '040 222 111 111', '333 220 111 202',
    '040 222 111', '220 220 220 220', '220 220 111', '111 220 220', '220 220', '111', '111 111',
    '111 111', '111 220 220', '022 022', '004 222 111', '022 022 111', '333 022 111 220',
    '111 111', '111 111 111', '111 202 202', '400 222 111 111', '040 222 111', '222 222 111 111',
    '202 333 022 111', '400 222 111', '202 202', '004 222 111', '111 202 202', '202 333 220 111',
    '004 222 111', '004 004', '111 111 222 004', '111 222 004', '202 202 111', '004 222 111 111',
    '202 202 202 202', '111 202 202', '202 333 220 111', '004 222 111', '111 202 202', '202 202',
    '111 111', '111 111 111', '111 022 022', '040 111 222 111', '022 022 111', '004 222 111 111',
    '022 022 022 022', '022 022 111', '111 111 111', '111 111 111 111', '004 222 111 111',
    '111 111 111', '040 222 111 111', '111 111 111', '022 022 111', '111 111', '400 222 111',
    '222 111 222 111', '333 022 111 202', '040 222 111', '333 220 022 111', '111 222 004',
    '111 022 022', '022 022', '400 222 111 111', '111 111 111', '202 202 111', '111 111',
    '220 220 111', '111 111', '111 111', '111', '111', '111 111', '111 111', '220 220 111',
    '111 111', '202 202 111', '111 111 111', '400 222 111 111', '022 022', '111 022 022',
    '111 222 004', '333 220 022 111', '040 222 111', '333 022 111 202', '222 111 222 111',
    '400 222 111', '111 111', '022 022 111', '111 111 111', '040 222 111 111', '111 111 111',
    '004 222 111 111', '111 111 111 111', '111 111 111', '022 022 111', '022 022 022 022',
    '004 222 111 111', '022 022 111', '040 111 222 111', '111 022 022', '111 111 111', '111 111',
    '202 202', '111 202 202', '004 222 111', '202 333 220 111', '111 202 202', '202 202 202 202',
    '004 222 111 111', '202 202 111', '111 222 004', '111 111 222 004', '004 004', '004 222 111',
    '202 333 220 111', '111 202 202', '004 222 111', '202 202', '400 222 111', '202 333 022 111',
    '222 222 111 111', '040 222 111', '400 222 111 111', '111 202 202', '111 111 111', '111 111',
    '333 022 111 220', '022 022 111', '004 222 111', '022 022', '111 220 220', '111 111',
    '111 111', '111', '220 220', '111 220 220', '220 220 111', '220 220 220 220', '040 222 111',
    '333 220 111 202', '040 222 111 111', '111 220 220', '040 222 111', '111 040 222 111',
    '333 202 111 220', '220 220 111', '040 040', '040 111 222', '040 222 111', '220 220',
    '400 222 111', '022 333 111 220', '400 222 111 111', '111 220 220', '222 222 111 111',
    '004 222 111', '111 111 111', '111 111', '333 022 111 202', '022 022 111', '111 202 202',
    '111 111', '040 111 222', '022 022', '111 111', '111', '400 111 222', '400 111 222 111',
    '333 022 111 220', '111 220 220', '111 333 022 202', '202 202 111', '022 022 111', '111 111',
    '111 222 222 111', '111 111 111', '004 222 111', '111 111', '040 222 111', '111 111',
    '022 022', '111', '400 400', '400 222 111', '400 222 111', '220 220', '400 222 111', '202 202',
    '111 111', '111', '400 222 111', '111 111', '202 202', '111', '220 220', '111', '111', '000',
)


@functools.lru_cache(maxsize=32)
def surfel_area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area (mm^2) of the surfel of each neighbour code at ``spacing`` (3 floats, mm per axis),
    (256,) float64, summed normal by normal as the reference's
    ``create_table_neighbour_code_to_surface_area``."""
    others = ((1, 2), (0, 2), (0, 1))
    table = np.zeros(256)
    for code, text in enumerate(_NORMALS_IN_EIGHTHS):
        area = 0.0
        for normal in text.split():
            area += np.linalg.norm([int(c) / 8 * spacing[i] * spacing[j]
                                    for c, (i, j) in zip(normal, others)])
        table[code] = area
    return table


def _neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """(D + 1, H + 1, W + 1) uint8 neighbour code of every voxel corner of a (D, H, W) bool
    mask; corner (i, j, k) lies between voxels i - 1 and i along the first axis (and so on)."""
    padded = np.pad(mask, 1).astype(np.uint8)
    d, h, w = (n + 1 for n in mask.shape)
    codes = np.zeros((d, h, w), dtype=np.uint8)
    for bit, (a, b, c) in enumerate(np.ndindex(2, 2, 2)):
        codes |= padded[a:a + d, b:b + h, c:c + w] << np.uint8(7 - bit)
    return codes


def _surfels(codes: np.ndarray) -> np.ndarray:
    return (codes != 0) & (codes != 255)


def surface_distances(mask_a: np.ndarray, mask_b: np.ndarray, spacing: Sequence[float]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distances from every surfel of each mask to the other mask's surface.

    Args:
        mask_a, mask_b: (D, H, W) bool masks on one grid, neither empty.
        spacing: voxel size (3 floats, mm).

    Returns:
        (a-to-b distances, a's surfel areas, b-to-a distances, b's surfel areas), each (N,)
        float64 in mm (areas in mm^2), unsorted.
    """
    union = mask_a | mask_b
    box = tuple(slice(int(idx.min()), int(idx.max()) + 1)
                for idx in (np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != ax)))
                            for ax in range(3)))
    sampling = tuple(float(s) for s in spacing)
    table = surfel_area_table(sampling)  # type: ignore[arg-type]
    codes_a, codes_b = _neighbour_codes(mask_a[box]), _neighbour_codes(mask_b[box])
    surf_a, surf_b = _surfels(codes_a), _surfels(codes_b)
    return (_distances(surf_a, surf_b, sampling), table[codes_a[surf_a]],
            _distances(surf_b, surf_a, sampling), table[codes_b[surf_b]])


def _distances(source: np.ndarray, target: np.ndarray, sampling: tuple[float, ...]) -> np.ndarray:
    """(N,) float64: for each True corner of ``source`` (in ``np.nonzero`` order), the distance
    (mm) to the nearest True corner of ``target``. The nearest corner comes from scipy's exact
    feature transform; the distance is then computed only there, with the arithmetic of
    ``distance_transform_edt`` (so the values are its values, bit for bit)."""
    nearest = ndimage.distance_transform_edt(~target, sampling=sampling, return_distances=False,
                                             return_indices=True)
    points = np.nonzero(source)
    offsets = (nearest[(slice(None), *points)] - np.stack(points).astype(np.int32)).astype(np.float64)
    offsets *= np.asarray(sampling, dtype=np.float64)[:, None]
    np.multiply(offsets, offsets, offsets)
    return np.sqrt(np.add.reduce(offsets, axis=0))


def percentile_distance(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """The smallest distance that ``percent`` % of the surface area (cumulated in order of
    distance) reaches: the reference's area-weighted percentile; inf for no surfel."""
    if distances.size == 0:
        return float("inf")
    order = np.lexsort((areas, distances))
    distances, areas = distances[order], areas[order]
    cumulative = np.cumsum(areas) / np.sum(areas)
    index = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[min(index, distances.size - 1)])


def robust_hausdorff(mask_a: np.ndarray, mask_b: np.ndarray, spacing: Sequence[float],
                     percent: float = 95.0) -> float:
    """Symmetric ``percent`` % Hausdorff distance (mm) between two non-empty (D, H, W) bool
    masks: the larger of the two directed area-weighted percentiles."""
    a_to_b, areas_a, b_to_a, areas_b = surface_distances(mask_a, mask_b, spacing)
    return max(percentile_distance(a_to_b, areas_a, percent),
               percentile_distance(b_to_a, areas_b, percent))
