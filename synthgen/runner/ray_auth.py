"""Ray token authentication for the Ray runtimes synthgen starts and the clusters it joins.

How Ray 2.60 does it (its ``ray/_private/authentication`` and ``src/ray/rpc/authentication``):

- The mode is RayConfig's ``AUTH_MODE``, read from ``RAY_AUTH_MODE`` whenever RayConfig is
  (re)initialised: by ``ray._raylet.Config.initialize`` and when ``ray.init`` starts this
  process's core worker, never later; ``token`` turns it on.
- The token is the first of: ``RAY_AUTH_TOKEN``; the file ``RAY_AUTH_TOKEN_PATH`` (set but
  unreadable or empty: an error); ``$HOME/.ray/auth_token``. Once loaded it is cached for the
  process. In token mode without a token, Ray's C++ token loader aborts the process.
- ``ray.init()`` of a new local runtime with ``RAY_AUTH_MODE`` unset turns token authentication
  on (creating ``~/.ray/auth_token`` if there is none), sets ``RAY_AUTH_MODE=token`` in
  ``os.environ`` for the rest of the process and logs a WARNING about it; with the mode set it
  is silent.
- ``ray.init(address=HOST:PORT)`` with ``RAY_AUTH_MODE`` unset never turns it on (only no
  address or ``auto`` does, when a token exists), so a cluster with token authentication
  refuses the driver: the GCS client logs ``Unauthenticated ... InvalidAuthToken`` once a second
  for 20 tries, then ``ray.init`` raises ``ConnectionError("Failed to connect to Ray cluster
  at ...")``. A ``GcsClient`` raises ``ray.exceptions.AuthenticationError`` at once instead.

So synthgen sets ``RAY_AUTH_MODE=token`` where it is unset, for its own local runtime (Ray's
default, without the warning) and for a cluster when a token is at hand, only around the Ray
calls of this process (then the environment is as it was: nothing leaks into later runtimes or
child processes, and no setting is written anywhere), and asks a cluster's GCS first whether it accepts the
driver, to fail in one line naming token authentication rather than the address.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synthgen.errors import SynthgenError, first_line

MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
TOKEN_FIX = (f"run with {MODE_ENV}=token and the cluster's token (`ray get-auth-token` on its head node) in "
             f"~/.ray/auth_token, {TOKEN_PATH_ENV} or {TOKEN_ENV}")


def token_source() -> str | None:
    """Where Ray would take this process's token from (``RAY_AUTH_TOKEN`` or a file path), or
    None when there is none; a ``RAY_AUTH_TOKEN_PATH`` that cannot be read is an error."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return TOKEN_ENV
    path = os.environ.get(TOKEN_PATH_ENV)
    if path:
        if _file_token(path):
            return path
        raise SynthgenError(f"{TOKEN_PATH_ENV}={path} cannot be read or is empty; point it at the file "
                            f"holding the Ray cluster's token, or unset it")
    default = str(Path.home() / ".ray" / "auth_token")
    return default if _file_token(default) else None


def _file_token(path: str) -> str:
    """The token in ``path`` as Ray reads it (its first line, stripped), or "" when unreadable."""
    try:
        with open(path) as handle:
            return handle.readline().strip()
    except OSError:
        return ""


def cluster_auth_mode() -> tuple[str | None, str | None]:
    """``(mode, token source)`` for joining a cluster: ``mode`` is ``"token"`` where synthgen turns
    token authentication on (``RAY_AUTH_MODE`` unset and a token at hand), else None (the
    environment decides). ``RAY_AUTH_MODE=token`` without a token is an error here, not a crash."""
    source = token_source()
    explicit = os.environ.get(MODE_ENV)
    if explicit is None:
        return ("token" if source else None), source
    if explicit.lower() == "token" and source is None:
        raise SynthgenError(f"{MODE_ENV}=token but no Ray authentication token was found; put the cluster's "
                            f"token (`ray get-auth-token` on its head node) in ~/.ray/auth_token, "
                            f"{TOKEN_PATH_ENV} or {TOKEN_ENV}")
    return None, source


def local_auth_mode() -> str | None:
    """The mode for a local runtime: ``"token"`` (Ray's default) where ``RAY_AUTH_MODE`` is unset."""
    return "token" if os.environ.get(MODE_ENV) is None else None


@contextmanager
def auth_mode(mode: str | None) -> Iterator[None]:
    """Ray calls in the block see ``RAY_AUTH_MODE=mode`` (None: the environment's own), with
    Ray's cached mode and token reloaded; afterwards the environment is as it was. Only for a
    process not connected to Ray: a connection keeps the mode and token it started with."""
    from ray._raylet import AuthenticationTokenLoader, Config

    before = os.environ.get(MODE_ENV)
    if mode is not None:
        os.environ[MODE_ENV] = mode
    try:
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
        yield
    finally:
        if before is None:
            os.environ.pop(MODE_ENV, None)
        else:
            os.environ[MODE_ENV] = before


def check_cluster_accepts(address: str) -> None:
    """Ask the GCS at ``address`` (HOST:PORT) for its cluster id with the authentication this
    driver will use; a refusal, or no GCS answering, is one line naming the cause and the fix."""
    import ray
    from ray._raylet import GcsClient

    if ray.is_initialized():
        return
    explicit = os.environ.get(MODE_ENV)
    mode, source = cluster_auth_mode()
    with auth_mode(mode), _stderr_held():  # a refusal's GCS warnings: the one-line error says it
        try:
            GcsClient(address=address)
        except ray.exceptions.AuthenticationError:
            why = (f"{MODE_ENV}={explicit} here" if explicit is not None and explicit.lower() != "token"
                   else f"its token from {source} is not the cluster's" if source else "it has no token")
            raise SynthgenError(f"the Ray cluster at {address} uses token authentication and refused this "
                                f"driver ({why}); {TOKEN_FIX}") from None
        except ray.exceptions.RayError as err:
            raise SynthgenError(f"cannot connect to the Ray cluster at {address} ({first_line(err)}); "
                                f"check the address printed by `ray start --head`") from None


@contextmanager
def _stderr_held() -> Iterator[None]:
    """Hold what is written to file descriptor 2 in the block (Ray's C++ logs go there) and write
    it out afterwards, unless a SynthgenError, which says what went wrong in one line, leaves it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except SynthgenError:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                sink.seek(0)
                os.write(2, sink.read())
