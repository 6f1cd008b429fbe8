"""Storage URLs and their errors: read cache prefixes, remote or local, environment failures.

Remote storage is any fsspec URL (``s3://`` through s3fs, ``gs://`` through gcsfs, ...),
configured the standard way of its library (for S3: AWS environment variables or ``~/.aws``,
``AWS_ENDPOINT_URL`` for S3-compatible services; any fsspec option also through
``FSSPEC_<PROTOCOL>_<OPTION>`` environment variables). Failures of the environment (no
credentials, endpoint unreachable, access denied, missing bucket, library not installed) become
one-line :class:`SynthgenError` messages.

A URL prefixed with ``simplecache::`` or ``filecache::`` (fsspec's chained-URL syntax, e.g.
``filecache::s3://bucket/x.zarr``) reads through a local cache (see ``synthgen.store.cache``).
Cache URLs are read-only: writes are refused with a SynthgenError naming the plain URL to write
to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from synthgen.errors import SynthgenError, first_line

CACHE_PROTOCOLS = ("simplecache", "filecache")
UNSUPPORTED_CACHE_PROTOCOLS = ("blockcache", "cached")
INSTALL_HINT = "pip install 'synthgen[remote]' (s3fs for s3://, gcsfs for gs://)"


def split_cache_url(url: str) -> tuple[str | None, str]:
    """``"filecache::s3://b/x.zarr"`` -> ``("filecache", "s3://b/x.zarr")``; a URL without a
    cache prefix -> ``(None, url)``."""
    text = str(url)
    head, sep, rest = text.partition("::")
    if not sep:
        return None, text
    if head in UNSUPPORTED_CACHE_PROTOCOLS:
        raise SynthgenError(
            f"{text}: the {head}:: cache is not supported for synthgen datasets; use "
            f"simplecache::{rest} (cache for this process) or filecache::{rest} (kept across runs)")
    if head in CACHE_PROTOCOLS:
        if rest.partition("::")[0] in CACHE_PROTOCOLS + UNSUPPORTED_CACHE_PROTOCOLS:
            raise SynthgenError(f"{text}: give one cache prefix, not several")
        return head, rest
    return None, text


def is_remote_url(path: str) -> bool:
    """True for anything fsspec must resolve (a URL or a chained URL), False for a plain path."""
    return "://" in str(path) or "::" in str(path)


def environment_error(url: str, err: BaseException, writing: bool = False) -> SynthgenError | None:
    """A one-line SynthgenError for an error of the storage environment (missing library,
    credentials, endpoint, permissions, bucket), or None for anything else."""
    names = {cls.__name__ for cls in type(err).__mro__}
    if isinstance(err, ImportError):
        return SynthgenError(f"cannot open {url}: {first_line(err)}; {INSTALL_HINT}")
    if any("Credentials" in name for name in names) or "DefaultCredentialsError" in names:
        return SynthgenError(
            f"no credentials for {url} ({first_line(err)}); for S3 set AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / ~/.aws/credentials), for GCS run "
            f"`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS")
    if isinstance(err, PermissionError):
        return SynthgenError(
            f"access to {url} was denied ({first_line(err)}); check the credentials and the "
            f"bucket's permissions")
    if (names & {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                 "ClientConnectorError", "ServerDisconnectedError", "ConnectionClosedError"}
            or isinstance(err, (ConnectionError, TimeoutError))):
        return SynthgenError(
            f"cannot reach the storage service for {url} ({first_line(err)}); check the network "
            f"and AWS_ENDPOINT_URL (S3-compatible services)")
    if writing and isinstance(err, FileNotFoundError):
        return SynthgenError(
            f"cannot write to {url} ({first_line(err)}); create the bucket first "
            f"(e.g. `aws s3 mb s3://BUCKET`)")
    return None


@contextlib.contextmanager
def translated_errors(url: str, writing: bool = False) -> Iterator[None]:
    """Re-raise environment errors (see :func:`environment_error`) as one-line SynthgenErrors."""
    try:
        yield
    except SynthgenError:
        raise
    except Exception as err:
        translated = environment_error(url, err, writing=writing)
        if translated is None:
            raise
        raise translated from err


def refuse_cache_write(url: str) -> SynthgenError:
    _, remote = split_cache_url(url)
    return SynthgenError(
        f"{url} reads through a local cache and cannot be written; write to {remote} "
        f"(without the cache prefix) and read through the cache URL")
