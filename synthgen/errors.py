"""The one exception type users see: a one-line message that names the problem and the fix."""


class SynthgenError(Exception):
    """A user-facing error. ``str(err)`` is one line; the CLI prints it and exits non-zero."""


def first_line(err: BaseException, with_type: bool = False) -> str:
    """The first line of ``err``'s message for a one-line error (its type name when the message
    is empty), optionally prefixed ``"TypeName: "``."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text.splitlines()[0]}" if with_type else text.splitlines()[0]
