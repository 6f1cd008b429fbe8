"""Shared pieces of the augmentation transforms: random draws, batching, separable filtering.

Conventions used by every module of :mod:`synthgen.ops.augment`:

- Parameters are drawn by ``sample_params(generator, batch_size, ...)`` on the CPU from the
  caller's ``torch.Generator`` into a frozen dataclass of CPU tensors whose first axis is the
  batch (one row per sample). Every transform always consumes the same number of draws whatever
  it decides (fire or not), so switching one transform's probability never shifts the draws of
  the transforms after it.
- ``apply(volume, params)`` is a pure torch function on the volume's device. Volumes are
  (B, C, D, H, W) batches, or a single (D, H, W) volume with ``batch_size == 1`` params.
  Statistics (min, max, percentiles, spectra) are per sample, over its channels and voxels.
- Samples whose transform does not fire are returned untouched (bitwise); only the firing
  sub-batch is computed.
- No thread-count-dependent float reductions: elementwise ops, exact min/max/topk, FFTs
  (checked bitwise identical for 1 and 2 threads on CPU) and :func:`stable_sum`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- random draws

def uniform(generator: torch.Generator, low: float, high: float,
            size: Sequence[int] = ()) -> Tensor:
    """U(low, high) draws, float64 on the CPU (``low + (high - low) * rand``)."""
    return torch.rand(tuple(size), generator=generator, dtype=torch.float64) * (high - low) + low


def bernoulli(generator: torch.Generator, p: float, size: Sequence[int]) -> Tensor:
    """Bool draws that are True with probability ``p`` (``rand < p``), on the CPU."""
    return torch.rand(tuple(size), generator=generator, dtype=torch.float64) < p


def seeds(generator: torch.Generator, size: Sequence[int]) -> Tensor:
    """Non-negative int64 seeds for device-side generators (noise fields), drawn on the CPU."""
    return torch.randint(0, 2 ** 62, tuple(size), generator=generator, dtype=torch.int64)


def to_range(value: float | Sequence[float], centre: float | None = None) -> tuple[float, float]:
    """TorchIO-style range parsing: ``x`` -> (centre - x, centre + x) (or (0, x) if ``centre``
    is None); a pair is returned as is."""
    if isinstance(value, (int, float)):
        return (0.0, float(value)) if centre is None else (centre - float(value), centre + float(value))
    low, high = value
    return float(low), float(high)


# ----------------------------------------------------------------------------- batching

def as_batch(volume: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """View a (D, H, W), (C, D, H, W) or (B, C, D, H, W) volume as (B, C, D, H, W).

    Returns the 5-D view and a function that restores an output of the same shape."""
    extra = 5 - volume.dim()
    if extra < 0 or extra > 2:
        raise ValueError(f"expected (D, H, W), (C, D, H, W) or (B, C, D, H, W), got {tuple(volume.shape)}")
    batch = volume.reshape((1,) * extra + tuple(volume.shape))

    def restore(out: Tensor) -> Tensor:
        return out.reshape(out.shape[extra:]) if extra else out

    return batch, restore


def check_batch(volume: Tensor, fire: Tensor) -> None:
    if volume.shape[0] != fire.shape[0]:
        raise ValueError(f"volume batch {volume.shape[0]} does not match params batch {fire.shape[0]}")


def chunk_size(volume: Tensor) -> int | None:
    """How many samples the batch transforms process at once: all of them on accelerators,
    one at a time on the CPU. On the CPU per-sample parameters then enter the kernels as
    scalars (broadcasting a (B, 1, 1, 1, 1) operand was measured 2-4x slower per voxel than a
    scalar), and volume-sized temporaries (displacements, grids, spectra) stay small."""
    return None if volume.device.type != "cpu" else 1


def apply_where(volume: Tensor, fire: Tensor, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Apply ``fn(sub_batch, indices)`` to the samples of ``volume`` (B, C, D, H, W) whose
    ``fire`` flag is set; the others are passed through unchanged.

    ``indices`` is the CPU int64 tensor of the samples in ``sub_batch`` (for indexing
    per-sample params); sub-batches hold :func:`chunk_size` samples. Returns ``volume`` itself
    when nothing fires, else a new tensor."""
    return apply_where_many([volume], fire, lambda subs, idx: [fn(subs[0], idx)])[0]


