"""The zero-padded box filter of ConvexAdam (``avg_pool3d`` with stride 1), as separable sums
into reusable buffers."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def box_mean(x: torch.Tensor, kernel: int, passes: int = 1,
             buffers: Sequence[torch.Tensor] | None = None,
             dims: Sequence[int] = (-3, -2, -1)) -> torch.Tensor:
    """``avg_pool3d(x, kernel, stride=1, padding=kernel // 2)`` (zeros outside, divisor
    kernel^3) applied ``passes`` times over the last three axes, as separable sums (or its
    factor along ``dims`` only: the factors along different axes commute).

    Args:
        x: (..., D, H, W) float tensor; it may alias ``buffers[1]`` (then it is overwritten).
        kernel: odd box size.
        passes: number of repetitions.
        buffers: two tensors of ``x``'s shape to work in (allocated if None); the k-th pass
            along one axis (counting from 0) writes ``buffers[k % 2]``.
        dims: the axes to filter along.

    Returns:
        The filtered tensor: ``buffers[(passes * len(dims) - 1) % 2]``.
    """
    targets = buffers if buffers is not None else (torch.empty_like(x), torch.empty_like(x))
    source = x
    for index in range(passes * len(dims)):
        dim = dims[index % len(dims)]
        target = targets[index % 2]
        n = x.shape[dim]
        reach = min(kernel // 2, n - 1)
        if reach == 0:
            target.copy_(source)
        else:
            # target[i] = source[i - 1] + source[i] (zero outside), then + source[i + 1], ...
            torch.add(source.narrow(dim, 0, n - 1), source.narrow(dim, 1, n - 1),
                      out=target.narrow(dim, 1, n - 1))
            target.narrow(dim, 0, 1).copy_(source.narrow(dim, 0, 1))
            target.narrow(dim, 0, n - 1).add_(source.narrow(dim, 1, n - 1))
        for shift in range(2, reach + 1):
            target.narrow(dim, shift, n - shift).add_(source.narrow(dim, 0, n - shift))
            target.narrow(dim, 0, n - shift).add_(source.narrow(dim, shift, n - shift))
        source = target
    return source.mul_(1.0 / kernel ** (len(dims) * passes))

