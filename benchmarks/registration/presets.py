"""Named ConvexAdam settings for ``synthgen-bench register --preset``; ``--set`` overrides them.

- ``reference``: :class:`ConvexAdamParams`' defaults, the reference ConvexAdam's MIND settings
  (grid_sp 6, disp_hw 4, lambda 1.25).
- ``anatomix``: the published anatomix solver (``run_convex_adam_with_network_feats.py``,
  neel-dey/anatomix; ``../shared/reference/trainers.md``): grid_sp 2, disp_hw 1, inverse
  consistency on, Adam lambda 0.75, 80 iterations at grid_sp_adam 2 (lr 1, as always here), no
  final smoothing, and the cost volume summing the channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from registration.convexadam import ConvexAdamParams
from synthgen.errors import SynthgenError

PRESETS: dict[str, dict[str, Any]] = {
    "reference": {},
    "anatomix": {"grid_sp": 2, "disp_hw": 1, "ic": True, "lambda_weight": 0.75, "niter": 80,
                 "grid_sp_adam": 2, "smooth": 0, "cost_reduction": "sum"},
}


def preset_params(name: str, overrides: Mapping[str, Any]) -> ConvexAdamParams:
    """The preset ``name`` with ``overrides`` (valid field names, checked by the caller) on top.

    Raises:
        SynthgenError: an unknown preset or an invalid value.
    """
    if name not in PRESETS:
        raise SynthgenError(f"--preset {name}: no such preset; choose one of {', '.join(PRESETS)}")
    try:
        return ConvexAdamParams(**{**PRESETS[name], **overrides})
    except (TypeError, ValueError) as err:
        raise SynthgenError(f"--set: {err}") from None