def apply_where_many(volumes: Sequence[Tensor], fire: Tensor,
                     fn: Callable[[list[Tensor], Tensor], list[Tensor]]) -> list[Tensor]:
    """:func:`apply_where` for several batches that share the parameters (e.g. views and
    labels under one warp): ``fn(sub_batches, indices) -> outputs``, one per volume. Outputs
    may change the dtype (e.g. to float32); passed-through samples are cast to match."""
    for volume in volumes:
        check_batch(volume, fire)
    indices = fire.nonzero().flatten()
    if indices.numel() == 0:
        return list(volumes)
    chunk = chunk_size(volumes[0]) or indices.numel()
    if indices.numel() == volumes[0].shape[0] and chunk >= indices.numel():
        return list(fn(list(volumes), indices))
    outs: list[Tensor | None] = [None] * len(volumes)
    for start in range(0, indices.numel(), chunk):
        part = indices[start:start + chunk]
        device_part = part.to(volumes[0].device)
        results = fn([v.index_select(0, device_part) for v in volumes], part)
        for k, (volume, result) in enumerate(zip(volumes, results)):
            if outs[k] is None:
                outs[k] = volume.to(result.dtype, copy=True)
            outs[k].index_copy_(0, device_part, result.to(outs[k].dtype))
    return outs  # type: ignore[return-value]


def per_sample(values: Tensor, like: Tensor) -> Tensor | float:
    """(B,) CPU values as a (B, 1, 1, 1, 1) tensor of ``like``'s dtype and device, or as a
    Python float when B = 1 (scalar operands take torch's faster scalar paths)."""
    if values.numel() == 1 and values.device.type == "cpu":
        return float(values.reshape(()))
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def sample_min(x: Tensor) -> Tensor:
    """Per-sample minimum of (B, ...) as (B, 1, ..., 1) (exact)."""
    return x.flatten(1).amin(1).view(-1, *([1] * (x.dim() - 1)))


def sample_max(x: Tensor) -> Tensor:
    """Per-sample maximum of (B, ...) as (B, 1, ..., 1) (exact)."""
    return x.flatten(1).amax(1).view(-1, *([1] * (x.dim() - 1)))


def stable_sum(x: Tensor, dims: Sequence[int]) -> Tensor:
    """Sum over ``dims`` one axis at a time, innermost first, in float64.

    Each stage reduces the (contiguous) last axis of many rows, which torch parallelises over
    rows, not within a row, so the result does not depend on the thread count (a single
    ``sum`` over all elements splits one reduction across threads)."""
    x = x.to(torch.float64)
    for dim in sorted((d % x.dim() for d in dims), reverse=True):
        x = x.movedim(dim, -1).contiguous().sum(-1)
    return x


# ----------------------------------------------------------------------------- filtering

