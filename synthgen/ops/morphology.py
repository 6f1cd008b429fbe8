"""Exact 3x3x3 median and ball morphology of label volumes, as min/max networks in torch.

``median3`` equals ``skimage.filters.median(x)`` (its default: full 3x3x3 cube footprint,
``mode="nearest"``, i.e. ``scipy.ndimage.median_filter(x, size=3, mode="nearest")``) on any
integer or float volume. It is a comparator network over the 27 neighbours, evaluated on whole
volumes with ``torch.minimum``/``torch.maximum`` (elementwise, any device, bitwise exact):

1. Sort every neighbourhood triple along W, then the resulting triples along H, then along D.
   Each sort is computed once per voxel of a (replicate-)padded volume and shared by the
   neighbourhoods that contain it. After the three sorts the 3x3x3 block is sorted along every
   axis, so the element at sorted position (a, b, c) (ranks 1..3) has at least ``a*b*c - 1``
   elements <= it and ``(4-a)(4-b)(4-c) - 1`` elements >= it.
2. The median (rank 14 of 27) is therefore one of the 19 positions with ``a*b*c <= 14`` and
   ``(4-a)(4-b)(4-c) <= 14``; the 4 positions below are <= the median and the 4 above >= it, so
   the median of the 27 is the median of those 19. Only those 19 sort outputs are computed.
3. The median of the 19 comes from Batcher's odd-even merge sort (32 wires, the unused ones
   +inf), with every comparator removed that never exchanges on inputs ordered like the product
   order of the ranks (tested exhaustively on the 880 0-1 inputs consistent with that order; by
   the 0-1 principle this is exact for all inputs), then pruned to the gates the median needs.

In all ~150 elementwise min/max operations per voxel, ~12 ms for a 128^3 uint8 volume on one
CPU thread, against ~200 ms for ``skimage.filters.median``. The whole network (stages 1-3) was
checked on all 2**27 0-1 neighbourhoods; the tests compare it with skimage on random volumes.

Ball morphology: ``dilate_ball``/``erode_ball`` equal ``skimage.morphology.dilation``/``erosion``
with ``footprint=skimage.morphology.ball(r)`` (the integer offsets with |o|^2 <= r^2) and
skimage's default ``mode="reflect"``; with a footprint symmetric and monotone in each |o_i|,
reflect (and nearest) padding is the same as ignoring out-of-volume neighbours, which is what is
computed here. The ball is decomposed into W-runs: line dilations along W of half-widths
0..r, ORed over shifted H rows into discs, ORed over shifted D planes into the ball (about
``2r + (r+1)(2r+1) + 2r`` boolean ORs, ~2 ms per call at 128^3 for r = 4).
"""

from __future__ import annotations

import functools
import math

import torch

# Sorted-position ranks (a, b, c) along (W, H, D) that can hold the median of 27 (see above).
_CANDIDATES = tuple(sorted(
    ((a, b, c) for a in (1, 2, 3) for b in (1, 2, 3) for c in (1, 2, 3)
     if a * b * c <= 14 and (4 - a) * (4 - b) * (4 - c) <= 14),
    key=lambda t: (sum(t), t)))
_MEDIAN_RANK = 9  # 0-based rank of the median among the 19 candidates


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j (min to i), of Batcher's odd-even merge sort on n = 2**k wires."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _product_order_inputs(points: tuple[tuple[int, ...], ...]) -> list[int]:
    """All 0-1 assignments (as bit masks over ``points``) that are monotone in the product order."""
    n = len(points)
    below = [[j for j in range(n) if j != i and all(u <= v for u, v in zip(points[j], points[i]))]
             for i in range(n)]
    # Up-sets: if a point is 1, every point above it is 1. Enumerate by increasing rank sum.
    masks = [0]
    for i in sorted(range(n), key=lambda i: -sum(points[i])):
        # points visited in decreasing order: i may be 1 only if everything above it already is.
        above = [j for j in range(n) if i in below[j]]
        masks += [m | (1 << i) for m in masks if all(m >> j & 1 for j in above)]
    return masks


