"""The option tables of every extractor, and the keys a feature checkpoint may carry as defaults.

Kept apart from the extractors so that :mod:`.checkpoint` can check a checkpoint's defaults
without importing them.
"""

from __future__ import annotations

from collections.abc import Mapping

from registration.features.spec import (Option, boolean, choice, integer, number_list, optional, real,
                                        resolve_options)
from synthgen.errors import SynthgenError

NORMALISATIONS = ("minmax", "robust", "none")

PCA = Option(optional(integer(1)), None,
             "joint PCA of fixed and moving features to this many components (default none)")

MIND = {
    "radius": Option(integer(0), 1, "MIND-SSC patch radius (default 1)"),
    "dilation": Option(integer(1), 2, "MIND-SSC neighbourhood dilation (default 2)"),
    "pca": PCA,
}

INTENSITY = {
    "norm": Option(choice(*NORMALISATIONS), "robust",
                   "intensity normalisation: robust (0.5-99.5 percentiles to [0, 1], clipped), "
                   "minmax or none (default robust)"),
    "pca": PCA,
}

_NETWORK = {
    "norm": Option(choice(*NORMALISATIONS), "minmax",
                   "input normalisation before the network (default minmax to [0, 1], as anatomix)"),
    "pca": PCA,
}

CKPT = {
    **_NETWORK,
    "scale": Option(real(), 1.0, "factor on the network features (default 1; anatomix: 0.1 with mind=true)"),
    "mind": Option(boolean, False, "prepend MIND-SSC (radius 1, dilation 2) to the features (default false)"),
    "window": Option(integer(1), 128, "sliding-window edge in voxels (default 128)"),
    "overlap": Option(real(0.0, 1.0), 0.8, "sliding-window overlap fraction (default 0.8, as anatomix)"),
    "blend": Option(choice("gaussian", "constant"), "gaussian",
                    "window blending: gaussian (sigma 0.25 of the window, as anatomix; the default) "
                    "or constant"),
    "batch": Option(integer(1), 2, "windows per forward pass (default 2)"),
}

SLICE2D = {
    **_NETWORK,
    "scale": Option(real(), 1.0, "factor on the encoder features (default 1)"),
    "every": Option(integer(1), 1, "encode every k-th slice (and the last), interpolate between (default 1)"),
    "axis": Option(integer(0, 2), 0, "slice axis of the (D, H, W) volume (default 0)"),
    "size": Option(optional(integer(1)), None,
                   "resize slices to size x size before encoding (default none: native size)"),
    "batch": Option(integer(1), 16, "slices per forward pass (default 16)"),
}

MODULE_INPUT = {
    "in_channels": Option(optional(integer(1)), None,
                          "channels the module expects; the grey image is repeated (default: probed)"),
    "mean": Option(number_list, (0.0,), "subtracted per input channel after normalisation (default 0)"),
    "std": Option(number_list, (1.0,), "divides per input channel after the mean (default 1)"),
}
"""Checkpoint-only defaults: how to feed the module (not settable from a spec)."""

CHECKPOINT_DEFAULT_KEYS = frozenset(CKPT) | frozenset(SLICE2D) | frozenset(MODULE_INPUT)


def check_feature_defaults(defaults: Mapping[str, object], where: str) -> dict[str, object]:
    """A checkpoint's feature defaults, typed; ``where`` names the checkpoint in messages.

    Raises:
        SynthgenError: a key no network extractor knows, or a value its option rejects.
    """
    checked: dict[str, object] = {}
    for key, value in defaults.items():
        table = next((t for t in (CKPT, SLICE2D, MODULE_INPUT) if key in t), None)
        if table is None:
            raise SynthgenError(f"unknown feature default {key!r} in {where}; valid defaults: "
                                f"{', '.join(sorted(CHECKPOINT_DEFAULT_KEYS))}")
        checked.update(resolve_options("ckpt/slice2d", {key: table[key]}, {key: value},
                                       source=[where]))
    return checked
