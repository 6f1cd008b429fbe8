"""Feature export: the feature checkpoint of a run, from its best or its last training checkpoint.

A run directory holds ``last.pt`` (the latest state) and, once validation has run, ``best.pt``
(the step with the lowest validation loss; see :mod:`pretrain.checkpoint`). Export reads
``best.pt`` where there is one, as anatomix keeps its best-validation model, else ``last.pt``;
``which`` picks one explicitly. The end of training and ``synthgen-pretrain export`` both export
this way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from pretrain.checkpoint import BEST, LAST, build_module, load_checkpoint
from pretrain.config import from_dict
from pretrain.recipe import Recipe
from pretrain.registry import get_recipe
from synthgen.errors import SynthgenError

WHICH = {"best": BEST, "last": LAST}


class ExportResult(NamedTuple):
    """The feature checkpoint written (``features``), the training checkpoint it came from
    (``source``), that checkpoint's step, and its ``best`` record (None in runs from before
    ``best.pt`` or without validation)."""

    features: str
    source: Path
    step: int
    best: dict[str, Any] | None

    def describe(self) -> str:
        """One line: ``FEATURES from SOURCE (step N[, val loss L])``."""
        at_best = self.best is not None and self.best["step"] == self.step
        loss = f", val loss {self.best['val_loss']:.4g}" if at_best else ""
        return f"{self.features} from {self.source} (step {self.step}{loss})"


def export_source(path: str | os.PathLike, which: str | None = None) -> Path:
    """The training checkpoint to export: ``path`` itself if it is a file; for a run directory
    its ``best.pt`` (``which`` "best", or None and the run has one) or ``last.pt`` ("last", or
    None and no ``best.pt``).

    Raises:
        SynthgenError: an unknown ``which``, ``which`` with a file, or the checkpoint is missing.
    """
    path = Path(path)
    if which is not None and which not in WHICH:
        raise SynthgenError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
    if path.is_file():
        if which is not None:
            raise SynthgenError(f"--which picks {BEST} or {LAST} of a run directory; {path} is a checkpoint file")
        return path
    if not path.is_dir():
        raise SynthgenError(f"no run directory or checkpoint at {path}")
    if which is None:
        return path / BEST if (path / BEST).is_file() else path / LAST
    chosen = path / WHICH[which]
    if which == "best" and not chosen.is_file():
        raise SynthgenError(f"{path} has no {BEST} (no validation ran: train.val_every 0, no held-out shards, or a "
                            f"run from before best.pt); export its last checkpoint with --which last")
    return chosen


def export_features(path: str | os.PathLike, out: str | os.PathLike, which: str | None = None,
                    recipe: Recipe | None = None) -> ExportResult:
    """Write the feature checkpoint ``out`` of the training checkpoint :func:`export_source`
    ``(path, which)`` picks, with its modules rebuilt on the CPU in eval mode.

    Args:
        path: a run directory or a training checkpoint file.
        out: the feature checkpoint to write.
        which: "best", "last" or None (best where there is one), for a run directory.
        recipe: the recipe that exports (default: the checkpoint's, rebuilt from its name and config).

    Raises:
        SynthgenError: see :func:`export_source` and :func:`pretrain.checkpoint.load_checkpoint`.
    """
    source = export_source(path, which)
    checkpoint = load_checkpoint(source)
    if recipe is None:
        recipe_cls = get_recipe(checkpoint["recipe"])
        config = from_dict(recipe_cls, checkpoint["config"])
        recipe = recipe_cls(model=config.model, recipe=config.recipe)
    modules = {name: build_module(entry, source).eval() for name, entry in checkpoint["modules"].items()}
    features = recipe.export_features(modules, str(out))
    return ExportResult(features, source, int(checkpoint["step"]), checkpoint.get("best"))