@functools.lru_cache(maxsize=None)
def _median19_network() -> tuple[tuple[int, int, bool, bool], ...]:
    """Gates ``(i, j, want_min, want_max)`` selecting rank 9 of the 19 candidates (wire order as
    ``_CANDIDATES``); verified on every 0-1 input consistent with the product order."""
    n = len(_CANDIDATES)
    inputs = _product_order_inputs(_CANDIDATES)
    wires = [[m >> i & 1 for m in inputs] for i in range(n)]
    kept = []
    for i, j in _batcher_pairs(32):
        if j >= n:
            continue  # wires >= n hold +inf: the comparator is a no-op
        a, b = wires[i], wires[j]
        if not any(x > y for x, y in zip(a, b)):
            continue  # never exchanges on ordered inputs
        wires[i] = [x & y for x, y in zip(a, b)]
        wires[j] = [x | y for x, y in zip(a, b)]
        kept.append((i, j))
    expected = [int(bin(m).count("1") >= n - _MEDIAN_RANK) for m in inputs]
    if wires[_MEDIAN_RANK] != expected:  # pragma: no cover - construction invariant
        raise AssertionError("median network construction failed")
    need = {_MEDIAN_RANK}
    gates = []
    for i, j in reversed(kept):
        want_min, want_max = i in need, j in need
        if want_min or want_max:
            gates.append((i, j, want_min, want_max))
            need |= {i, j}
    return tuple(reversed(gates))


class _Pool:
    """Scratch volumes reused within one call. Fresh multi-hundred-KB tensors are mmapped and
    returned to the OS by the C allocator on every free, so a kernel allocating ~30 of them per
    slab spends more time in page faults than in arithmetic; recycling them avoids that."""

    def __init__(self, numel: int, dtype: torch.dtype, device: torch.device) -> None:
        self.numel, self.dtype, self.device = numel, dtype, device
        self.free: list[torch.Tensor] = []
        self.owner: dict[int, torch.Tensor] = {}

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        flat = self.free.pop() if self.free else torch.empty(self.numel, dtype=self.dtype,
                                                              device=self.device)
        view = flat[:math.prod(shape)].view(shape)
        self.owner[view.data_ptr()] = flat
        return view

    def give(self, *views: torch.Tensor) -> None:
        for view in views:
            self.free.append(self.owner.pop(view.data_ptr()))


def _sort3(x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, need: set[int], pool: _Pool
           ) -> dict[int, torch.Tensor]:
    """Ranks ``need`` (1..3) of three same-shape tensors, elementwise, into pool buffers."""
    out: dict[int, torch.Tensor] = {}
    shape = tuple(x0.shape)
    lo = torch.minimum(x0, x1, out=pool.take(shape))
    hi = torch.maximum(x0, x1, out=pool.take(shape))
    if 3 in need:
        out[3] = torch.maximum(hi, x2, out=pool.take(shape))
    if 2 in need:  # before rank 1, which overwrites ``lo``
        out[2] = torch.maximum(lo, torch.minimum(hi, x2, out=hi), out=hi)
    else:
        pool.give(hi)
    if 1 in need:
        out[1] = torch.minimum(lo, x2, out=lo)
    else:
        pool.give(lo)
    return out


def pad_replicate(x: torch.Tensor, width: int = 1) -> torch.Tensor:
    """Edge-replicating padding of a (D, H, W) tensor of any dtype (``F.pad`` lacks integer
    replicate padding on CPU)."""
    if x.dim() != 3:
        raise ValueError(f"expected a (D, H, W) volume, got {tuple(x.shape)}")
    w = width
    d, h, wd = x.shape
    out = x.new_empty((d + 2 * w, h + 2 * w, wd + 2 * w))
    out[w:w + d, w:w + h, w:w + wd] = x
    inner = out[w:w + d, w:w + h]
    inner[..., :w] = inner[..., w:w + 1]
    inner[..., w + wd:] = inner[..., w + wd - 1:w + wd]
    rows = out[w:w + d]
    rows[:, :w] = rows[:, w:w + 1]
    rows[:, w + h:] = rows[:, w + h - 1:w + h]
    out[:w] = out[w:w + 1]
    out[w + d:] = out[w + d - 1:w + d]
    return out


def median3(x: torch.Tensor, *, slab: int = 16) -> torch.Tensor:
    """Exact median over the 3x3x3 cube of every voxel, edge voxels replicated outward.

    Equals ``skimage.filters.median(x)`` / ``scipy.ndimage.median_filter(x, size=3,
    mode="nearest")``. For label maps this is a median of label *values*, as the published
    anatomix code does.

    Args:
        x: (D, H, W) tensor of any real dtype with min/max support (uint8, int16/32, float).
        slab: output slices per pass along D; the ~30 intermediate volumes are slab-sized and
            recycled between passes, so the working set stays in cache.

    Returns:
        (D, H, W) tensor of ``x``'s dtype and device.
    """
    if x.dim() != 3:
        raise ValueError(f"expected a (D, H, W) volume, got {tuple(x.shape)}")
    d, h, w = x.shape
    p = pad_replicate(x, 1)
    slab = max(1, min(slab, d))
    pool = _Pool((slab + 2) * (h + 2) * w, x.dtype, x.device)
    out = torch.empty_like(x)
    for z0 in range(0, d, slab):
        b = min(slab, d - z0)
        _median3_padded(p[z0:z0 + b + 2], pool, out[z0:z0 + b])
    return out


