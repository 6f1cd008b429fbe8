"""The engine contract: a config, a schema, and ``sample(seed, index)`` as a pure function."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from synthgen.config_values import field_names, unknown_keys
from synthgen.errors import SynthgenError

FIELD_KINDS = ("image", "labels", "displacement", "affine")


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One stored field of a sample.

    Attributes:
        dtype: numpy dtype name ("uint8", "uint16", "float16").
        shape: per-sample shape, e.g. (D, H, W) or (3, D, H, W).
        kind: one of FIELD_KINDS; tells codecs, preview and export how to treat the field.
        meaning: one sentence for humans, stored in the dataset's schema.
        overlay: for an image, the name of the labels field drawn over it in previews.
    """

    dtype: str
    shape: tuple[int, ...]
    kind: str
    meaning: str
    overlay: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "kind": self.kind,
                "meaning": self.meaning, "overlay": self.overlay}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FieldSpec":
        return cls(dtype=data["dtype"], shape=tuple(data["shape"]), kind=data["kind"],
                   meaning=data["meaning"], overlay=data.get("overlay"))


class Engine(ABC):
    """Turns (seed, index) into one sample. Subclasses set ``name`` and ``Config`` (a dataclass).

    The constructor validates the config and raises ``SynthgenError`` with a one-line message
    naming the bad parameter and its valid range.
    """

    name: ClassVar[str]
    Config: ClassVar[type]

    def __init__(self, **config: Any) -> None:
        unknown = sorted(unknown_keys(self.Config, config))
        if unknown:
            raise SynthgenError(
                f"unknown {self.name} parameter(s) {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(field_names(self.Config)))}")
        self.config = self.Config(**config)
        self.validate()

    def validate(self) -> None:
        """Raise SynthgenError if the config is invalid. Default: accept."""

    def config_dict(self) -> dict[str, Any]:
        """The full config, JSON-serialisable, defaults included."""
        return json_ready(dataclasses.asdict(self.config))

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (D, H, W) of every volume."""

    @property
    @abstractmethod
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing in mm along (D, H, W)."""

    @property
    @abstractmethod
    def schema(self) -> dict[str, FieldSpec]:
        """Field name -> FieldSpec, in storage order."""

    @abstractmethod
    def sample(self, seed: int, index: int, device: torch.device | str | None = None
               ) -> dict[str, torch.Tensor]:
        """Sample ``index`` of a dataset with ``seed``: field name -> tensor with the schema's
        dtype and shape, on ``device`` (CPU when None). A pure function of (seed, index, config).
        """

    @property
    def derived_schema(self) -> dict[str, FieldSpec]:
        """Fields not stored but rendered from stored ones by :meth:`derive` (e.g. the views of a
        label-ensemble dataset stored as labels only). Default: none."""
        return {}

    def derive(self, stored: dict[str, torch.Tensor], seed: int, index: int,
               device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """The fields of :attr:`derived_schema` for sample ``index``, from its stored fields;
        equal (up to float16 rounding) to what storing them would have kept."""
        return {}


def json_ready(value: Any) -> Any:
    """Tuples become lists recursively so configs round-trip through JSON unchanged."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value