def pad_indices(n: int, before: int, after: int, mode: str, device: torch.device | str) -> Tensor:
    """Source indices of an axis of ``n`` samples padded by ``before``/``after`` samples.

    Modes: "replicate" (edge value), "symmetric" (scipy's 'reflect': d c b a | a b c d) and
    "zeros" (index ``n``, which callers map to an appended zero)."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate":
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        period = 2 * n
        i = i % period
        return torch.where(i >= n, period - 1 - i, i)
    if mode == "zeros":
        return torch.where((i < 0) | (i >= n), torch.full_like(i, n), i)
    raise ValueError(f"unknown padding mode {mode!r}")


def filter_axis(x: Tensor, dim: int, weights: Tensor, padding: str = "replicate") -> Tensor:
    """Correlate ``x`` along ``dim`` with a symmetric odd-length kernel.

    Written as shifted multiply-adds (one fused op per tap, plus thin boundary slabs for the
    padding) instead of ``conv3d``: with a (1, 1, 9, 1, 1) kernel ``conv3d`` costs ~50 ms per
    axis at 128^3 on one CPU thread, this 1-3 ms; and it is elementwise, hence bitwise
    independent of the thread count, on any device.

    Args:
        x: (B, C, D, H, W) float tensor.
        dim: spatial axis, 2, 3 or 4.
        weights: (T,) kernel shared by all samples, or (B, T) one kernel per sample (CPU or
            ``x``'s device); T odd, symmetric about the centre tap (only the centre and right
            half are read).
        padding: "replicate", "symmetric" or "zeros" (see :func:`pad_indices`).

    Returns:
        Tensor like ``x``.
    """
    taps = weights.shape[-1]
    if taps % 2 != 1:
        raise ValueError(f"kernel length must be odd, got {taps}")
    radius = taps // 2
    n = x.shape[dim]
    if weights.dim() == 2 and weights.shape[0] == 1:
        weights = weights[0]
    if weights.dim() == 1:
        values = weights.tolist()
    else:
        values = [per_sample(weights[:, t], x) for t in range(taps)]

    def accumulate(target: Tensor, source: Tensor, weight) -> None:
        if isinstance(weight, float):
            target.add_(source, alpha=weight)
        else:
            target.addcmul_(source, weight)

    out = x * values[radius]
    for t in range(1, radius + 1):
        weight = values[radius + t]
        inner = n - t
        if inner > 0:
            accumulate(out.narrow(dim, t, inner), x.narrow(dim, 0, inner), weight)   # left neighbour
            accumulate(out.narrow(dim, 0, inner), x.narrow(dim, t, inner), weight)   # right neighbour
        if padding == "zeros":
            continue
        # neighbours beyond the edges: outputs i < t read padded index i - t, outputs
        # i >= n - t read padded index i + t
        edge = min(t, n)
        left = pad_indices(n, t, 0, padding, x.device)[:edge]
        right = pad_indices(n, 0, t, padding, x.device)[n:n + edge] if n >= t else \
            pad_indices(n, 0, t, padding, x.device)[t:t + edge]
        accumulate(out.narrow(dim, 0, edge), x.index_select(dim, left), weight)
        accumulate(out.narrow(dim, n - edge, edge), x.index_select(dim, right), weight)
    return out


def separable_filter(x: Tensor, kernels: Sequence[Tensor], padding: str = "replicate") -> Tensor:
    """Apply one symmetric 1-D kernel per spatial axis (D, H, W) of (B, C, D, H, W) ``x``.

    A kernel equal to ``[1]`` is skipped. Kernels are (T,) or (B, T) (see :func:`filter_axis`)."""
    for axis, kernel in enumerate(kernels):
        if kernel.shape[-1] == 1 and bool((kernel == 1).all()):
            continue
        x = filter_axis(x, axis + 2, kernel, padding)
    return x


def erf_gaussian_kernel(sigma: float, truncated: float = 4.0) -> Tensor:
    """MONAI's ``gaussian_1d(approx="erf")``: the integral of N(0, sigma^2) over each unit cell,
    radius ``int(max(sigma * truncated, 0.5) + 0.5)``, not renormalised (float32, CPU).
    sigma = 0 gives the identity kernel [0, 1, 0]."""
    radius = int(max(float(sigma) * truncated, 0.5) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    if sigma == 0:
        return (x == 0).to(torch.float32)
    t = 0.70710678 / torch.tensor(abs(float(sigma)), dtype=torch.float32)
    return (0.5 * ((t * (x + 0.5)).erf() - (t * (x - 0.5)).erf())).clamp(min=0)


def sampled_gaussian_kernel(sigma: float, truncate: float = 4.0) -> Tensor:
    """scipy.ndimage.gaussian_filter's kernel: exp(-x^2 / 2 sigma^2) normalised to sum 1,
    radius ``int(truncate * sigma + 0.5)`` (float64, CPU). sigma <= 1e-15 gives [1]
    (scipy skips the axis)."""
    if sigma <= 1e-15:
        return torch.ones(1, dtype=torch.float64)
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 / (float(sigma) ** 2) * x * x)
    return k / k.sum()


def stack_kernels(kernels: Sequence[Tensor]) -> Tensor:
    """(B, T) from per-sample odd-length kernels, zero-padded to the longest at both ends."""
    taps = max(k.numel() for k in kernels)
    out = torch.zeros(len(kernels), taps, dtype=kernels[0].dtype)
    for b, k in enumerate(kernels):
        pad = (taps - k.numel()) // 2
        out[b, pad:pad + k.numel()] = k
    return out