def _median3_padded(p: torch.Tensor, pool: _Pool, out: torch.Tensor) -> None:
    """:func:`median3` of the interior of a (D+2, H+2, W+2) replicate-padded volume, into out."""
    d, h, w = (n - 2 for n in p.shape)
    # Which ranks each stage must produce, from the candidate set.
    need_c: dict[tuple[int, int], set[int]] = {}
    for a, b, c in _CANDIDATES:
        need_c.setdefault((a, b), set()).add(c)
    need_b: dict[int, set[int]] = {}
    for a, b in need_c:
        need_b.setdefault(a, set()).add(b)
    stage_a = _sort3(p[:, :, 0:w], p[:, :, 1:w + 1], p[:, :, 2:w + 2], set(need_b), pool)  # W
    stage_b = {}
    for a, ranks in need_b.items():                                                        # H
        s = stage_a.pop(a)
        for b, v in _sort3(s[:, 0:h], s[:, 1:h + 1], s[:, 2:h + 2], ranks, pool).items():
            stage_b[a, b] = v
        pool.give(s)
    wires: list[torch.Tensor] = [p] * len(_CANDIDATES)   # placeholders, all overwritten
    slot = {cand: k for k, cand in enumerate(_CANDIDATES)}
    for (a, b), ranks in need_c.items():                                                   # D
        s = stage_b.pop((a, b))
        for c, v in _sort3(s[0:d], s[1:d + 1], s[2:d + 2], ranks, pool).items():
            wires[slot[a, b, c]] = v
        pool.give(s)
    live = set(range(len(_CANDIDATES)))
    spare = pool.take((d, h, w))
    for i, j, want_min, want_max in _median19_network():
        u, v = wires[i], wires[j]
        if want_min and want_max:
            low = torch.minimum(u, v, out=spare)
            wires[i], wires[j], spare = low, torch.maximum(u, v, out=v), u
        elif want_min:   # wire j is never read again: recycle its buffer
            wires[i] = torch.minimum(u, v, out=u)
            pool.give(v)
            live.discard(j)
        else:
            wires[j] = torch.maximum(u, v, out=v)
            pool.give(u)
            live.discard(i)
    out.copy_(wires[_MEDIAN_RANK])
    pool.give(spare, *(wires[k] for k in live))


def binary_median3(mask: torch.Tensor) -> torch.Tensor:
    """Median over the 3x3x3 cube of a binary volume (majority of 27, edges replicated).

    Equals :func:`median3` (and ``skimage.filters.median``) on 0/1 data, by separable box sums.

    Args:
        mask: (D, H, W) bool (or 0/1 integer) tensor.

    Returns:
        (D, H, W) bool tensor.
    """
    if mask.dim() != 3:
        raise ValueError(f"expected a (D, H, W) volume, got {tuple(mask.shape)}")
    d, h, w = mask.shape
    p = pad_replicate(mask.to(torch.uint8), 1)
    s = p[:, :, 0:w] + p[:, :, 1:w + 1]
    s += p[:, :, 2:w + 2]
    t = s[:, 0:h] + s[:, 1:h + 1]
    t += s[:, 2:h + 2]
    u = t[0:d] + t[1:d + 1]
    u += t[2:d + 2]
    return u >= 14


def _shifted_or_(out: torch.Tensor, src: torch.Tensor, dim: int, shift: int) -> None:
    """``out |= src`` moved by ``shift`` along ``dim`` (``out[i] |= src[i - shift]``), zero fill."""
    n = src.shape[dim]
    if shift == 0:
        out |= src
    elif abs(shift) < n:
        if shift > 0:
            out.narrow(dim, shift, n - shift).bitwise_or_(src.narrow(dim, 0, n - shift))
        else:
            out.narrow(dim, 0, n + shift).bitwise_or_(src.narrow(dim, -shift, n + shift))


