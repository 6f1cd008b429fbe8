"""Values written as text on command lines and in dataset specs: JSON where they parse as JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any


def parse_value(text: str) -> Any:
    """``text`` as JSON where it parses as JSON (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def field_names(cls: type) -> list[str]:
    """The field names of dataclass ``cls``, in declaration order."""
    return [field.name for field in dataclasses.fields(cls)]


def unknown_keys(cls: type, keys: Iterable[str]) -> list[str]:
    """The ``keys`` that are not fields of dataclass ``cls``, in their order."""
    valid = set(field_names(cls))
    return [key for key in keys if key not in valid]
