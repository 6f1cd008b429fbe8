"""The default template bank: the procedural shapes of ``synthgen.templates.procedural``,
built by the package on first use and cached per user.

The cache is ``$XDG_CACHE_HOME/synthgen/templates/default-g<GENERATOR_VERSION>-f<FORMAT_VERSION>.zarr``
(``~/.cache`` without XDG_CACHE_HOME). A process that finds it missing builds the bank into a
private temporary folder beside it and renames that into place; a rename is atomic, so
concurrent first builds (several Ray workers on one machine) are safe: the first rename wins and
the others discard their copy and open the winner's, which has the same bytes.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from synthgen.errors import SynthgenError
from synthgen.store.objects import ObjectStore
from synthgen.templates.bank import TemplateBank, open_bank
from synthgen.templates.layout import FORMAT_VERSION
from synthgen.templates.manifest import Manifest, create_bank
from synthgen.templates.parts import write_part
from synthgen.templates.procedural import FAMILIES, GENERATOR_VERSION, SEED, family_masks

SPACING = 1.5  # mm: the procedural shapes are sized as TotalSegmentator organs at this spacing


DEFAULT_BANK_NAME = "default"


def resolve_bank(name: str, fingerprint: str | None = None) -> TemplateBank:
    """``"default"`` -> the built-in procedural bank; anything else -> ``open_bank(name)``.
    A recorded ``fingerprint`` that differs from the bank's is refused (SynthgenError)."""
    if name != DEFAULT_BANK_NAME:
        return open_bank(name, fingerprint)
    bank = default_bank()
    if fingerprint is not None and bank.fingerprint != fingerprint:
        raise SynthgenError("the built-in default template bank differs from the one this dataset was "
                            "made with (another synthgen version?); regenerate the dataset")
    return bank


def default_bank_path() -> str:
    """Where the default bank is cached (see module doc)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "synthgen", "templates", f"default-g{GENERATOR_VERSION}-f{FORMAT_VERSION}.zarr")


def default_bank() -> TemplateBank:
    """The procedural default bank (312 templates in six shape families at 1.5 mm), built and
    cached on first use in a few seconds; the same bytes on every build.

    Raises:
        SynthgenError: the cache folder cannot be written.
    """
    path = default_bank_path()
    if not os.path.isdir(path):
        _build_cached(path)
    return open_bank(path)


def _build_cached(path: str) -> None:
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".building-", dir=parent)
    except OSError as err:
        raise SynthgenError(f"cannot write the default template bank under {parent} ({err.strerror or err}); "
                            f"set XDG_CACHE_HOME to a writable folder") from err
    try:
        write_default_bank(staging)
        os.rename(staging, path)
    except OSError as err:
        if not os.path.isdir(path):  # not a lost race: a real failure
            raise SynthgenError(f"cannot write the default template bank to {path} ({err.strerror or err}); "
                                f"set XDG_CACHE_HOME to a writable folder") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_default_bank(out: str) -> None:
    """Write the procedural bank to the empty or new folder ``out``: one part per family, each
    template named by its family."""
    spacing = (SPACING,) * 3
    records = [write_part(out, family, [(family, m) for m in family_masks(family)], spacing, {})
               for family in FAMILIES]
    options = {"generator_version": GENERATOR_VERSION, "seed": SEED, "spacing": SPACING,
               "families": {name: count for name, (_, count) in FAMILIES.items()}}
    manifest = Manifest(source="procedural", spacing=SPACING, options=options, records=())
    create_bank(ObjectStore(out), manifest.with_records(records))
