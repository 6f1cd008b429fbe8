"""Engines: one module per engine; each turns (seed, index) into one sample."""

from __future__ import annotations

from typing import Any

from synthgen.engines.base import Engine, FieldSpec
from synthgen.errors import SynthgenError


def _registry() -> dict[str, type[Engine]]:
    from synthgen.engines.ingest import Ingest
    from synthgen.engines.ingest_pairs import IngestPairs
    from synthgen.engines.label_ensemble import LabelEnsemble
    from synthgen.engines.random_shapes import RandomShapes

    return {cls.name: cls for cls in (LabelEnsemble, RandomShapes, Ingest, IngestPairs)}


def engine_names() -> list[str]:
    return sorted(_registry())


def get_engine(name: str, **config: Any) -> Engine:
    """The engine called ``name`` with ``config`` (unknown or invalid parameters raise SynthgenError)."""
    registry = _registry()
    if name not in registry:
        raise SynthgenError(f"unknown engine {name!r}; choose one of: {', '.join(sorted(registry))}")
    return registry[name](**config)


__all__ = ["Engine", "FieldSpec", "get_engine", "engine_names"]
