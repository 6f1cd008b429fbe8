"""A fixed intensity window before feature extraction (``synthgen-bench register
--intensity-window``), e.g. CT clipped to [-450, 450] HU as in the anatomix paper: the image is
clipped to [low, high] and mapped linearly to [0, 1], for the fixed image, the moving one or
both."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from benchmarks.registration.run import Extractor
from synthgen.errors import SynthgenError
from synthgen.ingest.volume import apply_window

Window = tuple[float, float]
IMAGES = ("fixed", "moving")


def parse_windows(texts: Sequence[str]) -> dict[str, Window]:
    """``["-450,450"]`` -> both images; ``["fixed:-450,450"]`` -> the fixed image only.

    Returns:
        {"fixed" and/or "moving": (low, high)} with finite low < high.

    Raises:
        SynthgenError: a malformed window, or one image windowed twice.
    """
    windows: dict[str, Window] = {}
    for text in texts:
        image, sep, bounds = text.rpartition(":")
        names = IMAGES if not sep else (image,)
        parts = bounds.split(",")
        try:
            low, high = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
        except ValueError:
            low = high = math.nan
        if any(n not in IMAGES for n in names) or not (math.isfinite(low) and math.isfinite(high)
                                                       and low < high):
            raise SynthgenError(f"--intensity-window {text!r}: expected [fixed:|moving:]LOW,HIGH "
                                f"with numbers LOW < HIGH, e.g. -450,450")
        for name in names:
            if name in windows:
                raise SynthgenError(f"--intensity-window {text!r}: the {name} image already has a "
                                    f"window; give each image one")
            windows[name] = (low, high)
    return windows


def windowed(extractor: Extractor, windows: dict[str, Window]) -> Extractor:
    """``extractor`` called on the images windowed as ``windows`` says (itself when empty)."""
    if not windows:
        return extractor

    def extract(fixed: torch.Tensor, moving: torch.Tensor, **masks: torch.Tensor | None):
        images = {"fixed": fixed, "moving": moving}
        for name, window in windows.items():
            images[name] = apply_window(images[name], window)
        return extractor(images["fixed"], images["moving"], **masks)

    return extract
