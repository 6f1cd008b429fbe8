"""Device-agnostic torch kernels: Perlin noise, velocity fields and scaling and squaring, warps.

Plain functions on tensors; engines and trainers compose them. Coordinate conversions for
``grid_sample`` live in :mod:`synthgen.ops.grids` only. Displacements are (3, D, H, W) (or
(B, 3, D, H, W)) in voxels, channel i along axis i, and ``warped(x) = moving(x + u(x))``.
"""

from synthgen.ops.grids import (displacement_to_grid, identity_grid, normalized_to_voxel, resample,
                                sample, voxel_to_normalized)
from synthgen.ops.interpolate import Sampling, resample_regular, upsample
from synthgen.ops.jacobian import jacobian_determinant
from synthgen.ops.labels import argmax_upsampled
from synthgen.ops.perlin import fractal_noise, perlin_noise, random_gradients, random_octave_gradients
from synthgen.ops.svf import compose, integrate_svf, upsample_displacement
from synthgen.ops.warp import nearest_index, warp, warp_image, warp_labels

__all__ = [
    "Sampling", "argmax_upsampled", "compose", "displacement_to_grid", "fractal_noise", "identity_grid",
    "integrate_svf", "jacobian_determinant", "nearest_index", "normalized_to_voxel", "perlin_noise",
    "random_gradients", "random_octave_gradients", "resample", "resample_regular", "sample",
    "upsample", "upsample_displacement", "voxel_to_normalized", "warp", "warp_image", "warp_labels",
]
