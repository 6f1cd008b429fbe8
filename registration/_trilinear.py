"""Trilinear sampling of a multi-channel volume at ``x + u(x)`` and the exact gradient of the
trilinear interpolant there, contracted with a per-voxel vector, through ``embedding_bag``.

The sample at a position is a weighted sum of the 8 corners of the cell it lies in, and
``embedding_bag`` with ``per_sample_weights`` is a gather-and-weighted-sum kernel that reads
whole contiguous rows (FBGEMM on the CPU: ~2 ns a row, against ~1 ns per channel and corner for
``grid_sample``'s gathers). Two calls per range of voxels do the gathering:

1. the values: per voxel, the 8 corner rows (C channels each) of the channels-last volume,
   weighted by the trilinear weights;
2. ``pull(w)`` = ``sum_c w_c dm_c/dp``: per voxel, the 8 per-corner dot products
   ``s_k = sum_c w_c m_c(corner k)`` in one call over a corner table whose row (cell, c) holds
   channel c at the cell's 8 corners, weighted by ``w_c``. The derivative of
   ``sum_k weight_k(f) s_k`` along each axis is then a fixed linear map of s (one small GEMM
   into (12, n)) combined with the fractions of the other two axes.

These are the derivatives autograd gives through ``grid_sample`` with border padding: the
forward difference of the cell the coordinate lies in, linearly interpolated along the other
two axes, and 0 where the coordinate is clamped, on the boundary included. At an interior node
(an integer coordinate) this takes the cell above; autograd's choice there depends on the
rounding of its normalised coordinate. The cell is clamped to n - 2, so the last cell covers
the last node. Positions are exact voxel coordinates (no normalised coordinates).

Only the voxels whose cell varies (its 8 corners differ in some channel) are gathered: elsewhere
the interpolant is constant around the sample, so the derivative is exactly 0 and the value is
not needed for it. Brain volumes are mostly background (MIND is constant there: ~60% of the
cells of a padded 160x192x224 OASIS brain at the Adam resolution), so after computing the cells
of a range the sampler compacts it to its "live" voxels and gathers for those only.

Memory: the corner table holds the 8 corners of each varying cell (8 C floats per cell; a
cell finds its block of C rows through an index table). Per-voxel quantities are computed one
per row: the (8, k) monomials (1, fz, fy, fx, fz fy, fz fx, fy fx, fz fy fx) of the fractions;
the voxel-major (k, 8) trilinear weights that ``embedding_bag`` needs are their product with a
fixed (8, 8) matrix (one GEMM, no transposing copy). Voxels are addressed by ranges of flat
(D, H, W) indices; the buffers for a range belong to a :class:`Scratch`, one per thread (fresh
multi-megabyte allocations page-fault on the CPU and cost more than the arithmetic).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from registration._workers import Workers, parts
from synthgen.ops.grids import identity_grid

# Corner k of a cell is CORNERS[k] = (a, b, c), its offsets along axes (0, 1, 2).
CORNERS = tuple(itertools.product((0, 1), repeat=3))
# The axes multiplied in each monomial of the fractions, in the order of the monomial rows.
MONOMIALS = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))


def derivative_terms(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The (12, 8) matrix T with ``d(sum_k weight_k s_k) / d f_a = sum_j m_aj (T s)[4 a + j]``:
    ``weight_k`` the trilinear weight of corner k at fractions f, ``m_a = (1, f_b, f_c,
    f_b f_c)`` with (b, c) the two other axes in order."""
    terms = torch.zeros((12, 8), dtype=dtype, device=device)
    for k, corner in enumerate(CORNERS):
        for axis in range(3):
            sign = 1.0 if corner[axis] else -1.0
            # the other factors, f or 1 - f, as coefficients of (1, f)
            first, second = (((0.0, 1.0) if corner[i] else (1.0, -1.0))
                             for i in range(3) if i != axis)
            for j, (i, l) in enumerate(((0, 0), (1, 0), (0, 1), (1, 1))):
                terms[4 * axis + j, k] = sign * first[i] * second[l]
    return terms


