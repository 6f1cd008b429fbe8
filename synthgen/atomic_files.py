"""Writing a local file so that readers see the old file or the whole new one, never a part."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object],
                     partial: str | os.PathLike | None = None) -> Path:
    """``write(partial)`` writes the new file beside ``path``; it is then renamed over ``path``.
    The partial file (default ``.partial-NAME`` in ``path``'s folder, which is created; it keeps
    the name's suffix, so writers that pick a format by the suffix write the right one) is
    removed whatever happens. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}") if partial is None else Path(partial)
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path

