"""Warping volumes and label maps by a displacement field.

Project convention: a displacement ``u`` is (3, D, H, W) (or batched (B, 3, D, H, W)) in voxels,
channel i along array axis i, and ``warped(x) = moving(x + u(x))``. Coordinates go through
``synthgen.ops.grids`` (align_corners=True). MONAI's ``Warp`` and TorchIO resample through their
own coordinate conventions (and TorchIO through SimpleITK); these wrappers keep one convention.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from synthgen.ops.grids import displacement_to_grid, resample


def _batched(volume: torch.Tensor, displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Bring (D,H,W) / (C,D,H,W) / (B,C,D,H,W) volumes and (3,...) / (B,3,...) fields to 5-D."""
    if displacement.dim() == 4:
        displacement = displacement.unsqueeze(0)
    if displacement.dim() != 5 or displacement.shape[1] != 3:
        raise ValueError(f"displacement must be (3, D, H, W) or (B, 3, D, H, W), "
                         f"got {tuple(displacement.shape)}")
    extra = 5 - volume.dim()
    if extra < 0 or extra > 2:
        raise ValueError(f"volume must be (D, H, W), (C, D, H, W) or (B, C, D, H, W), "
                         f"got {tuple(volume.shape)}")
    for _ in range(extra):
        volume = volume.unsqueeze(0)
    return volume, displacement, extra


def warp(volume: torch.Tensor, displacement: torch.Tensor, *, mode: str = "bilinear",
         padding: str = "border", offset: Sequence[float] = (0.0, 0.0, 0.0),
         scale: float | Sequence[float] = 1.0) -> torch.Tensor:
    """``volume`` sampled at ``(x + u(x)) * scale + offset`` for every voxel x of the
    displacement's grid (plainly ``x + u(x)`` with the defaults).

    Args:
        volume: (D', H', W'), (C, D', H', W') or (B, C, D', H', W') float volume; it may be
            larger or coarser than the displacement's grid (see ``offset`` and ``scale``).
        displacement: (3, D, H, W) or (B, 3, D, H, W) float displacement in voxels of its grid.
        mode: "bilinear" (trilinear) or "nearest".
        padding: "zeros", "border" or "reflection" for samples outside ``volume``.
        offset: voxel position, inside ``volume``, of the displacement grid's voxel (0, 0, 0).
        scale: ``volume`` voxels per displacement-grid voxel, one value or one per axis.

    Returns:
        Same leading dims as ``volume``, spatial shape (D, H, W), ``volume``'s dtype.
    """
    vol, disp, extra = _batched(volume, displacement)
    grid = displacement_to_grid(disp.to(vol.dtype), vol.shape[2:], offset, scale)
    out = resample(vol, grid, mode=mode, padding=padding)
    for _ in range(extra):
        out = out.squeeze(0)
    return out


def warp_image(image: torch.Tensor, displacement: torch.Tensor, *, padding: str = "border",
               offset: Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """Trilinear warp of an intensity volume (float dtypes; half is computed in float32).

    Shapes as in :func:`warp`; returns ``image``'s dtype.
    """
    work = image if image.dtype in (torch.float32, torch.float64) else image.float()
    return warp(work, displacement, mode="bilinear", padding=padding, offset=offset).to(image.dtype)


def nearest_index(displacement: Iterable[torch.Tensor], source_shape: Sequence[int], *,
                  offset: Sequence[float] = (0.0, 0.0, 0.0), with_mask: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flat index of the source voxel nearest to ``x + u(x) + offset`` (border-clamped).

    Rounds half to even, as ``grid_sample(mode="nearest")``. Pure voxel-space arithmetic: no
    normalised coordinates are involved.

    Args:
        displacement: the three (D, H, W) float channels of a displacement in voxels: a
            (3, D, H, W) tensor, or any iterable of three channels (e.g. produced one at a time
            so the whole field never exists at once).
        source_shape: spatial shape (D', H', W') of the sampled volume (< 2**31 voxels).
        offset: source voxel position of the displacement grid's voxel (0, 0, 0).
        with_mask: also return which samples were inside the source before clamping.

    Returns:
        ``(index, inside)``: (D, H, W) int32 flat indices into the source's (D', H', W'), and
        a (D, H, W) bool mask when ``with_mask`` (else None).
    """
    strides = (source_shape[1] * source_shape[2], source_shape[2], 1)
    index = inside = coord = None
    for axis, component in enumerate(displacement):
        target, device = component.shape, component.device
        if index is None:
            index = torch.zeros(target, dtype=torch.int32, device=device)
            inside = torch.ones(target, dtype=torch.bool, device=device) if with_mask else None
            coord = torch.empty(target, dtype=component.dtype, device=device)
        view = [1, 1, 1]
        view[axis] = target[axis]
        ramp = (torch.arange(target[axis], device=device, dtype=torch.float64)
                + offset[axis]).to(component.dtype).view(view)
        torch.add(ramp, component, out=coord).round_()
        if inside is not None:
            inside &= (coord >= 0) & (coord <= source_shape[axis] - 1)
        coord.clamp_(0, source_shape[axis] - 1)
        index.add_(coord.to(torch.int32), alpha=strides[axis])
    return index, inside


def warp_labels(labels: torch.Tensor, displacement: torch.Tensor, *, padding: str = "border",
                offset: Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """Nearest-neighbour warp of a label map (any dtype; values are copied, never interpolated).

    Same result as :func:`warp` with ``mode="nearest"`` (up to ties at exact half-voxel
    positions) but by direct index arithmetic and a gather, ~2x faster than ``grid_sample`` on
    one CPU thread and without a float round trip of the labels.

    Args:
        labels: (D', H', W'), (C, D', H', W') or (B, C, D', H', W') label volume.
        displacement: (3, D, H, W) or (B, 3, D, H, W) float displacement in voxels.
        padding: "border" (nearest edge label) or "zeros" (0 outside ``labels``).
        offset: voxel position, inside ``labels``, of the displacement grid's voxel (0, 0, 0).

    Returns:
        Same leading dims as ``labels``, spatial shape (D, H, W), ``labels``' dtype.
    """
    if padding not in ("border", "zeros"):
        raise ValueError(f"label padding must be 'border' or 'zeros', got {padding!r}")
    vol, disp, extra = _batched(labels, displacement)
    outputs = []
    for b in range(disp.shape[0]):
        index, inside = nearest_index(disp[b], vol.shape[2:], offset=offset,
                                      with_mask=padding == "zeros")
        out = vol[b].reshape(vol.shape[1], -1).index_select(1, index.flatten())
        out = out.view(vol.shape[1], *disp.shape[2:])
        if padding == "zeros":
            out = out * inside
        outputs.append(out)
    out = outputs[0].unsqueeze(0) if len(outputs) == 1 else torch.stack(outputs)
    for _ in range(extra):
        out = out.squeeze(0)
    return out
