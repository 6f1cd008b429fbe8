"""Values written as text on command lines and in dataset specs: JSON where they parse as JSON."""

from __future__ import annotations

import json
from typing import Any


def parse_value(text: str) -> Any:
    """``text`` as JSON where it parses as JSON (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
