"""Store rows -> one FHIR R4 ``transaction`` Bundle central can POST as it is (pure: no I/O).

The shape (``mmu.readings/3``), decided here and documented in docs/wire-format.md:

- ``Bundle``: ``identifier`` (the batch id as ``urn:uuid:``), ``timestamp`` (when the batch was
  formed), ``meta.tag`` naming the schema, the unit and the store epoch; every entry has a
  ``fullUrl`` (``urn:uuid:``) and a ``request``.
- ``Observation``: one per reading, except blood pressure: the systolic, diastolic and mean
  readings of one measurement (same device, encounter and time) become **one** 85354-9 panel
  with 8480-6 / 8462-4 / 8478-0 components (the R4 BP profile). Vital signs carry the
  ``vital-signs`` category and the profile's LOINC first (SpO2: 2708-6 then 59408-5), lab
  results ``laboratory`` with the LOINC of the unit's property (mmol/L: the molar code), body
  composition ``exam``. Codes: LOINC then MDC; a quantity with neither has ``code.text`` only
  (never an empty ``coding``).
- identifiers: ``urn:mmu:reading|<reading id>`` per reading carried (the business identifier,
  also the conditional-create key), and ``urn:mmu:source|<source record key>`` when the
  device named its record (HL7 MSH-10 + OBX). The unit's sequence numbers (central's
  bookkeeping, no business of a FHIR server) are one ``meta.tag`` of the Bundle
  (``urn:mmu:seqs``, runs such as ``1-150,152-200``) in the order of the reading identifiers:
  one per reading would cost 5 bytes a reading on the wire.
- ``fullUrl`` (``urn:uuid:``) on every entry something refers to (Patient, Device, Location,
  Encounter) and on updates; none on an Observation create (R4 allows it on a POST, and the
  reading id repeated once more costs 6 bytes a reading).
- ``subject``: the Patient of the reading's encounter, or, with no encounter, the
  *unidentified Patient* of its session (identifier ``urn:mmu:unidentified-patient:<unit>|
  <local day>``, name use ``anonymous``: no person is invented; the vital-signs profile needs
  a Patient subject). A later ``patient assign`` re-sends the reading as a conditional update
  (``PUT Observation?identifier=urn:mmu:reading|<id>``) with the real Patient and Encounter.
  A quality-control reading (flag ``control``) is nobody's: its subject is the Device.
- ``status`` from the device (HL7 OBX-11 F/P/C/X/..., BLE flags), ``final`` when it said
  nothing; ``dataAbsentReason`` when there is no value.
- ``note``: the device's comments (HL7 NTE, ASTM C); ``referenceRange``: the range it printed
  (HL7 OBX-7, ASTM R-5) as text, with low/high in the reading's unit when they read as
  numbers (a BP panel: on its components). :mod:`sync.fhir_notes`.
- ``effectiveDateTime`` always has a zone: a device time without one is read in the unit's
  time zone (``[unit] timezone``, default Africa/Casablanca); the raw device time is kept in
  the device-time extension (``EXT_DEVICE_TIME``) whenever it was not used as it is.
  ``issued`` (the reception time) only when the device time was used.
- GPS readings (latitude/longitude/altitude) become ``Location`` resources (``position``),
  one per fix; an encounter's place is a Location too.
- ``Device``: its first identifier is always the unit's name for it
  (``urn:mmu:device:<unit>|<configured id>``: the conditional-update key, central's key); then
  what the device told us (the store's ``device_facts``): its serial number (type ``SNO`` of
  HL7 v2 table 0203, no system: the PHD IG's rule), its IEEE EUI-64 system id
  (``urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680``), its Bluetooth address
  (``http://hl7.org/fhir/sid/eui-48/bluetooth``, from the configuration); ``manufacturer``,
  ``modelNumber``, ``serialNumber``, ``version`` (firmware: MDC_ID_PROD_SPEC_FW 531976) when it
  said them; ``type``: the IEEE 11073-10101 device specialization of its kind
  (MDC_DEV_SPEC_PROFILE_*) when one fits. Nothing it did not say is sent (no empty values).
  The facts travel (``PUT``) until central acknowledged a batch carrying that version of them;
  then batches carry the bare Device (its first identifier) as a conditional create, until
  the facts change (or central asks for a resend: they travel again).
- ``Observation.device`` beside a Patient subject (a QC reading has the Device as its
  subject already). Vital signs whose first LOINC is their profile's carry no MDC
  coding (the LOINC says it exactly; other readings keep LOINC then MDC).
- A device with a known clock offset (the technician's ``clock_offset``: how far its clock is
  ahead, recorded with the reading at ingest as context ``clock-offset``) has it subtracted
  from its time; the raw device time is then kept in the device-time extension.
- Patient and Location: ``POST`` with ``ifNoneExist`` on their identifier; Encounter and
  Device: conditional update (``PUT <type>?identifier=...``: an Encounter goes from in-progress
  to finished, a Device gains what it tells later); Observations: ``POST`` with
  ``ifNoneExist``. Replaying a batch into a FHIR server creates nothing twice.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sync.fhir_notes import notes, reference_range

SCHEMA: Final = "mmu.readings/3"
DEFAULT_TIMEZONE: Final = "Africa/Casablanca"
LOINC: Final = "http://loinc.org"
MDC: Final = "urn:iso:std:iso:11073:10101"
UCUM: Final = "http://unitsofmeasure.org"
CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
ABSENT: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
URI: Final = "urn:ietf:rfc:3986"
TAG_SCHEMA: Final = "urn:mmu:schema"
TAG_UNIT: Final = "urn:mmu:unit"
TAG_EPOCH: Final = "urn:mmu:epoch"
READING_SYSTEM: Final = "urn:mmu:reading"
TAG_SEQS: Final = "urn:mmu:seqs"  # the readings' seqs, in order: "1-150,152-200"
SOURCE_SYSTEM: Final = "urn:mmu:source"
ENCOUNTER_SYSTEM: Final = "urn:mmu:encounter"
LOCATION_SYSTEM: Final = "urn:mmu:location"
DEVICE_SYSTEM: Final = "urn:mmu:device"  # + ":<unit>": the device's name on the unit
# + ":<unit>" | <local day>: the unidentified Patient of readings taken with no patient open
UNIDENTIFIED_SYSTEM: Final = "urn:mmu:unidentified-patient"
# The project's own extensions: canonical URLs, their StructureDefinitions shipped in
# sync/fhir_profiles/ (no standard extension says these). Units not yet updated send the old
# ``urn:mmu:fhir:*`` URLs: central reads both (LEGACY_EXT_DEVICE_TIME).
PROFILES: Final = "https://edge-agent.example.org/fhir/StructureDefinition/"
EXT_FLAGS: Final = PROFILES + "flags"
EXT_DEVICE_TIME: Final = PROFILES + "device-time"
EXT_CLOCK: Final = PROFILES + "clock-source"
EXT_SHA256: Final = PROFILES + "sha256"  # teleconsultation files (central)
EXT_FILE: Final = PROFILES + "file"
LEGACY_EXT_DEVICE_TIME: Final = "urn:mmu:fhir:device-time"
ID_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"  # SNO: serial number
EUI64_SYSTEM: Final = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"  # IEEE EUI-64 system id
BLUETOOTH_SYSTEM: Final = "http://hl7.org/fhir/sid/eui-48/bluetooth"
MDC_FIRMWARE: Final = "531976"  # MDC_ID_PROD_SPEC_FW: Device.version.type of the firmware
CONTEXT_CLOCK_OFFSET: Final = "clock-offset"  # seconds the device's clock was ahead at ingest
NS: Final = uuid.UUID("0c6b3f4e-54a1-4c55-8f0e-6f1de5b2a7d3")  # fullUrls of derived resources

# The R4 vital-signs profiles: quantity -> the profile's LOINC (listed first in code.coding).
VITAL_SIGNS: Final[Mapping[str, str]] = {
    "spo2": "2708-6",
    "pulse_rate": "8867-4",
    "heart_rate": "8867-4",
    "respiratory_rate": "9279-1",
    "body_temperature": "8310-5",
    "body_weight": "29463-7",
    "body_height": "8302-2",
    "bmi": "39156-5",
    "mean_arterial_pressure": "8478-0",
}
BP_PANEL: Final = "85354-9"
BP_PARTS: Final[Mapping[str, str]] = {
    "systolic_bp": "8480-6",
    "diastolic_bp": "8462-4",
    "mean_arterial_pressure": "8478-0",
}
# Exam: no vital-signs profile fits (a cuff pressure has no LOINC: MDC only).
EXAM: Final = frozenset(
    {
        "cuff_pressure",
        "body_fat_percentage",
        "pulse_amplitude_index",
        "rr_interval",
        "energy_expended",
        "basal_metabolism",
        "muscle_percentage",
        "muscle_mass",
        "fat_free_mass",
        "soft_lean_mass",
        "body_water_mass",
        "body_impedance",
    }
)
POSITION: Final = ("latitude", "longitude", "altitude")
# Mass-concentration LOINC -> the molar one, for results a device gave in mmol/L.
MOLAR_LOINC: Final[Mapping[str, str]] = {
    "41653-7": "14743-9",
    "2339-0": "15074-8",
    "2345-7": "14749-6",
    "2093-3": "14647-2",
    "2085-9": "14646-4",
    "2571-8": "14927-8",
    "13457-7": "39469-2",
    "718-7": "59260-0",
}
# HL7 v2 table 0085 (OBX-11) -> Observation.status.
OBX_STATUS: Final[Mapping[str, str]] = {
    "F": "final",
    "U": "final",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "C": "corrected",
    "X": "cancelled",
    "N": "cancelled",
    "D": "entered-in-error",
    "W": "entered-in-error",
    "I": "registered",
    "O": "registered",
}
FLAG_STATUS: Final[Mapping[str, str]] = {"preliminary": "preliminary", "corrected": "corrected"}


def category(quantity: str) -> str | None:
    """The observation-category code; None for the van's position (not an Observation)."""
    if quantity in POSITION:
        return None
    if quantity in VITAL_SIGNS or quantity in BP_PARTS:
        return "vital-signs"
    return "exam" if quantity in EXAM else "laboratory"


def stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(NS, "\x1f".join(parts)))


def unidentified_session(received_at: str, tz: ZoneInfo) -> str:
    """The session of a reading taken with no patient open: the unit's local day of its
    reception (``YYYY-MM-DD``)."""
    try:
        when = datetime.fromisoformat(received_at.replace("Z", "+00:00"))
    except ValueError:
        return received_at[:10]
    return (when.astimezone(tz) if when.tzinfo else when).date().isoformat()


def has_zone(stamp: str) -> bool:
    return stamp.endswith("Z") or (len(stamp) > 6 and stamp[-6] in "+-" and stamp[-3] == ":")


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or DEFAULT_TIMEZONE)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_TIMEZONE)


def effective(
    device_time: str | None, received_at: str, tz: ZoneInfo, offset: float = 0.0
) -> tuple[str, bool]:
    """(effectiveDateTime, whether the device time was used). A time without a zone is read
    in ``tz``; ``offset``: seconds the device's clock is ahead of true time, subtracted."""
    if not device_time:
        return received_at, False
    if has_zone(device_time) and not offset:
        return device_time, True
    try:
        when = datetime.fromisoformat(device_time.replace("Z", "+00:00"))
    except ValueError:
        return received_at, False
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    if offset:
        # Wall-clock arithmetic in UTC, then back to the zone (a DST change in between).
        when = (when - timedelta(seconds=offset)).astimezone(when.tzinfo)
    return when.isoformat(), True


