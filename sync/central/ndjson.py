"""What central received, as FHIR Bulk Data NDJSON resources (pure: no I/O).

The receiver keeps each resource as the unit's transaction Bundle carried it: without an
``id``, and referring to the others by their Bundle-local ``urn:uuid:`` fullUrls (stable
uuid5s, :func:`sync.fhir.stable_uuid`). A Bulk Data file holds resources one per line, each
with its ``id``, the references literal (``Patient/<id>``). Here:

- the ``id`` of a Patient, Device, Location or Encounter is the uuid of its fullUrl, derived
  again from its first identifier (:func:`stored_id`), so every ``urn:uuid:X`` reference
  becomes ``Type/X`` (:func:`rewrite`);
- the ``id`` of an Observation (or of a GPS fix's Location) is its first reading id (the
  fullUrl of its conditional update): one resource per BP panel, whichever of its readings
  a row stands for (:func:`first_reading`);
- the files' DocumentReference/Media/ImagingStudy name their Patient and Encounter by
  identifier; when central holds that Patient or Encounter, the literal reference is added
  beside the identifier (:func:`link_logical`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final
from urllib.parse import urlencode

from sync import fhir

FHIR_ID: Final = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
URN_UUID: Final = "urn:uuid:"
# The types an export writes, in the order of the manifest.
TYPES: Final = (
    "Patient",
    "Encounter",
    "Device",
    "Location",
    "Observation",
    "DocumentReference",
    "Media",
    "ImagingStudy",
)


def stored_id(kind: str, key: str) -> str | None:
    """The fullUrl uuid sync/fhir.py gave a resource of ``kind`` whose first identifier is
    ``key`` (``system|value``, the ``resources.identifier`` column); None for another kind."""
    system, _, value = key.partition("|")
    if kind == "Patient":
        return fhir.stable_uuid("patient", system, value)
    if kind == "Device" and system.startswith(fhir.DEVICE_SYSTEM + ":"):
        return fhir.stable_uuid("device", system[len(fhir.DEVICE_SYSTEM) + 1 :], value)
    if kind == "Encounter" and system == fhir.ENCOUNTER_SYSTEM:
        return value
    if kind == "Location" and system == fhir.LOCATION_SYSTEM:
        return fhir.stable_uuid("location", value)
    return None


def reading_ids(resource: Mapping[str, Any]) -> list[str]:
    """The reading ids a resource carries (``urn:mmu:reading`` identifiers), in order."""
    found = resource.get("identifier")
    if not isinstance(found, list):
        return []
    return [
        str(i["value"])
        for i in found
        if isinstance(i, dict)
        and i.get("system") == fhir.READING_SYSTEM
        and i.get("value") is not None
    ]


def first_reading(resource: Mapping[str, Any], row_id: str) -> tuple[str, list[str]]:
    """(the resource's id, the reading ids before ``row_id`` in it). A panel is stored once per
    reading id; the row of the first of its readings the export holds writes it."""
    ids = reading_ids(resource) or [row_id]
    before = ids[: ids.index(row_id)] if row_id in ids else []
    return fhir_id(ids[0]), before


def fhir_id(text: str) -> str:
    """``text`` when it is a valid FHIR id, else a stable uuid of it."""
    return text if FHIR_ID.match(text) else fhir.stable_uuid("id", text)


def _copy(node: Any, visit: Callable[[dict[str, Any]], None]) -> Any:
    """A copy of a JSON tree, ``visit`` called on each object's copy (its children already
    copied); one pass (deepcopy then a walk costs twice)."""
    if isinstance(node, list):
        return [_copy(item, visit) if isinstance(item, dict | list) else item for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: _copy(value, visit) if isinstance(value, dict | list) else value
        for key, value in node.items()
    }
    visit(out)
    return out


def rewrite(
    resource: Mapping[str, Any], kind_of: Callable[[str], str | None]
) -> tuple[dict[str, Any], list[str], int]:
    """A copy of ``resource`` with every ``urn:uuid:X`` reference as ``Type/X`` (``kind_of(X)``
    says the type). Returns (the copy, the ``Type/X`` references it makes, how many could not be
    resolved: their ``reference`` is dropped and a ``display`` says so)."""
    made: list[str] = []
    unresolved = 0

    def visit(out: dict[str, Any]) -> None:
        nonlocal unresolved
        ref = out.get("reference")
        if isinstance(ref, str) and ref.startswith(URN_UUID):
            target = ref[len(URN_UUID) :]
            kind = kind_of(target)
            if kind is None:
                del out["reference"]
                out.setdefault("display", "a resource central does not hold")
                unresolved += 1
            else:
                out["reference"] = f"{kind}/{target}"
                made.append(out["reference"])

    copied: dict[str, Any] = _copy(dict(resource), visit)
    return copied, made, unresolved


def link_logical(
    resource: Mapping[str, Any], kind_of: Callable[[str], str | None]
) -> tuple[dict[str, Any], list[str]]:
    """A copy of a file's resource where each logical reference (``{"type": "Patient",
    "identifier": ...}`` or Encounter) of a resource central holds gets its literal
    ``reference`` too. Returns (the copy, the references added)."""
    made: list[str] = []

    def visit(out: dict[str, Any]) -> None:
        kind, ident = out.get("type"), out.get("identifier")
        if (
            isinstance(kind, str)
            and isinstance(ident, dict)
            and "reference" not in out
            and isinstance(ident.get("system"), str)
            and isinstance(ident.get("value"), str)
        ):
            target = stored_id(kind, f"{ident['system']}|{ident['value']}")
            if target is not None and kind_of(target) == kind:
                out["reference"] = f"{kind}/{target}"
                made.append(out["reference"])

    copied: dict[str, Any] = _copy(dict(resource), visit)
    return copied, made


def finish(resource: dict[str, Any], rid: str, last_updated: str) -> dict[str, Any]:
    """``resource`` with its ``id`` and ``meta.lastUpdated`` (when central stored it)."""
    meta = resource.pop("meta", None)
    kind = resource.pop("resourceType")
    resource.pop("id", None)
    return {
        "resourceType": kind,
        "id": rid,
        "meta": {**(meta if isinstance(meta, dict) else {}), "lastUpdated": last_updated},
        **resource,
    }


def parse_since(text: str) -> str:
    """``--since``: an ISO 8601 time with its zone, or a date (from 00:00 UTC), as the
    receiver stamps ``stored_at`` (UTC, milliseconds, ``Z``) so the text compares as the
    instant. ValueError when it is neither, or a time without a zone."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return stamp(datetime(day.year, day.month, day.day, tzinfo=UTC))
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO 8601 time (2026-11-30T08:00:00Z) or date (2026-11-30)"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no zone: add Z or an offset (+01:00)")
    return stamp(when)


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_url(base_url: str, since: str | None, unit: str | None) -> str:
    """The Bulk Data kick-off request an export answers, as a full URL: ``<base>/$export``
    with ``_outputFormat``, ``_since`` (the export's own ``--since``, as given) and ``unit``
    (the project's parameter: one unit's data)."""
    params = [("_outputFormat", "application/fhir+ndjson")]
    if since:
        params.append(("_since", since))
    if unit:
        params.append(("unit", unit))
    return f"{base_url.rstrip('/')}/$export?{urlencode(params)}"


def manifest(
    transaction_time: str,
    request: str,
    counts: Mapping[str, int],
    extension: Mapping[str, Any],
    base_url: str = "",
) -> dict[str, Any]:
    """The Bulk Data ``$export`` output manifest of an export: ``request`` the full URL of the
    kick-off request (:func:`request_url`), each ``output[].url`` the file's absolute URL
    under ``base_url`` (the export folder as it is served; its name alone when empty)."""
    base = f"{base_url.rstrip('/')}/" if base_url else ""
    return {
        "transactionTime": transaction_time,
        "request": request,
        "requiresAccessToken": False,
        "output": [
            {"type": t, "url": f"{base}{t}.ndjson", "count": counts[t]}
            for t in ordered(counts)
            if counts[t]
        ],
        "error": [],
        "extension": dict(extension),
    }


def ordered(kinds: Iterable[str]) -> list[str]:
    found = set(kinds)
    return [t for t in TYPES if t in found] + sorted(found - set(TYPES))
