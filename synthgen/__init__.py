"""synthgen: unlimited labelled synthetic 3D volumes, stored as Zarr v3 shards."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("synthgen")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"


def open_dataset(path: str):  # noqa: ANN201 - lazy import keeps `import synthgen` light
    """Open a synthgen dataset for reading; see ``synthgen.store.Dataset``."""
    from synthgen.store import open_dataset as _open

    return _open(path)


__all__ = ["__version__", "open_dataset"]
