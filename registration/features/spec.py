"""Extractor spec strings and typed options.

A spec is ``NAME[:ARG][,key=value...]``: ``mind``, ``mind,radius=2``, ``ckpt:model.pt,scale=0.1``,
``slice2d:encoder.pt,every=4,pca=12``. The argument runs from the first ``:`` to the first ``,``
(so a path may hold ``:`` but not ``,``); every later comma-separated piece is one ``key=value``.
Values are strings here; each extractor's :class:`Option` table types and checks them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

from synthgen.errors import SynthgenError


@dataclasses.dataclass(frozen=True)
class Spec:
    """A parsed spec: lower-case ``name``, the ``arg`` after ``:`` (None without one) and the raw
    ``key=value`` options in order."""

    name: str
    arg: str | None
    options: dict[str, str]


def parse_spec(text: str) -> Spec:
    """Split ``NAME[:ARG][,key=value...]``; a malformed piece raises :class:`SynthgenError`."""
    head, *pieces = text.strip().split(",")
    name, colon, arg = head.partition(":")
    name = name.strip().lower()
    if not name:
        raise SynthgenError(f"feature spec {text!r} has no extractor name; write NAME[:ARG][,key=value...], "
                            f"e.g. mind or ckpt:model.pt,scale=0.1")
    if colon and not arg.strip():
        raise SynthgenError(f"feature spec {text!r} has ':' but no argument after it; "
                            f"write {name}:PATH or drop the ':'")
    options: dict[str, str] = {}
    for piece in pieces:
        key, equals, value = (part.strip() for part in piece.partition("="))
        if not equals or not key or not value:
            raise SynthgenError(f"malformed option {piece.strip()!r} in feature spec {text!r}; "
                                f"options are key=value pairs separated by commas")
        if key in options:
            raise SynthgenError(f"option {key!r} is given twice in feature spec {text!r}; give it once")
        options[key] = value
    return Spec(name, arg.strip() if colon else None, options)


Converter = Callable[[object], object]


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of an extractor: ``convert`` turns a spec string or a checkpoint default into
    the typed value (raising ValueError that says what was expected), ``default`` is used when
    neither gives it, ``help`` is one phrase for ``--help``."""

    convert: Converter
    default: object
    help: str


def _number(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def integer(minimum: int, maximum: int | None = None) -> Converter:
    """A converter to int in ``[minimum, maximum]`` (from an int, an integral float or a decimal
    string); ``maximum`` None is unbounded."""
    expected = (f"expected an integer >= {minimum}" if maximum is None
                else f"expected an integer from {minimum} to {maximum}")

    def convert(value: object) -> int:
        try:
            number = _number(value)
        except ValueError:
            raise ValueError(expected) from None
        if number != int(number) or number < minimum or (maximum is not None and number > maximum):
            raise ValueError(expected)
        return int(number)

    return convert


def optional(convert: Converter) -> Converter:
    """``convert``, or None for None / "none" (an option that can be switched off)."""

    def wrapped(value: object) -> object:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        try:
            return convert(value)
        except ValueError as exc:
            raise ValueError(f"{exc} or none") from None

    return wrapped


def real(minimum: float | None = None, below: float | None = None) -> Converter:
    """A converter to float in ``[minimum, below)`` (either bound may be open-ended)."""

    def convert(value: object) -> float:
        number = _number(value)
        if (minimum is not None and number < minimum) or (below is not None and number >= below):
            low = "-inf" if minimum is None else f"{minimum:g}"
            high = "inf" if below is None else f"{below:g}"
            raise ValueError(f"expected a number in [{low}, {high})")
        return number

    return convert


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def boolean(value: object) -> bool:
    """A bool from a bool or true/false, 1/0, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ValueError("expected true or false")


def choice(*names: str) -> Converter:
    """A converter that accepts one of ``names`` (case-insensitive)."""

    def convert(value: object) -> str:
        text = str(value).strip().lower()
        if text not in names:
            raise ValueError(f"expected one of {', '.join(names)}")
        return text

    return convert


def number_list(value: object) -> tuple[float, ...]:
    """One number or a non-empty sequence of numbers, as a tuple of floats."""
    values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if not values:
        raise ValueError("expected a number or a list of numbers")
    try:
        return tuple(_number(v) for v in values)
    except ValueError:
        raise ValueError("expected a number or a list of numbers") from None


def resolve_options(owner: str, table: Mapping[str, Option], *layers: Mapping[str, object],
                    source: Sequence[str] = ()) -> dict[str, object]:
    """Typed options: ``table``'s defaults overridden by each layer in turn (e.g. checkpoint
    defaults, then the spec). ``source[i]`` names layer i in error messages.

    Raises:
        SynthgenError: an unknown key (listing the valid ones) or a value its converter rejects.
    """
    resolved = {key: option.default for key, option in table.items()}
    for index, layer in enumerate(layers):
        where = source[index] if index < len(source) else "the spec"
        for key, value in layer.items():
            if key not in table:
                raise SynthgenError(f"unknown option {key!r} for extractor {owner!r} in {where}; "
                                    f"valid options: {', '.join(sorted(table))}")
            try:
                resolved[key] = table[key].convert(value)
            except ValueError as exc:
                raise SynthgenError(f"option {key}={value} for extractor {owner!r} in {where} is "
                                    f"invalid: {exc}") from None
    return resolved