def clock_offset(row: Mapping[str, Any]) -> float:
    """The device clock offset recorded with the reading at ingest (0: none known)."""
    try:
        offset = float(_context(row).get(CONTEXT_CLOCK_OFFSET, 0))
    except ValueError:
        return 0.0
    return offset if abs(offset) < 1e9 else 0.0  # finite, and a date stays a date


# The store's JSON columns repeat a few texts ("[]", '["alert"]', a device's facts): each text
# is parsed once, not once per reading. The parsed values are shared: never mutate them.
@functools.lru_cache(maxsize=1024)
def _parsed_context(raw: str) -> Mapping[str, str]:
    return _context_pairs(json.loads(raw))


def _context_pairs(pairs: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in pairs or []}


def _context(row: Mapping[str, Any]) -> Mapping[str, str]:
    raw = row.get("context")
    try:
        return _parsed_context(raw) if isinstance(raw, str) else _context_pairs(raw)
    except (ValueError, TypeError):
        return {}


@functools.lru_cache(maxsize=256)
def _parsed_flags(raw: str) -> tuple[str, ...]:
    return _unique_flags(json.loads(raw))


def _unique_flags(flags: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(f) for f in flags or []))


def _flags(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The reading's flags, each once, in order."""
    raw = row.get("flags")
    return _parsed_flags(raw) if isinstance(raw, str) else _unique_flags(raw)


def status(row: Mapping[str, Any]) -> str:
    said = _context(row).get("result-status", "")
    if said[:1] in OBX_STATUS:
        return OBX_STATUS[said[:1]]
    for flag in _flags(row):
        if flag in FLAG_STATUS:
            return FLAG_STATUS[flag]
    return "final"


def codings(row: Mapping[str, Any]) -> list[dict[str, str]]:
    return [
        {"system": system, "code": code}
        for system, code in _codes(
            row["quantity"], row.get("loinc"), row.get("unit"), row.get("mdc")
        )
    ]


@functools.lru_cache(maxsize=512, typed=True)
def _codes(
    quantity: str, loinc: str | None, unit: str | None, mdc: Any
) -> tuple[tuple[str, str], ...]:
    """(system, code) of a quantity's codings, worked out once per quantity and unit."""
    out: list[tuple[str, str]] = []
    profile = VITAL_SIGNS.get(quantity) or BP_PARTS.get(quantity)
    if loinc and unit == "mmol/L":
        loinc = MOLAR_LOINC.get(loinc, loinc)
    for code in dict.fromkeys(c for c in (profile, loinc) if c):
        out.append((LOINC, code))
    if mdc is not None and not profile:  # a profile's LOINC says it exactly
        out.append((MDC, str(mdc)))
    return tuple(out)


def _code(row: Mapping[str, Any]) -> dict[str, Any]:
    found = codings(row)
    return {"coding": found} if found else {"text": str(row["quantity"])}


def _code_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """What decides :func:`_code`: readings with the same key have equal codes."""
    return (
        "code",
        row["quantity"],
        _codes(row["quantity"], row.get("loinc"), row.get("unit"), row.get("mdc")),
    )


def _value(row: Mapping[str, Any], into: dict[str, Any]) -> None:
    if row.get("value") is not None:
        into["valueQuantity"] = {
            "value": row["value"],
            "unit": row["unit"],
            "system": UCUM,
            "code": row["unit"],
        }
    else:
        into["dataAbsentReason"] = {
            "coding": [{"system": ABSENT, "code": row.get("absent_reason") or "unknown"}]
        }


def _identifiers(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    out = [{"system": READING_SYSTEM, "value": str(row["id"])} for row in rows]
    for row in rows:
        if row.get("source_key"):
            out.append({"system": SOURCE_SYSTEM, "value": str(row["source_key"])})
    return out


def seq_runs(seqs: Sequence[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3,7,9-10"`` (the order kept)."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def parse_seq_runs(text: str) -> list[int]:
    """The inverse of :func:`seq_runs`; ValueError when malformed or absurdly long."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        a, b = _seq_int(low), _seq_int(high or low)
        if b < a or len(out) + b - a > 1_000_000:
            raise ValueError(f"bad seq run {part!r}")
        out.extend(range(a, b + 1))
    return out


def _seq_int(text: str) -> int:
    # isascii: str.isdigit() accepts "²", which int() refuses
    if not (text.isascii() and text.isdigit() and len(text) < 19):
        raise ValueError(f"bad seq {text!r}")
    return int(text)


def _encounter(row: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = row.get("encounter")
    if not row.get("encounter_id") or not raw:
        return None
    info = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return info if info.get("patient_value") else None


Shape = tuple[Any, ...]  # what decides a lone reading's Observation but its leaves (hashable)
Leaves = tuple[str, str | None, Any, Any, Any, str | None]


class _Builder:
    def __init__(self, unit: str, epoch: str, tz: ZoneInfo) -> None:
        self.unit, self.epoch, self.tz = unit, epoch, tz
        self.seqs: list[int] = []  # in the order of the reading identifiers
        self.head: dict[str, dict[str, Any]] = {}  # fullUrl -> entry (patients, devices...)
        self.entries: list[dict[str, Any]] = []
        # Once per batch, not per reading: each device's fullUrl, each encounter's JSON
        # parsed (patient data: kept for this batch only, never in a module-level cache).
        self._device_urls: dict[str, str] = {}
        self._encounters: dict[str, dict[str, Any] | None] = {}
        # Fragments equal for many readings (a quantity's category and code, a reference, a
        # flags or clock extension) are built once per batch and shared by its resources:
        # the Bundle is for serializing; treat it as read-only.
        self.shared: dict[tuple[Any, ...], Any] = {}

    def _ref(self, url: str) -> dict[str, str]:
        key = ("ref", url)
        found = self.shared.get(key)
        if found is None:
            found = self.shared[key] = {"reference": url}
        return found

    def encounter_of(self, row: Mapping[str, Any]) -> dict[str, Any] | None:
        raw = row.get("encounter")
        if not isinstance(raw, str) or not row.get("encounter_id"):
            return _encounter(row)
        if raw not in self._encounters:
            self._encounters[raw] = _encounter(row)
        return self._encounters[raw]

    def _put_head(self, full: str, entry: dict[str, Any]) -> None:
        self.head.setdefault(full, entry)

    def device(self, device_id: str, facts: Mapping[str, Any]) -> str:
        full = self._device_urls.get(device_id)
        if full is None:
            full = "urn:uuid:" + stable_uuid("device", self.unit, device_id)
            self._device_urls[device_id] = full
        if full not in self.head:
            system = f"{DEVICE_SYSTEM}:{self.unit}"
            if facts_held(facts):  # central has them: the bare Device, created if missing
                self.head[full] = {
                    "fullUrl": full,
                    "resource": {
                        "resourceType": "Device",
                        "identifier": [{"system": system, "value": device_id}],
                    },
                    "request": _create("Device", system, device_id),
                }
            else:
                self.head[full] = {
                    "fullUrl": full,
                    "resource": device_resource(system, device_id, facts),
                    "request": {"method": "PUT", "url": f"Device?identifier={system}|{device_id}"},
                }
        return full

    def unidentified(self, row: Mapping[str, Any]) -> str:
        """The fullUrl of the unidentified Patient of the reading's session: the readings of
        one unit and local day taken with no patient open."""
        day = unidentified_session(str(row["received_at"]), self.tz)
        system = f"{UNIDENTIFIED_SYSTEM}:{self.unit}"
        full = "urn:uuid:" + stable_uuid("patient", system, day)
        self._put_head(
            full,
            {
                "fullUrl": full,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": system, "value": day}],
                    "name": [{"use": "anonymous", "text": "unidentified"}],
                },
                "request": _create("Patient", system, day),
            },
        )
        return full

    def encounter(self, encounter_id: str, info: Mapping[str, Any]) -> tuple[str, str]:
        """(Patient fullUrl, Encounter fullUrl)."""
        system, value = str(info["patient_system"]), str(info["patient_value"])
        patient = "urn:uuid:" + stable_uuid("patient", system, value)
        self._put_head(
            patient,
            {
                "fullUrl": patient,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": system, "value": value}],
                },
                "request": _create("Patient", system, value),
            },
        )
        full = "urn:uuid:" + encounter_id
        period: dict[str, str] = {"start": str(info["opened_at"])}
        if info.get("closed_at"):
            period["end"] = str(info["closed_at"])
        resource: dict[str, Any] = {
            "resourceType": "Encounter",
            "identifier": [{"system": ENCOUNTER_SYSTEM, "value": encounter_id}],
            "status": "finished" if info.get("closed_at") else "in-progress",
            "class": {"system": ACT_CODE, "code": "FLD", "display": "field"},
            "subject": {"reference": patient},
            "period": period,
            "serviceProvider": {
                "identifier": {"system": TAG_UNIT, "value": self.unit},
                "display": self.unit,
            },
        }
        if info.get("practitioner_role"):
            resource["participant"] = [{"type": [{"text": str(info["practitioner_role"])}]}]
        if info.get("latitude") is not None and info.get("longitude") is not None:
            place = "urn:uuid:" + stable_uuid("location", encounter_id)
            position = {"latitude": info["latitude"], "longitude": info["longitude"]}
            if info.get("altitude") is not None:
                position["altitude"] = info["altitude"]
            self._put_head(
                place,
                {
                    "fullUrl": place,
                    "resource": {
                        "resourceType": "Location",
                        "identifier": [{"system": LOCATION_SYSTEM, "value": encounter_id}],
                        "status": "active",
                        "mode": "instance",
                        "position": position,
                    },
                    "request": _create("Location", LOCATION_SYSTEM, encounter_id),
                },
            )
            resource["location"] = [{"location": {"reference": place}}]
        self._put_head(
            full,
            {
                "fullUrl": full,
                "resource": resource,
                "request": {
                    "method": "PUT",
                    "url": f"Encounter?identifier={ENCOUNTER_SYSTEM}|{encounter_id}",
                },
            },
        )
        return patient, full

    def observation(self, rows: Sequence[Mapping[str, Any]]) -> None:
        first = rows[0]
        if (
            len(rows) == 1
            and first["quantity"] not in ("systolic_bp", "diastolic_bp")
            and not notes(rows)
            and not reference_range(first)
        ):
            # the common reading, built from its shape (plan, single); one with comments or a
            # reference range (HL7 NTE, OBX-7) is built in full below
            self.entries.append(self.single(*self.plan(first)))
            return
        device = self.device(str(first["device_id"]), device_facts(first))
        info = self.encounter_of(first)
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": _identifiers(rows),
            "status": status(first),
        }
        cat = category(first["quantity"]) or "laboratory"
        found_cat = self.shared.get(("category", cat))
        if found_cat is None:
            found_cat = self.shared[("category", cat)] = [
                {"coding": [{"system": CATEGORY, "code": cat}]}
            ]
        obs["category"] = found_cat
        if len(rows) > 1 or first["quantity"] in ("systolic_bp", "diastolic_bp"):
            obs["code"] = {"coding": [{"system": LOINC, "code": BP_PANEL}]}
            # The measurement's parts in the order of their readings (so the k-th reading
            # identifier is the k-th component), then a missing systolic/diastolic as absent.
            components = []
            for part in [r["quantity"] for r in rows] + [
                p for p in ("systolic_bp", "diastolic_bp") if p not in {r["quantity"] for r in rows}
            ]:
                found = next((r for r in rows if r["quantity"] == part), None)
                component: dict[str, Any] = {
                    "code": {"coding": codings(found or {"quantity": part})}
                }
                _value(found or {"absent_reason": "unknown"}, component)
                ranges = reference_range(found or {})
                if ranges:
                    component["referenceRange"] = ranges
                components.append(component)
            obs["component"] = components
            if all(r.get("value") is None for r in rows):
                obs["dataAbsentReason"] = {"coding": [{"system": ABSENT, "code": "unknown"}]}
        else:
            obs["code"] = _code(first)
        if info is not None:
            patient, encounter = self.encounter(str(first["encounter_id"]), info)
            obs["subject"] = self._ref(patient)
            obs["encounter"] = self._ref(encounter)
            obs["device"] = self._ref(device)
        elif "control" in _flags(first):  # a QC run is nobody's: the Device is its subject
            obs["subject"] = self._ref(device)
        else:  # nobody opened: the session's unidentified Patient (never a made-up person)
            obs["subject"] = self._ref(self.unidentified(first))
            obs["device"] = self._ref(device)
        offset = clock_offset(first)
        when, used = effective(first.get("device_time"), str(first["received_at"]), self.tz, offset)
        obs["effectiveDateTime"] = when
        if used:
            obs["issued"] = first["received_at"]
        if len(rows) == 1 and "component" not in obs:
            _value(first, obs)
            ranges = reference_range(first)
            if ranges:
                obs["referenceRange"] = ranges
        comments = notes(rows)
        if comments:
            obs["note"] = comments
        ext = _extensions(rows, used, offset, self.shared)
        if ext:
            obs["extension"] = ext
        rid = str(first["id"])
        self.seqs.extend(int(r["seq"]) for r in rows)
        if any(r.get("attributed_at") for r in rows):
            self.entries.append(
                {
                    "fullUrl": "urn:uuid:" + rid,
                    "resource": obs,
                    "request": {
                        "method": "PUT",
                        "url": f"Observation?identifier={READING_SYSTEM}|{rid}",
                    },
                }
            )
        else:  # a create: no fullUrl (R4 allows it on a POST; nothing refers to it)
            # request before resource: the reading id's two copies lie closer (zlib: -0.4 B)
            self.entries.append(
                {"request": _create("Observation", READING_SYSTEM, rid), "resource": obs}
            )

    def plan(self, row: Mapping[str, Any]) -> tuple[Shape, Leaves]:
        """A reading that is one Observation alone, as its shape (everything but the leaves:
        its device, patient and encounter, status, codes, which parts it has...) and its leaves
        (reading id, source key, effective and issued times, value, raw device time).
        Readings of one shape differ only in their leaves: :meth:`single` builds the entry."""
        device = self.device(str(row["device_id"]), device_facts(row))
        info = self.encounter_of(row)
        refs = None if info is None else self.encounter(str(row["encounter_id"]), info)
        # nobody opened: the session's unidentified Patient (a QC run is nobody's: its Device)
        anonymous = (
            self.unidentified(row) if info is None and "control" not in _flags(row) else None
        )
        cat = category(row["quantity"]) or "laboratory"
        if ("category", cat) not in self.shared:
            self.shared[("category", cat)] = [{"coding": [{"system": CATEGORY, "code": cat}]}]
        code = _code_key(row)
        if code not in self.shared:
            self.shared[code] = _code(row)
        offset = clock_offset(row)
        when, used = effective(row.get("device_time"), str(row["received_at"]), self.tz, offset)
        source, value, raw = row.get("source_key"), row.get("value"), row.get("device_time")
        # The raw device time, whenever it was not used as it is (no zone, or corrected).
        raw_kept = bool(raw and not (used and has_zone(str(raw)) and not offset))
        clock = row.get("clock_source")
        shape = (
            device,
            refs,
            status(row),
            cat,
            code,
            bool(source),
            used,
            value is not None,
            row["unit"] if value is not None else row.get("absent_reason") or "unknown",
            ",".join(_flags(row)),
            raw_kept,
            str(clock) if clock and clock != "system" else "",
            bool(row.get("attributed_at")),
            anonymous,
        )
        self.seqs.append(int(row["seq"]))
        return shape, (
            str(row["id"]),
            str(source) if source else None,
            when,
            row["received_at"] if used else None,
            value,
            str(raw) if raw_kept else None,
        )

    def single(self, shape: Shape, leaves: Leaves) -> Any:
        """The entry of a reading :meth:`plan` described (as :meth:`observation` builds it)."""
        (
            device,
            refs,
            said,
            cat,
            code,
            sourced,
            used,
            valued,
            unit,
            flags,
            raw_kept,
            clock,
            update,
            anonymous,
        ) = shape
        rid, source, when, issued, value, raw = leaves
        ids: list[dict[str, Any]] = [{"system": READING_SYSTEM, "value": rid}]
        if sourced:
            ids.append({"system": SOURCE_SYSTEM, "value": source})
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "identifier": ids,
            "status": said,
            "category": self.shared[("category", cat)],
            "code": self.shared[code],
        }
        if refs is not None:
            obs["subject"] = self._ref(refs[0])
            obs["encounter"] = self._ref(refs[1])
            obs["device"] = self._ref(device)
        elif anonymous is not None:  # nobody opened: the session's unidentified Patient
            obs["subject"] = self._ref(anonymous)
            obs["device"] = self._ref(device)
        else:  # a QC run: the Device is the subject (Observation.device would say it again)
            obs["subject"] = self._ref(device)
        obs["effectiveDateTime"] = when
        if used:
            obs["issued"] = issued
        if valued:
            obs["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
        else:
            obs["dataAbsentReason"] = {"coding": [{"system": ABSENT, "code": unit}]}
        ext: list[dict[str, Any]] = []
        if flags:
            found = self.shared.get(("flags", flags))
            if found is None:
                found = self.shared[("flags", flags)] = {"url": EXT_FLAGS, "valueString": flags}
            ext.append(found)
        if raw_kept:
            ext.append({"url": EXT_DEVICE_TIME, "valueString": raw})
        if clock:
            found = self.shared.get(("clock", clock))
            if found is None:
                found = self.shared[("clock", clock)] = {"url": EXT_CLOCK, "valueCode": clock}
            ext.append(found)
        if ext:
            obs["extension"] = ext
        if update:
            return {
                "fullUrl": "urn:uuid:" + rid,
                "resource": obs,
                "request": {
                    "method": "PUT",
                    "url": f"Observation?identifier={READING_SYSTEM}|{rid}",
                },
            }
        return {"request": _create("Observation", READING_SYSTEM, rid), "resource": obs}

    def location(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """A GPS fix: its latitude/longitude/altitude readings as one Location."""
        position: dict[str, Any] = {}
        for row in rows:
            if row.get("value") is not None:
                position[row["quantity"]] = row["value"]
        resource: dict[str, Any] = {
            "resourceType": "Location",
            "identifier": _identifiers(rows),
            "status": "active",
            "mode": "instance",
            "physicalType": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/location-physical-type",
                        "code": "ve",
                    }
                ]
            },
        }
        if "latitude" in position and "longitude" in position:
            resource["position"] = position
        else:  # half a fix: say what the device gave, without a position
            resource["description"] = "incomplete GPS fix"
        # A Location has no time of its own: the fix's time goes in the device-time extension
        # (zoned when the receiver gave a zone, else as the device gave it).
        offset = clock_offset(rows[0])
        when, used = effective(
            rows[0].get("device_time"), str(rows[0]["received_at"]), self.tz, offset
        )
        ext = _extensions(rows, used, offset, self.shared)
        if not any(e["url"] == EXT_DEVICE_TIME for e in ext):
            ext.insert(0, {"url": EXT_DEVICE_TIME, "valueString": when})
        resource["extension"] = ext
        self.seqs.extend(int(r["seq"]) for r in rows)
        self.entries.append(
            {
                "resource": resource,
                "request": _create("Location", READING_SYSTEM, str(rows[0]["id"])),
            }
        )


def _extensions(
    rows: Sequence[Mapping[str, Any]],
    used_device_time: bool,
    offset: float = 0.0,
    shared: dict[tuple[Any, ...], Any] | None = None,
) -> list[dict[str, Any]]:
    """The resource's extensions (a new list); ``shared``: the Bundle's fragments, where the
    flags and clock extensions are kept once each."""
    memo: dict[tuple[Any, ...], Any] = {} if shared is None else shared
    ext: list[dict[str, Any]] = []
    if len(rows) == 1:
        flags: Sequence[str] = _flags(rows[0])
    else:
        flags = list(dict.fromkeys(f for r in rows for f in _flags(r)))
    if flags:
        text = ",".join(flags)
        found = memo.get(("flags", text))
        if found is None:
            found = memo[("flags", text)] = {"url": EXT_FLAGS, "valueString": text}
        ext.append(found)
    raw = rows[0].get("device_time")
    # The raw device time, whenever it was not used as it is (no zone, or corrected).
    if raw and not (used_device_time and has_zone(str(raw)) and not offset):
        ext.append({"url": EXT_DEVICE_TIME, "valueString": str(raw)})
    clock = rows[0].get("clock_source")
    if clock and clock != "system":
        found = memo.get(("clock", clock))
        if found is None:
            found = memo[("clock", clock)] = {"url": EXT_CLOCK, "valueCode": str(clock)}
        ext.append(found)
    return ext


def device_facts(row: Mapping[str, Any]) -> Mapping[str, Any]:
    """The reading's device facts (the outbox's ``device_facts`` JSON), the empty ones left
    out."""
    raw = row.get("device_facts")
    try:
        return _parsed_facts(raw) if isinstance(raw, str) else _said(dict(raw or {}))
    except (ValueError, TypeError):
        return {}


@functools.lru_cache(maxsize=256)
def _parsed_facts(raw: str) -> Mapping[str, Any]:
    return _said(json.loads(raw))


def _said(facts: Any) -> dict[str, Any]:
    return (
        {k: v for k, v in facts.items() if v not in (None, "")} if isinstance(facts, dict) else {}
    )


def facts_held(facts: Mapping[str, Any]) -> bool:
    """Central acknowledged a batch carrying this version of the device's facts (the outbox's
    ``version`` / ``acked``): they need not travel again until they change."""
    return bool(facts.get("acked")) and facts.get("acked") == facts.get("version")


def full_device_versions(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """{device: facts version} of the Devices a batch of these rows carries in full (recorded
    with the batch; its ack tells the store central holds them)."""
    out: dict[str, str] = {}
    for row in rows:
        facts = device_facts(row)
        if facts.get("version") and not facts_held(facts):
            out[str(row["device_id"])] = str(facts["version"])
    return out


def device_resource(system: str, device_id: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The FHIR Device: the unit's identifier for it first (the stable key), then what the
    device told us; nothing it did not say."""
    text = {k: str(v).strip() for k, v in facts.items() if v is not None and str(v).strip()}
    ids: list[dict[str, Any]] = [{"system": system, "value": device_id}]
    if "serial" in text:
        ids.append(
            {"type": {"coding": [{"system": ID_TYPE, "code": "SNO"}]}, "value": text["serial"]}
        )
    if "system_id" in text:
        ids.append({"system": EUI64_SYSTEM, "value": text["system_id"]})
    if "mac" in text:
        ids.append({"system": BLUETOOTH_SYSTEM, "value": text["mac"]})
    resource: dict[str, Any] = {"resourceType": "Device", "identifier": ids}
    if "manufacturer" in text:
        resource["manufacturer"] = text["manufacturer"]
    if "serial" in text:
        resource["serialNumber"] = text["serial"]
    if "model" in text:
        resource["modelNumber"] = text["model"]
    resource["deviceName"] = [{"name": device_id, "type": "user-friendly-name"}]
    if "mdc_type" in text:
        resource["type"] = {"coding": [{"system": MDC, "code": text["mdc_type"]}]}
    if "firmware" in text:
        resource["version"] = [
            {"type": {"coding": [{"system": MDC, "code": MDC_FIRMWARE}]}, "value": text["firmware"]}
        ]
    return resource


def _create(kind: str, system: str, value: str) -> dict[str, str]:
    return {"method": "POST", "url": kind, "ifNoneExist": f"identifier={system}|{value}"}


def _group_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        row["device_id"],
        row.get("encounter_id"),
        row.get("device_time") or row["received_at"],
        bool(row.get("attributed_at")),
    )


def group(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Rows in order, grouped into what becomes one resource: ("bp", the systolic/diastolic/
    mean readings of one measurement), ("gps", one fix), ("obs", one reading)."""
    out: list[tuple[str, list[Mapping[str, Any]]]] = []
    open_groups: dict[tuple[str, tuple[Any, ...]], list[Mapping[str, Any]]] = {}
    for row in rows:
        q = row["quantity"]
        kind = "gps" if q in POSITION else "bp" if q in BP_PARTS else "obs"
        if kind == "obs":
            out.append((kind, [row]))
            continue
        key = (kind, _group_key(row))
        members = open_groups.get(key)
        if members is not None and all(m["quantity"] != q for m in members):
            members.append(row)
            continue
        members = [row]
        open_groups[key] = members
        out.append((kind, members))
    # A lone mean arterial pressure is its own Observation (no BP panel without its parts).
    return [
        ("obs", m)
        if k == "bp" and [r["quantity"] for r in m] == ["mean_arterial_pressure"]
        else (k, m)
        for k, m in out
    ]


def bundle(
    unit: str, epoch: str, batch_id: str, rows: Sequence[Mapping[str, Any]], created_at: str
) -> dict[str, Any]:
    build = build_entries(_Builder, unit, epoch, rows)
    return document(
        unit, epoch, batch_id, build.seqs, created_at, [*build.head.values(), *build.entries]
    )


B = TypeVar("B", bound=_Builder)


def build_entries(kind: type[B], unit: str, epoch: str, rows: Sequence[Mapping[str, Any]]) -> B:
    """A builder of ``kind`` that went through the rows (its ``head``, ``entries``, ``seqs``)."""
    tz = zone(next((str(r["timezone"]) for r in rows if r.get("timezone")), None))
    build = kind(unit, epoch, tz)
    for group_kind, members in group(rows):
        if group_kind == "gps":
            build.location(members)
        else:
            build.observation(members)
    return build


def document(
    unit: str, epoch: str, batch_id: str, seqs: Sequence[int], created_at: str, entries: list[Any]
) -> dict[str, Any]:
    """The Bundle around its entries (``entry`` last)."""
    return {
        "resourceType": "Bundle",
        "meta": {
            "tag": [
                {"system": TAG_SCHEMA, "code": SCHEMA},
                {"system": TAG_UNIT, "code": unit},
                {"system": TAG_EPOCH, "code": epoch},
                {"system": TAG_SEQS, "code": seq_runs(seqs)},
            ]
        },
        "identifier": {"system": URI, "value": f"urn:uuid:{batch_id}"},
        "type": "transaction",
        "timestamp": created_at,
        "entry": entries,
    }