def _dilate_into(out: torch.Tensor, mask: torch.Tensor, r: int, first: int, pool: _Pool) -> None:
    """``out`` = slices ``first .. first + len(out)`` of the ball dilation of ``mask`` (a slab
    of the volume holding those slices and their r neighbours on each side where they exist;
    beyond the slab counts as empty)."""
    shape = tuple(mask.shape)
    lines = [mask]                                      # lines[k]: dilation along W by [-k, k]
    for k in range(1, r + 1):
        line = pool.take(shape)
        line.copy_(lines[-1])
        _shifted_or_(line, mask, 2, k)
        _shifted_or_(line, mask, 2, -k)
        lines.append(line)
    discs: dict[int, torch.Tensor] = {}                 # by squared disc radius
    for dz in range(r + 1):
        rho = r * r - dz * dz
        if rho in discs:
            continue
        disc = pool.take(shape)
        disc.copy_(lines[math.isqrt(rho)])
        for dy in range(1, math.isqrt(rho) + 1):
            half = math.isqrt(rho - dy * dy)
            _shifted_or_(disc, lines[half], 1, dy)
            _shifted_or_(disc, lines[half], 1, -dy)
        discs[rho] = disc
    n = out.shape[0]
    out.copy_(discs[r * r][first:first + n])
    for dz in range(1, r + 1):                          # out[z] |= disc[z - dz], disc[z + dz]
        disc = discs[r * r - dz * dz]
        for shift in (dz, -dz):
            lo, hi = max(0, shift - first), min(n, shape[0] - first + shift)
            if lo < hi:
                out[lo:hi] |= disc[first + lo - shift:first + hi - shift]
    pool.give(*lines[1:], *discs.values())


def _ball_op(mask: torch.Tensor, radius: int, slab: int, complement_too: bool) -> torch.Tensor:
    """Ball dilation of ``mask`` (and with ``complement_too``, AND the dilation of ``~mask``),
    ``slab`` output slices at a time with an r-slice halo."""
    if mask.dim() != 3:
        raise ValueError(f"expected a (D, H, W) volume, got {tuple(mask.shape)}")
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    mask = mask.to(torch.bool)
    d, h, w = mask.shape
    slab = max(1, min(slab, d))
    pool = _Pool((slab + 2 * r) * h * w, torch.bool, mask.device)
    out = torch.empty_like(mask)
    other = (torch.empty((slab, h, w), dtype=torch.bool, device=mask.device)
             if complement_too else None)
    for z0 in range(0, d, slab):
        z1 = min(z0 + slab, d)
        lo, hi = max(0, z0 - r), min(d, z1 + r)
        _dilate_into(out[z0:z1], mask[lo:hi], r, z0 - lo, pool)
        if other is not None:
            inverse = pool.take((hi - lo, h, w))
            torch.logical_not(mask[lo:hi], out=inverse)
            _dilate_into(other[:z1 - z0], inverse, r, z0 - lo, pool)
            out[z0:z1] &= other[:z1 - z0]
            pool.give(inverse)
    return out


def dilate_ball(mask: torch.Tensor, radius: int, *, slab: int = 32) -> torch.Tensor:
    """Binary dilation by the ball of integer offsets with |o|^2 <= radius^2.

    Equals ``skimage.morphology.dilation(mask, skimage.morphology.ball(radius))`` (out-of-volume
    voxels never add to the dilation).

    Args:
        mask: (D, H, W) bool tensor.
        radius: ball radius in voxels (>= 0).
        slab: output slices computed per pass along D (small, recycled working set).

    Returns:
        (D, H, W) bool tensor on ``mask``'s device.
    """
    return _ball_op(mask, radius, slab, complement_too=False)


def erode_ball(mask: torch.Tensor, radius: int, *, slab: int = 32) -> torch.Tensor:
    """Binary erosion by the ball |o|^2 <= radius^2; out-of-volume voxels are ignored (as
    ``skimage.morphology.erosion`` with its default ``mode="reflect"``).

    Returns:
        (D, H, W) bool tensor.
    """
    return ~dilate_ball(~mask.to(torch.bool), radius, slab=slab)


def envelope(mask: torch.Tensor, radius: int, *, slab: int = 32) -> torch.Tensor:
    """The rim ``dilate_ball(mask, r) & ~erode_ball(mask, r)`` (Algorithm 1, line 15), i.e.
    ``dilate_ball(mask, r) & dilate_ball(~mask, r)``.

    Returns:
        (D, H, W) bool tensor.
    """
    return _ball_op(mask, radius, slab, complement_too=True)
