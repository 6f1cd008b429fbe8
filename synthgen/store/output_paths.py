"""Checking an output location before any work starts: a one-line error instead of a traceback.

Every command that writes (``synthgen generate|export|preview``, ``synthgen templates
build|preview``, ``synthgen-bench register``, ``synthgen-pretrain``, ``synthgen-pretrain
export``) checks its output path here first. A local path is refused (:class:`SynthgenError`
naming the path and the fix; nothing is created) when one of its parent folders is a file, when
nothing can be created in the deepest folder of it that exists (permissions, a read-only
filesystem, pseudo-filesystems such as /sys), or when it is a file where a folder is expected
(a folder where a file is expected).

Writability is probed by creating and removing an empty folder: ``os.access`` is not enough,
root passes it for folders it cannot write (/sys, /proc). Remote URLs (``s3://``, ``file://``,
cache-prefixed) are left to the remote storage checks of ``synthgen.store.urls``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from synthgen.errors import SynthgenError
from synthgen.store.urls import is_remote_url

PROBE_PREFIX = ".synthgen-write-check-"


def check_output_path(path: str | os.PathLike, kind: str, *, folder: bool, example: str,
                      option: str = "--out") -> None:
    """Refuse ``path`` as the location of a ``kind`` ("dataset", "PNG", ...) unless it can be
    written; see the module docstring. Creates nothing that outlives the call.

    Args:
        path: the output path as the user gave it (a URL passes unchecked).
        kind: what is written there, for the messages.
        folder: the output is a folder (True) or a file (False).
        example: the fix offered when the kind of path is wrong: a suffix for a folder path
            (``".zarr"``: "such as PATH.zarr"), a file name for a file path (``"preview.png"``:
            "such as PATH/preview.png").
        option: the command-line option that named ``path``.

    Raises:
        SynthgenError: one line naming ``path`` and the fix.
    """
    text = os.fspath(path)
    if is_remote_url(text):
        return
    target = Path(text)
    if target.exists():
        if folder and not target.is_dir():
            raise SynthgenError(f"{option} {text} is a file; give a folder path for the {kind}, "
                                f"such as {text}{example}")
        if not folder and target.is_dir():
            raise SynthgenError(f"{option} {text} is a directory; give a file path for the {kind}, "
                                f"such as {os.path.join(text, example)}")
    writes_in = target if folder and target.is_dir() else _existing_ancestor(target, text, option)
    _probe(writes_in, text, kind, option)


def _existing_ancestor(target: Path, text: str, option: str) -> Path:
    """The deepest existing folder above ``target``; refuses a file on the way."""
    for parent in target.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise SynthgenError(f"{option} {text} is inside {parent}, which is a file; choose a path "
                                    f"inside a folder")
            return parent
    raise SynthgenError(f"{option} {text}: no folder above it exists; choose a path inside a folder")


def _probe(folder: Path, text: str, kind: str, option: str) -> None:
    try:
        probe = tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=folder)
    except OSError as err:
        raise SynthgenError(f"{option} {text} cannot be written: nothing can be created in {folder} "
                            f"({err.strerror or err}); choose a {kind} path in a folder you can "
                            f"write to") from None
    os.rmdir(probe)
