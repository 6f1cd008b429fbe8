"""Label maps from multi-channel fields: argmax over channels of an upsampled coarse field.

``torch.argmax`` over the channel dim of a (1, 16, 128, 128, 128) volume costs ~0.35 s on one CPU
thread, and materialising that volume (``F.interpolate``) another ~0.18 s. Here the channel field
is interpolated one output slice at a time (see ``interpolate.first_axis_slices``) and the argmax is
turned into a plain ``amax`` of integers: the channel code is written into the low bits of each
value's float32 bit pattern, so the maximum's low bits name the winning channel. ``amax`` over a
leading dim is vectorised and exact, hence independent of the thread count. 16 channels into a
150^3 label map: ~0.025 s instead of ~0.68 s for ``F.interpolate`` + ``argmax``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from synthgen.ops.interpolate import Sampling, first_axis_slices, resample_axis


def argmax_upsampled(coarse: torch.Tensor, samplings: Sequence[Sampling],
                     value_range: tuple[float, float] | None = None) -> torch.Tensor:
    """``argmax`` over channels of the separable linear interpolation of a coarse field.

    Ties, and values closer than ~2**-(23 - bits) of the value range (bits = bits needed for
    the channel index, 4 for 16 channels), go to the lower channel, as ``torch.argmax`` would.

    Args:
        coarse: (C, Dc, Hc, Wc) float32 field, 2 <= C <= 256.
        samplings: regular output positions along D, H and W, in index units of ``coarse``.
        value_range: bounds of the field's values; defaults to the min and max of ``coarse``.
            Pass fixed bounds to label windows of one larger field identically.

    Returns:
        (N_0, N_1, N_2) uint8 tensor of channel indices, on ``coarse``'s device.
    """
    channels = coarse.shape[0]
    if not 2 <= channels <= 256:
        raise ValueError(f"need 2..256 channels, got {channels}")
    bits = max(1, (channels - 1).bit_length())
    low = (1 << bits) - 1
    # Map the field affinely into [1, 2): one float32 binade, where the int32 bit pattern is
    # monotonic in the value with a uniform quantum. Argmax is invariant to this map.
    lo, hi = value_range if value_range is not None else (float(coarse.amin()), float(coarse.amax()))
    field = (coarse - lo) * (0.999 / max(hi - lo, 1e-30)) + 1.0
    field = resample_axis(resample_axis(field, -1, samplings[2]), -2, samplings[1]).contiguous()
    code = (channels - 1 - torch.arange(channels, device=coarse.device, dtype=torch.int32))
    code = code.view(channels, 1, 1)
    packed = torch.empty((samplings[0].count, *field.shape[-2:]), dtype=torch.int32,
                         device=coarse.device)
    for k, slab in first_axis_slices(field, samplings[0]):
        bits_view = slab.view(torch.int32)
        bits_view.bitwise_and_(~low).bitwise_or_(code)
        torch.amax(bits_view, dim=0, out=packed[k])
    packed.bitwise_and_(low)
    return (channels - 1 - packed).to(torch.uint8)