def weight_polynomials(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The (8, 8) matrix P with ``weight_k(f) = sum_j monomial_j(f) P[j, k]``: monomials
    (1, fz, fy, fx, fz fy, fz fx, fy fx, fz fy fx), ``weight_k`` the trilinear weight of corner
    k (the product over axes of f or 1 - f)."""
    polynomials = torch.zeros((8, 8), dtype=dtype, device=device)
    for j, axes in enumerate(MONOMIALS):
        for k, corner in enumerate(CORNERS):
            # f = 0 + 1 f, 1 - f = 1 - 1 f: the coefficient takes the f-term on ``axes``
            coefficient = 1.0
            for axis, bit in enumerate(corner):
                coefficient *= (1.0 if bit else -1.0) if axis in axes else (0.0 if bit else 1.0)
            polynomials[j, k] = coefficient
    return polynomials


class Scratch:
    """Reusable buffers for ranges of up to ``count`` voxels.

    Args:
        count: the longest range.
        channels: C of the sampled volume.
        dtype, index_dtype, device: those of the sampler's tables and row indices.
    """

    def __init__(self, count: int, channels: int, dtype: torch.dtype, index_dtype: torch.dtype,
                 device: torch.device) -> None:
        def floats(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=dtype, device=device)

        def indices(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=index_dtype, device=device)

        def flags(*shape: int) -> torch.Tensor:
            return torch.empty(shape, dtype=torch.bool, device=device)

        self.count = count
        # the whole range: positions (then fractions), cells, clamping, live cells
        self.positions = floats(3, count)
        self.cells = floats(3, count)
        self.cell_index = indices(3, count)
        self.base = indices(count)
        self.inside = flags(3, count)
        self.live = flags(count)
        # (k, 1) int64 positions of the live voxels in the range: resized by torch.nonzero
        # within this storage (it starts empty, so resizing does not warn)
        self.voxels = torch.empty((0, 1), dtype=torch.int64, device=device)
        self.voxels.resize_(count, 1).resize_(0, 1)
        # the k live voxels
        self.monomials = floats(8, count)  # rows as MONOMIALS
        self.monomials[0] = 1
        self.live_base = indices(count)
        self.live_inside = flags(3, count)
        self.weights = floats(count, 8)
        self.index = indices(count, 8)
        self.selected = floats(count, channels)
        self.blocks = indices(count)
        self.channel_index = indices(count, channels)
        self.terms = floats(12, count)
        self.derivatives = floats(3, count)
        self.bag_starts = torch.arange(0, 8 * count, 8, dtype=index_dtype, device=device)
        self.channel_starts = torch.arange(0, channels * count, channels, dtype=index_dtype,
                                           device=device)


class Sample:
    """The trilinear samples of the k live voxels of a range of n, and what :meth:`pull` needs.

    Attributes:
        voxels: (k,) int64 positions of the live voxels in the range (ascending).
        values: (k, C) samples at those voxels, channels last (in the scratch's memory).
    """

    def __init__(self, sampler: TrilinearSampler, scratch: Scratch, voxels: torch.Tensor,
                 values: torch.Tensor, base: torch.Tensor, fractions: torch.Tensor,
                 inside: torch.Tensor) -> None:
        self.voxels = voxels
        self.values = values
        self._sampler = sampler
        self._scratch = scratch
        self._base = base
        self._fractions = fractions
        self._inside = inside

    def select(self, table: torch.Tensor) -> torch.Tensor:
        """The rows of an (n, C) per-voxel table (the range's) at the live voxels: (k, C), in
        the scratch's memory (valid until the next :meth:`select`)."""
        k = self.voxels.numel()
        return torch.index_select(table, 0, self.voxels, out=self._scratch.selected[:k])

    def pull(self, vectors: torch.Tensor, out: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``out[a] = scale * sum_c vectors[:, c] * d values[:, c] / d (position along axis a)``
        at the live voxels, 0 elsewhere: the exact derivative of the trilinear interpolant, 0
        where the coordinate is clamped or the cell is constant.

        Args:
            vectors: (k, C), the values' dtype and device.
            out: (3, n) tensor to write (may be a strided view).
            scale: factor applied on the way (free).

        Returns:
            ``out``.
        """
        sampler, scratch = self._sampler, self._scratch
        k, channels = self.values.shape
        out.zero_()
        if k == 0:
            return out
        blocks = torch.index_select(sampler.corner_blocks, 0, self._base, out=scratch.blocks[:k])
        index = torch.add(sampler.channel_offsets, blocks[:, None], alpha=channels,
                          out=scratch.channel_index[:k])
        dots = F.embedding_bag(index.view(-1), sampler.corners, scratch.channel_starts[:k],
                               per_sample_weights=vectors.reshape(-1), mode="sum")
        terms = scratch.terms[:, :k]
        torch.addmm(terms, sampler.derivatives, dots.t(), beta=0, alpha=scale, out=terms)
        terms = terms.view(3, 4, k)
        derivatives = scratch.derivatives[:, :k]
        fz, fy, fx = self._fractions
        for axis, (first, second) in enumerate(((fy, fx), (fz, fx), (fz, fy))):
            t = terms[axis]  # d/d f_axis = (t0 + second t2) + first (t1 + second t3)
            torch.addcmul(t[1], t[3], second, out=t[1])
            torch.addcmul(t[0], t[2], second, out=t[0])
            torch.addcmul(t[0], t[1], first, out=derivatives[axis])
        derivatives.mul_(self._inside)
        return out.index_copy_(1, self.voxels, derivatives)


class TrilinearSampler:
    """Samples a fixed (C, D, H, W) volume's trilinear interpolant (border padding) at displaced
    positions of its own grid, for ranges of flat voxel indices (from several threads at once
    if wanted, each with its own :class:`Scratch`).

    Args:
        volume: (C, D, H, W) float tensor; kept as a (D H W, C) row table and a
            (L C, 8) corner table of its L varying cells.
        workers: threads to build the tables with (slabs of slices), or None.
    """

    def __init__(self, volume: torch.Tensor, workers: Workers | None = None) -> None:
        if volume.dim() != 4:
            raise ValueError(f"volume must be (C, D, H, W), got {tuple(volume.shape)}")
        channels, depth, height, width = volume.shape
        self.channels = channels
        self.shape = (depth, height, width)
        voxels = depth * height * width
        # int32 row indices where they fit (FBGEMM is faster with them)
        self.index_dtype = torch.int32 if voxels * channels < 2 ** 31 else torch.int64
        rows = torch.empty((depth, height, width, channels), dtype=volume.dtype,
                           device=volume.device)
        padded = F.pad(volume[None], (0, 1, 0, 1, 0, 1), mode="replicate")[0].permute(1, 2, 3, 0)
        varies = torch.zeros((depth, height, width), dtype=torch.bool, device=volume.device)

        def find_varying(part: slice) -> None:
            rows[part] = volume[:, part].permute(1, 2, 3, 0)
            first = padded[part, :height, :width]
            for a, b, c in CORNERS[1:]:
                other = padded[part.start + a:part.stop + a, b:b + height, c:c + width]
                varies[part] |= (other != first).any(dim=-1)

        workers = workers or Workers(None, 1)
        workers.map(find_varying, parts(depth, depth))  # a slice at a time: stays in cache
        # Cells are clamped to n - 2, so those at n - 1 (along an axis longer than 1) are never
        # sampled; the others' 8 corners are all inside the volume.
        for dim, n in enumerate(self.shape):
            if n > 1:
                varies.narrow(dim, n - 1, 1).zero_()
        steps = [height * width, width, 1]
        # Row offsets of the 8 corners from the cell's first (0 along an axis of one voxel).
        moves = [step if n > 1 else 0 for step, n in zip(steps, self.shape)]
        self.corner_offsets = torch.tensor([sum(o * m for o, m in zip(corner, moves))
                                            for corner in CORNERS], dtype=self.index_dtype,
                                           device=volume.device)
        self.rows = rows.view(voxels, channels)
        self.varies = varies.view(voxels)  # whether a (sampled) cell's corners differ
        live = self.varies.nonzero().view(-1)
        # the corner table's block of each varying cell (0 for the others: never read)
        self.corner_blocks = torch.zeros(voxels, dtype=self.index_dtype, device=volume.device)
        self.corner_blocks[live] = torch.arange(live.numel(), dtype=self.index_dtype,
                                                device=volume.device)
        corners = torch.empty((live.numel(), channels, 8), dtype=volume.dtype, device=volume.device)

        def gather_corners(part: slice) -> None:
            cells = live[part]
            for k in range(8):
                corners[part, :, k] = self.rows.index_select(0, cells + self.corner_offsets[k])

        if live.numel():
            workers.map(gather_corners, parts(live.numel(), 4 * workers.count))
        self.corners = corners.view(-1, 8)
        self.derivatives = derivative_terms(volume.dtype, volume.device)
        self.polynomials = weight_polynomials(volume.dtype, volume.device)
        self.identity = identity_grid(self.shape, device=volume.device, dtype=volume.dtype).view(3, -1)
        self.origin = torch.zeros((3, 1), dtype=volume.dtype, device=volume.device)
        self.limits = torch.tensor([n - 1 for n in self.shape], dtype=volume.dtype,
                                   device=volume.device).view(3, 1)
        self.last_cells = torch.tensor([max(n - 2, 0) for n in self.shape], dtype=volume.dtype,
                                       device=volume.device).view(3, 1)
        self.strides = torch.tensor(steps, dtype=self.index_dtype, device=volume.device).view(3, 1)
        self.channel_offsets = torch.arange(channels, dtype=self.index_dtype, device=volume.device)

    def scratch(self, count: int) -> Scratch:
        """Buffers for ranges of up to ``count`` voxels."""
        return Scratch(count, self.channels, self.rows.dtype, self.index_dtype, self.rows.device)

    def sample(self, displacement: torch.Tensor, start: int, stop: int, scratch: Scratch) -> Sample:
        """Trilinear samples (border padding) at ``x + u(x)`` for the live voxels of
        ``start:stop`` (those whose cell varies; elsewhere the derivative is 0).

        Args:
            displacement: (3, D H W) displacement in voxels of the volume's grid (flat), the
                volume's dtype and device.
            start, stop: range of flat voxel indices, at most ``scratch.count`` long.
            scratch: this thread's buffers (the returned sample lives in them).

        Returns:
            The :class:`Sample`; its ``values`` are (k, C), k the number of live voxels.
        """
        n = stop - start
        positions = torch.add(self.identity[:, start:stop], displacement[:, start:stop],
                              out=scratch.positions[:, :n])
        inside = torch.gt(positions, 0, out=scratch.inside[:, :n])
        inside &= positions < self.limits
        torch.clamp(positions, min=self.origin, max=self.limits, out=positions)
        cells = torch.floor(positions, out=scratch.cells[:, :n])
        torch.minimum(cells, self.last_cells, out=cells)
        fractions = positions.sub_(cells)
        cell_index = scratch.cell_index[:, :n]
        cell_index.copy_(cells)
        base = torch.sum(cell_index.mul_(self.strides), 0, out=scratch.base[:n])
        live = torch.index_select(self.varies, 0, base, out=scratch.live[:n])
        voxels = torch.nonzero(live, out=scratch.voxels.resize_(0, 1)).view(-1)
        k = voxels.numel()
        monomials = scratch.monomials[:, :k]
        live_inside = scratch.live_inside[:, :k]
        for axis in range(3):  # row by row: index_select along dim 1 is ~20x slower
            torch.index_select(fractions[axis], 0, voxels, out=monomials[1 + axis])
            torch.index_select(inside[axis], 0, voxels, out=live_inside[axis])
        live_base = torch.index_select(base, 0, voxels, out=scratch.live_base[:k])
        torch.mul(monomials[1:2], monomials[2:4], out=monomials[4:6])  # fz fy, fz fx
        torch.mul(monomials[2], monomials[3], out=monomials[6])
        torch.mul(monomials[4], monomials[3], out=monomials[7])
        weights = torch.mm(monomials.t(), self.polynomials, out=scratch.weights[:k])
        index = torch.add(live_base[:, None], self.corner_offsets, out=scratch.index[:k])
        values = F.embedding_bag(index.view(-1), self.rows, scratch.bag_starts[:k],
                                 per_sample_weights=weights.view(-1), mode="sum")
        return Sample(self, scratch, voxels, values, live_base, monomials[1:4], live_inside)
