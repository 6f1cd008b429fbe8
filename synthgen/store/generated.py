"""A dataset that is never stored: samples generated on demand from (seed, index).

``generate:ENGINE?n=N&seed=S&shard_size=K&key=value...`` names the dataset that ``synthgen
generate --engine ENGINE --n N --seed S --shard-size K --set key=value ...`` would write (the
same identity, shards and sample order), without writing it. :func:`synthgen.store.open_dataset`
opens such a spec as a :class:`GeneratedDataset`: it stores no field, and every field of the
engine is *derived*, i.e. rendered by :meth:`GeneratedDataset.derive` on the consumer's device.
So ``ShardStream`` over a spec yields only sample indices (and crop corners), and
``DeviceStage`` generates the samples on the training device: online generation as in Chen et
al., with the same samples, in the same order, as the stored dataset would give.

Values are JSON where they parse as JSON (``amplitudes=[4,8]``, ``multimodal=true``), strings
otherwise; quote the spec in a shell (``&``).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import torch

from synthgen.config_values import parse_value
from synthgen.engines import Engine, FieldSpec, engine_names, get_engine
from synthgen.errors import SynthgenError
from synthgen.store.info import DatasetInfo
from synthgen.store.plan import plan_dataset

GENERATED_PREFIX = "generate:"
RESERVED_KEYS = ("n", "seed", "shard_size")
EXAMPLE = "generate:label-ensemble?n=100000&seed=0&size=128"


def is_generated_spec(path: str) -> bool:
    """Whether ``path`` names a generated dataset rather than a store."""
    return str(path).startswith(GENERATED_PREFIX)


@dataclasses.dataclass(frozen=True)
class GeneratedSpec:
    engine: str
    num_samples: int
    seed: int
    shard_size: int | None
    config: dict[str, Any]


def parse_generated_spec(spec: str) -> GeneratedSpec:
    """``generate:ENGINE?n=N[&seed=S][&shard_size=K][&key=value...]`` -> its parts.

    Raises:
        SynthgenError: an unknown engine, a missing or bad ``n``, ``seed`` or ``shard_size``, a
            key given twice.
    """
    body = str(spec)[len(GENERATED_PREFIX):]
    engine, _, query = body.partition("?")
    if engine not in engine_names():
        raise SynthgenError(f"{spec!r}: unknown engine {engine!r}; write {GENERATED_PREFIX}ENGINE?n=N... with "
                            f"ENGINE one of {', '.join(engine_names())} (e.g. {EXAMPLE!r})")
    pairs = parse_qsl(query, keep_blank_values=True)
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise SynthgenError(f"{spec!r}: {', '.join(repeated)} given more than once")
    values = {key: parse_value(value) for key, value in pairs}
    numbers = {}
    for key, low in (("n", 1), ("seed", 0), ("shard_size", 1)):
        value = values.pop(key, None)
        if value is None and key != "n":
            numbers[key] = None if key == "shard_size" else 0
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise SynthgenError(f"{spec!r}: {key} must be an integer >= {low}, got {value!r} (e.g. {EXAMPLE!r})")
        numbers[key] = value
    return GeneratedSpec(engine=engine, num_samples=numbers["n"], seed=numbers["seed"],
                         shard_size=numbers["shard_size"], config=values)


class GeneratedDataset:
    """The read surface of :class:`synthgen.store.Dataset` for a ``generate:`` spec: ``info``
    (the identity ``synthgen generate`` would record, with an empty stored schema), ``engine``,
    ``derived_schema`` (every field of the engine), every shard committed, and :meth:`derive`,
    which generates sample ``index`` on a device."""

    def __init__(self, spec: str) -> None:
        self.path = str(spec)
        parsed = parse_generated_spec(self.path)
        self.engine: Engine = get_engine(parsed.engine, **parsed.config)
        planned = plan_dataset(self.engine, parsed.num_samples, parsed.seed, parsed.shard_size)
        self.info: DatasetInfo = dataclasses.replace(planned, schema={})
        self.derived_schema: dict[str, FieldSpec] = {**self.engine.schema, **self.engine.derived_schema}

    def __len__(self) -> int:
        return self.info.num_samples

    @property
    def full_schema(self) -> dict[str, FieldSpec]:
        return dict(self.derived_schema)

    @property
    def committed(self) -> list[int]:
        return list(range(self.info.num_shards))

    def refresh(self) -> None:
        """Nothing to re-list: every shard of a generated dataset exists."""

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """The stored fields of sample ``index``: none."""
        self.info.shard_of(int(index))
        return {}

    def derive(self, stored: dict[str, torch.Tensor], index: int, device: torch.device | str | None = None
               ) -> dict[str, torch.Tensor]:
        """Sample ``index`` generated on ``device``: every field of :attr:`derived_schema` as a
        tensor with the schema's dtype and shape (``stored`` is empty and ignored)."""
        self.info.shard_of(int(index))
        sample = self.engine.sample(self.info.seed, int(index), device=device)
        return {**sample, **self.engine.derive(sample, self.info.seed, int(index), device=device)}

    def sample_with_derived(self, index: int, device: torch.device | str | None = None
                            ) -> dict[str, np.ndarray]:
        """Sample ``index`` generated on ``device``, as numpy arrays."""
        with torch.inference_mode():
            return {name: tensor.cpu().numpy() for name, tensor in self.derive({}, index, device).items()}
