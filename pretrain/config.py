"""The run config: six sections, layered, validated, serialised to JSON.

Sections: ``data``, ``optim``, ``schedule`` and ``train`` belong to the loop (the dataclasses
below); ``model`` and ``recipe`` are the recipe's ``ModelConfig`` and ``LossConfig``.

Layering, later wins: the loop's defaults < ``Recipe.defaults()`` < a preset (``tiny``,
``default``, or any the recipe names) or a config file (JSON, or YAML when PyYAML is installed)
< ``--set section.key=value`` overrides. Every layer is checked: an unknown section or key is a
:class:`~synthgen.errors.SynthgenError` naming it and the valid ones; values are checked against
the dataclasses' type annotations (ints stay ints, lists become tuples where a tuple is declared).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

from synthgen.config_values import field_names, unknown_keys
from synthgen.errors import SynthgenError

LOOP_SECTIONS = ("data", "optim", "schedule", "train")
SECTIONS = (*LOOP_SECTIONS, "model", "recipe")
BUILTIN_PRESETS = ("default",)

# keys a resumed run may change: they do not alter what the optimiser sees up to the saved step
RESUMABLE_KEYS = frozenset({"train.steps", "train.log_every", "train.val_every", "train.val_batches",
                            "train.ckpt_every", "train.keep_every", "data.workers", "data.prefetch"})


@dataclasses.dataclass
class DataConfig:
    """Where batches come from.

    ``crop``: one int (a cube), three ints, or None (whole volumes). ``val_shards``: the last
    that many committed shards are held out for validation (none when ``train.val_every`` is 0;
    0: no validation). ``augment``:
    overrides of the online augmentation (:class:`synthgen.ops.augment.online.OnlineAugmentConfig`),
    used when the recipe asks for it. ``prefetch``: batches each DataLoader worker reads ahead.
    """

    path: str | None = None
    crop: int | tuple[int, int, int] | None = None
    batch_size: int = 2
    workers: int = 2
    prefetch: int = 2
    seed: int = 0
    shuffle: bool = True
    on_error: Literal["raise", "skip"] = "raise"
    block_shards: int = 4
    val_shards: int = 1
    augment: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _at_least(self, batch_size=1, workers=0, prefetch=1, seed=0, block_shards=1, val_shards=0)
        sizes = () if self.crop is None else (self.crop,) if isinstance(self.crop, int) else self.crop
        if any(size < 1 for size in sizes):
            raise ValueError(f"crop sizes must be >= 1, got {self.crop}")


@dataclasses.dataclass
class OptimConfig:
    """The optimiser: ``momentum`` and ``nesterov`` apply to SGD only, ``betas``, ``eps`` and
    ``amsgrad`` to Adam and AdamW."""

    name: Literal["adam", "adamw", "sgd"] = "adamw"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    amsgrad: bool = False

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.eps <= 0 or self.weight_decay < 0 or self.momentum < 0:
            raise ValueError("lr and eps must be > 0, weight_decay and momentum >= 0")


@dataclasses.dataclass
class ScheduleConfig:
    """The learning-rate factor per step: linear warm-up over ``warmup_steps``, then constant,
    linear decay to 0 at ``train.steps``, cosine decay to 0 at ``train.steps``, or polynomial
    ``(1 - e / E) ** power`` held for ``poly_every`` steps at a time (Chen et al.'s per-epoch
    decay: e counts the blocks of ``poly_every`` steps, E = ``train.steps / poly_every``)."""

    name: Literal["constant", "linear", "cosine", "poly"] = "constant"
    warmup_steps: int = 0
    power: float = 0.9
    poly_every: int = 1

    def __post_init__(self) -> None:
        _at_least(self, warmup_steps=0, poly_every=1)
        if not self.power > 0:
            raise ValueError(f"power must be > 0, got {self.power}")


@dataclasses.dataclass
class TrainConfig:
    """The loop.

    ``amp``: "auto" (bf16 on CUDA where supported, else fp16; off on CPU), "off", "bf16" or
    "fp16" (with a gradient scaler). ``grad_clip``: max global gradient norm, None = off.
    ``*_every``: in steps, 0 = never (``ckpt_every`` 0 still saves at the end; ``keep_every``
    keeps a copy ``step-NNNNNNNN.pt`` besides ``last.pt``). ``device``: "auto" (CUDA when
    present), "cpu", "cuda" or "cuda:N". ``deterministic``: deterministic kernels (exact resume
    on GPU; slower).
    """

    steps: int = 1000
    grad_clip: float | None = None
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    log_every: int = 10
    val_every: int = 500
    val_batches: int = 8
    ckpt_every: int = 500
    keep_every: int = 0
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        _at_least(self, steps=1, log_every=1, val_every=0, val_batches=1, ckpt_every=0, keep_every=0, seed=0)
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or null (off), got {self.grad_clip}")


LOOP_CLASSES: dict[str, type] = {"data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
                                 "train": TrainConfig}


@dataclasses.dataclass
class RunConfig:
    """A complete, validated config. ``model`` and ``recipe`` are instances of the recipe's
    ``ModelConfig`` and ``LossConfig``."""

    data: DataConfig
    optim: OptimConfig
    schedule: ScheduleConfig
    train: TrainConfig
    model: Any
    recipe: Any

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain JSON-ready nested dict (tuples become lists)."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        """The config as indented JSON (what ``RUN/config.json`` and checkpoints hold)."""
        return json.dumps({name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}, indent=2)

    @property
    def crop(self) -> tuple[int, int, int] | None:
        """``data.crop`` as three sizes, or None."""
        crop = self.data.crop
        return None if crop is None else (crop,) * 3 if isinstance(crop, int) else tuple(crop)


def section_classes(recipe_cls: type) -> dict[str, type]:
    """Section name -> dataclass, for a recipe class."""
    return {**LOOP_CLASSES, "model": recipe_cls.ModelConfig, "recipe": recipe_cls.LossConfig}


def build_config(recipe_cls: type, preset: str | None = None,
                 overrides: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> RunConfig:
    """Layer a config for ``recipe_cls``.

    Args:
        recipe_cls: a :class:`pretrain.recipe.Recipe` subclass.
        preset: a preset name (``default``, ``tiny``, ...) or a JSON/YAML file of nested sections.
        overrides: ``{"section.key": value}`` (``--set``), applied last; a dict-valued key takes
            sub-keys (``data.augment.p_flip``).
        base: a complete nested config (a saved run's) used instead of the defaults.

    Raises:
        SynthgenError: unknown preset, file, section or key, or an invalid value.
    """
    classes = section_classes(recipe_cls)
    if base is None:
        nested = {name: dataclasses.asdict(cls()) for name, cls in classes.items()}
        merge(nested, recipe_cls.defaults(), classes, f"{recipe_cls.name} defaults")
    else:
        nested = {name: {} for name in classes}
        merge(nested, base, classes, "the saved config")
    if preset is not None:
        merge(nested, load_preset(recipe_cls, preset), classes, f"--config {preset}")
    merge(nested, nest_overrides(overrides or {}, classes), classes, "--set")
    return from_dict(recipe_cls, nested)


def from_dict(recipe_cls: type, nested: Mapping[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from a complete nested dict (e.g. a saved ``config.json``); missing
    keys take the dataclass defaults."""
    classes = section_classes(recipe_cls)
    _check_sections(nested, "config")
    sections = {name: _build_section(cls, name, nested.get(name, {})) for name, cls in classes.items()}
    return RunConfig(**sections)


def load_preset(recipe_cls: type, preset: str) -> dict[str, Any]:
    """The nested overrides of preset ``preset`` of ``recipe_cls``, or of the config file at
    that path."""
    presets = recipe_cls.presets()
    if preset in presets:
        return copy.deepcopy(presets[preset])
    if preset in BUILTIN_PRESETS:
        return {}
    path = Path(preset)
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        names = ", ".join(sorted({*presets, *BUILTIN_PRESETS}))
        raise SynthgenError(f"unknown preset {preset!r}; {recipe_cls.name} presets are {names}, "
                            f"or give a .json/.yaml config file")
    if not path.is_file():
        raise SynthgenError(f"config file {preset} does not exist")
    return read_config_file(path)


def read_config_file(path: Path) -> dict[str, Any]:
    """Nested sections from a JSON or YAML file."""
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SynthgenError(f"config file {path} is not valid JSON ({err})") from None
    else:
        try:
            import yaml
        except ImportError:
            raise SynthgenError(f"reading {path} needs PyYAML (pip install pyyaml); or write the config "
                                f"as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            problem = str(err).replace("\n", " ")
            raise SynthgenError(f"config file {path} is not valid YAML ({problem})") from None
    if not isinstance(data, dict):
        raise SynthgenError(f"config file {path} must hold a mapping of sections ({', '.join(SECTIONS)})")
    return data


def nest_overrides(overrides: Mapping[str, Any], classes: Mapping[str, type]) -> dict[str, dict[str, Any]]:
    """``{"optim.lr": 1e-3}`` -> ``{"optim": {"lr": 1e-3}}``; ``section.key.sub`` sets one entry
    of a dict-valued key."""
    nested: dict[str, dict[str, Any]] = {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if not key:
            raise SynthgenError(f"--set expects section.key=value, got {dotted!r}; sections: {', '.join(SECTIONS)}")
        _check_sections({section: None}, dotted)
        key, _, sub = key.partition(".")
        _check_keys(classes[section], section, [key])
        if sub:
            if not _is_dict_field(classes[section], key):
                raise SynthgenError(f"{section}.{key} has no sub-keys; use --set {section}.{key}=VALUE")
            nested.setdefault(section, {}).setdefault(key, {})[sub] = value
        else:
            nested.setdefault(section, {})[key] = value
    return nested


def merge(nested: dict[str, dict[str, Any]], layer: Mapping[str, Any], classes: Mapping[str, type],
          source: str) -> None:
    """Apply ``layer`` (nested sections) onto ``nested`` in place, checking section and key names;
    a dict-valued key is updated entry by entry."""
    if not isinstance(layer, Mapping):
        raise SynthgenError(f"{source} must be a mapping of sections ({', '.join(SECTIONS)})")
    _check_sections(layer, source)
    for section, values in layer.items():
        if not isinstance(values, Mapping):
            raise SynthgenError(f"section {section} in {source} must be a mapping of keys, got {values!r}")
        _check_keys(classes[section], section, values, source)
        for key, value in values.items():
            current = nested[section].get(key)
            if isinstance(current, dict) and isinstance(value, Mapping):
                nested[section][key] = {**current, **value}
            else:
                nested[section][key] = copy.deepcopy(value)


def flatten(config: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """``{"section.key": value}`` of a config (JSON-normalised values)."""
    nested = config.to_dict() if isinstance(config, RunConfig) else json.loads(json.dumps(config))
    return {f"{section}.{key}": value for section, values in nested.items() for key, value in values.items()}


def differing_keys(saved: RunConfig | Mapping[str, Any], new: RunConfig | Mapping[str, Any],
                   ignore: frozenset[str] = RESUMABLE_KEYS) -> dict[str, tuple[Any, Any]]:
    """``{"section.key": (saved value, new value)}`` for keys that differ, except ``ignore``."""
    old, now = flatten(saved), flatten(new)
    return {key: (old.get(key), now.get(key)) for key in sorted({*old, *now})
            if key not in ignore and old.get(key) != now.get(key)}


# -- validation -------------------------------------------------------------------------------------


class _Mismatch(Exception):
    pass


def _at_least(section: Any, **minimums: int) -> None:
    for key, minimum in minimums.items():
        if getattr(section, key) < minimum:
            raise ValueError(f"{key} must be >= {minimum}, got {getattr(section, key)}")


def _check_sections(layer: Mapping[str, Any], source: str) -> None:
    unknown = [name for name in layer if name not in SECTIONS]
    if unknown:
        raise SynthgenError(f"unknown config section {unknown[0]!r} in {source}; sections: {', '.join(SECTIONS)}")


def _check_keys(cls: type, section: str, keys: Any, source: str = "--set") -> None:
    unknown = unknown_keys(cls, keys)
    if unknown:
        raise SynthgenError(f"unknown config key {section}.{unknown[0]} in {source}; valid keys of "
                            f"{section}: {', '.join(field_names(cls))}")


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # annotations this module cannot resolve: values are taken as given
        return {}


def _is_dict_field(cls: type, key: str) -> bool:
    hint = _hints(cls).get(key)
    return hint is dict or typing.get_origin(hint) is dict


def _build_section(cls: type, section: str, values: Mapping[str, Any]) -> Any:
    _check_keys(cls, section, values, "config")
    hints = _hints(cls)
    checked = {}
    for key, value in values.items():
        hint = hints.get(key, Any)
        try:
            checked[key] = _coerce(value, hint)
        except _Mismatch:
            raise SynthgenError(f"{section}.{key} must be {_describe(hint)}, got {value!r}") from None
    try:
        return cls(**checked)
    except (TypeError, ValueError) as err:
        raise SynthgenError(f"invalid {section} section: {err}") from None


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if hint is bool or hint is str:
        if isinstance(value, hint):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _Mismatch
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        items = [_coerce(v, args[0]) for v in value] if args else list(value)
        return tuple(items) if (origin or hint) is tuple else items
    if origin is dict or hint is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _Mismatch
    return value


def _describe(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a, plural) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if hint is type(None):
        return "null"
    if origin in (tuple, list):
        count = f"{len(args)} " if origin is tuple and args and args[-1] is not Ellipsis else ""
        return f"a list of {count}{_describe(args[0], plural=True)}" if args else "a list"
    if origin is dict or hint is dict:
        return "mappings" if plural else "a mapping"
    names = {int: ("an integer", "integers"), float: ("a number", "numbers"), bool: ("true or false", "booleans"),
             str: ("a string", "strings")}
    return names[hint][plural] if hint in names else str(hint)
