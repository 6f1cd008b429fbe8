"""The one exception type users see: a one-line message that names the problem and the fix."""


class SynthgenError(Exception):
    """A user-facing error. ``str(err)`` is one line; the CLI prints it and exits non-zero."""
