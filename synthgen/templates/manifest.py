"""The bank manifest: the group attribute that commits parts, indexes templates and
fingerprints the bank (layout in ``synthgen.templates.layout``)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any

from synthgen.errors import SynthgenError
from synthgen.store.objects import ObjectStore
from synthgen.templates.layout import ATTRIBUTE_KEY, FORMAT_VERSION, PARTS_DIR
from synthgen.templates.parts import PartRecord


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Everything readers trust about a bank.

    Attributes:
        source: "totalsegmentator", "label-maps", "totalsegmentator+label-maps" (combined) or
            "procedural".
        spacing: the common isotropic voxel size in mm the templates were resampled to, or
            None where each subject keeps its native spacing (per record).
        options: the build options (everything that decides the templates' content).
        records: committed subjects, sorted by subject id; template ids follow this order.
    """

    source: str
    spacing: float | None
    options: dict[str, Any]
    records: tuple[PartRecord, ...]

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the index and the parts' checksums: equal fingerprints mean equal
        templates in equal order. Independent of build timing and worker count."""
        body = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()

    def _content(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "source": self.source, "spacing": self.spacing,
                "records": [r.to_json() for r in self.records]}

    def to_json(self) -> dict[str, Any]:
        return {**self._content(), "options": self.options, "fingerprint": self.fingerprint,
                "templates": sum(len(r.names) for r in self.records)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Manifest":
        return cls(source=data["source"], spacing=data["spacing"], options=data["options"],
                   records=tuple(PartRecord.from_json(r) for r in data["records"]))

    def with_records(self, records: list[PartRecord]) -> "Manifest":
        """This manifest with ``records`` added (a record replaces one of the same subject)."""
        merged = {r.subject: r for r in self.records}
        merged.update({r.subject: r for r in records})
        return dataclasses.replace(self, records=tuple(merged[s] for s in sorted(merged)))


def read_manifest(objects: ObjectStore) -> Manifest | None:
    """The manifest of the bank at ``objects``' root; None if there is no synthgen template bank.

    Raises:
        SynthgenError: the bank was written by a newer format version, or its manifest is damaged.
    """
    try:
        attributes = json.loads(objects.read("zarr.json")).get("attributes", {})
        data = attributes[ATTRIBUTE_KEY]
        version = int(data["format_version"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if version > FORMAT_VERSION:
        raise SynthgenError(f"{objects.root} is a template bank of format {version}, newer than this "
                            f"synthgen reads ({FORMAT_VERSION}); upgrade synthgen")
    try:
        manifest = Manifest.from_json(data)
        damage = None if manifest.fingerprint == data["fingerprint"] else "its fingerprint does not match it"
    except (ValueError, KeyError, TypeError) as err:
        damage = repr(err)
    if damage:
        raise SynthgenError(f"{objects.root} has a damaged template-bank manifest ({damage}); rebuild the bank "
                            f"into a new folder")
    return manifest


def write_manifest(objects: ObjectStore, manifest: Manifest) -> None:
    """Commit ``manifest`` as the root group's zarr.json, atomically (readers see the old
    manifest or the new one, never a mix)."""
    group = {"zarr_format": 3, "node_type": "group", "attributes": {ATTRIBUTE_KEY: manifest.to_json()}}
    objects.write_atomic("zarr.json", json.dumps(group, separators=(",", ":")).encode())


def create_bank(objects: ObjectStore, manifest: Manifest) -> None:
    """Make the bank skeleton at ``objects``' root: the manifest (first, so a folder with
    anything in it is recognisably a bank) and the empty ``parts`` group, if missing."""
    if not objects.exists("zarr.json"):
        write_manifest(objects, manifest)
    if not objects.exists(f"{PARTS_DIR}/zarr.json"):
        group = {"zarr_format": 3, "node_type": "group", "attributes": {}}
        objects.write_atomic(f"{PARTS_DIR}/zarr.json", json.dumps(group).encode())
