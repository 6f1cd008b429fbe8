"""One-line errors from DataLoader worker processes.

A DataLoader re-raises an exception from a worker as the same class with a message that torch
prefixes with "Caught SynthgenError in DataLoader worker process N" and the worker's traceback;
the CLIs promise one-line errors, so they reduce it to the worker's own message.
"""

from __future__ import annotations

from synthgen.errors import SynthgenError


def worker_message(text: str) -> str:
    """The one-line message of a SynthgenError re-raised by a DataLoader from a worker process
    (``text`` unchanged when it is not such a message)."""
    last = text.strip().splitlines()[-1] if text.strip() else text
    prefix = f"{SynthgenError.__module__}.{SynthgenError.__name__}: "
    return last.removeprefix(prefix) if "\n" in text.strip() and last.startswith(prefix) else text
