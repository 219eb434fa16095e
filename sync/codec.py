"""The wire format: a batch of readings as a FHIR R4 Bundle of Observations, compressed.

Envelope (JSON, then zlib): ``{"schema": "mmu.readings/2", "unit", "epoch", "batch_id",
"seq_from", "seq_to", "created_at", "bundle": <FHIR Bundle>}``. ``epoch`` names the unit's store
(made when the store is created): sequence numbers count within one (unit, epoch), so a unit that
starts over with a new store never reuses the old store's seq 1. ``mmu.readings/1`` (no epoch) is
refused with a :class:`CodecError` that says so. Each Observation follows the FHIR Personal
Health Device IG shape: MDC code (mandatory) plus the LOINC coding, ``valueQuantity`` in UCUM or
``dataAbsentReason``, the device, the reading id and the unit's sequence number as identifiers.
Decoding is strict and bounded (a decompression bomb is refused): anything malformed raises
:class:`CodecError` and nothing else.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

SCHEMA: Final = "mmu.readings/2"
RETIRED_SCHEMAS: Final = frozenset({"mmu.readings/1"})
CONTENT_TYPE: Final = "application/fhir+json; fhirVersion=4.0"
ENCODING: Final = "zlib+dict1"  # zlib with the preset dictionary below, version 1
MAX_DECOMPRESSED: Final = 32 * 1024 * 1024
LOINC: Final = "http://loinc.org"
MDC: Final = "urn:iso:std:iso:11073:10101"
UCUM: Final = "http://unitsofmeasure.org"
SEQ_SYSTEM: Final = "urn:mmu:seq"
EXT_FLAGS: Final = "urn:mmu:fhir:flags"
EXT_DEVICE_TIME: Final = "urn:mmu:fhir:device-time"
EXT_CLOCK: Final = "urn:mmu:fhir:clock-source"
GEOLOCATION: Final = "http://hl7.org/fhir/StructureDefinition/geolocation"
ABSENT: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
EPOCH_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a uuid, in practice


# A preset dictionary primes zlib with the FHIR boilerplate every batch repeats, so a batch of
# one reading (an alert on a flapping 2G link) is small too. Never edit it: add a new version.
# Most frequent strings last (zlib reaches the end of the window with the shortest distances).
# It still says "mmu.readings/1": a dictionary is only a source of likely substrings, and
# mmu.readings/2 envelopes compress with it as well (one byte differs).
ZDICT_V1: Final = (
    b'{"schema":"mmu.readings/1","unit":"mmu-","batch_id":"","seq_from":,"seq_to":,'
    b'"created_at":"2026-","bundle":{"resourceType":"Bundle","type":"collection","entry":['
    b'"dataAbsentReason":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/'
    b'data-absent-reason","code":"unknown"}]},"encounter":{"reference":"Encounter/'
    b'{"url":"urn:mmu:fhir:flags","valueString":"alert"},'
    b'{"url":"urn:mmu:fhir:device-time","valueString":"2026-"},'
    b'{"url":"http://hl7.org/fhir/StructureDefinition/geolocation","extension":['
    b'{"url":"latitude","valueDecimal":},{"url":"longitude","valueDecimal":-}]},'
    b'"mm[Hg]","8480-6","150021","systolic_bp""8462-4","150022","diastolic_bp",'
    b'"Cel","8310-5","150364","body_temperature""kg","29463-7","188736","body_weight",'
    b'"/min","8867-4","149530","pulse_rate""%","59408-5","150456","spo2",'
    b'{"resource":{"resourceType":"Observation","id":"","identifier":[{"system":'
    b'"urn:mmu:seq:mmu-","value":""}],"status":"final","code":{"coding":[{"system":'
    b'"http://loinc.org","code":""},{"system":"urn:iso:std:iso:11073:10101","code":""}],'
    b'"text":""},"effectiveDateTime":"2026-11-T:.Z","issued":"2026-11-T:.Z","device":'
    b'{"identifier":{"value":"oximeter-"}},"valueQuantity":{"value":,"unit":"","system":'
    b'"http://unitsofmeasure.org","code":""},"extension":[{"url":"urn:mmu:fhir:clock-source",'
    b'"valueCode":"system"}]}},'
)


class CodecError(ValueError):
    """A payload that is not a valid batch (bad compression, JSON, schema or field)."""


@dataclass(frozen=True)
class Batch:
    unit: str
    epoch: str
    batch_id: str
    seq_from: int
    seq_to: int
    created_at: str
    observations: list[dict[str, Any]]


def _has_zone(stamp: str | None) -> bool:
    if not stamp or len(stamp) < 7:
        return False
    return stamp.endswith("Z") or (stamp[-6] in "+-" and stamp[-3] == ":")


def observation(unit: str, row: Mapping[str, Any]) -> dict[str, Any]:
    codings: list[dict[str, str]] = []
    if row.get("loinc"):
        codings.append({"system": LOINC, "code": row["loinc"]})
    if row.get("mdc") is not None:
        codings.append({"system": MDC, "code": str(row["mdc"])})
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": row["id"],
        "identifier": [{"system": f"{SEQ_SYSTEM}:{unit}", "value": str(row["seq"])}],
        "status": "final",
        "code": {"coding": codings, "text": row["quantity"]},
        # A device time without a zone cannot be placed on the UTC timeline: use reception.
        "effectiveDateTime": row["device_time"] if _has_zone(row.get("device_time"))
        else row["received_at"],
        "issued": row["received_at"],
        "device": {"identifier": {"value": row["device_id"]}},
    }
    if row.get("value") is not None:
        obs["valueQuantity"] = {
            "value": row["value"], "unit": row["unit"], "system": UCUM, "code": row["unit"],
        }
    else:
        obs["dataAbsentReason"] = {
            "coding": [{"system": ABSENT, "code": row.get("absent_reason") or "unknown"}]
        }
    ext: list[dict[str, Any]] = []
    flags = json.loads(row["flags"]) if isinstance(row.get("flags"), str) else row.get("flags")
    if flags:
        ext.append({"url": EXT_FLAGS, "valueString": ",".join(flags)})
    if row.get("device_time"):
        ext.append({"url": EXT_DEVICE_TIME, "valueString": row["device_time"]})
    if row.get("clock_source"):
        ext.append({"url": EXT_CLOCK, "valueCode": row["clock_source"]})
    if row.get("latitude") is not None and row.get("longitude") is not None:
        ext.append({"url": GEOLOCATION, "extension": [
            {"url": "latitude", "valueDecimal": row["latitude"]},
            {"url": "longitude", "valueDecimal": row["longitude"]},
        ]})
    if row.get("encounter_id"):
        obs["encounter"] = {"reference": f"Encounter/{row['encounter_id']}"}
    if ext:
        obs["extension"] = ext
    return obs


def encode_batch(
    unit: str, batch_id: str, rows: Sequence[Mapping[str, Any]], created_at: str, *, epoch: str
) -> bytes:
    if not rows:
        raise ValueError("a batch needs at least one reading")
    if not EPOCH_PATTERN.fullmatch(epoch):
        raise ValueError(f"epoch {epoch!r} is not 1-64 characters of [A-Za-z0-9._:-]")
    envelope = {
        "schema": SCHEMA,
        "unit": unit,
        "epoch": epoch,
        "batch_id": batch_id,
        "seq_from": rows[0]["seq"],
        "seq_to": rows[-1]["seq"],
        "created_at": created_at,
        "bundle": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": observation(unit, r)} for r in rows],
        },
    }
    text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT_V1)
    return packer.compress(text.encode("utf-8")) + packer.flush()


def _inflate(payload: bytes) -> bytes:
    inflater = zlib.decompressobj(zdict=ZDICT_V1)
    try:
        data = inflater.decompress(payload, MAX_DECOMPRESSED)
    except zlib.error as exc:
        raise CodecError(f"not zlib data: {exc}") from None
    if inflater.unconsumed_tail:
        raise CodecError(f"decompressed size over {MAX_DECOMPRESSED} bytes")
    if not inflater.eof:
        raise CodecError("truncated zlib stream")
    return data


def decode_batch(payload: bytes) -> Batch:
    try:
        env = json.loads(_inflate(payload))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"not JSON: {exc}") from None
    except RecursionError:  # absurdly nested arrays: small once compressed
        raise CodecError("JSON nested too deeply") from None
    if not isinstance(env, dict):
        raise CodecError("envelope is not a JSON object")
    schema = env.get("schema")
    if isinstance(schema, str) and schema in RETIRED_SCHEMAS:
        raise CodecError(f"schema {schema} is retired (no store epoch): the unit must be "
                         f"updated to send {SCHEMA}")
    if schema != SCHEMA:
        raise CodecError(f"schema is not {SCHEMA}")
    try:
        unit, batch_id, epoch = env["unit"], env["batch_id"], env["epoch"]
        seq_from, seq_to = env["seq_from"], env["seq_to"]
        entries = env["bundle"]["entry"]
        observations = [e["resource"] for e in entries]
    except (KeyError, TypeError) as exc:
        raise CodecError(f"missing field {exc}") from None
    if not (isinstance(unit, str) and isinstance(batch_id, str) and isinstance(seq_from, int)
            and isinstance(seq_to, int) and seq_from <= seq_to):
        raise CodecError("bad envelope fields")
    if not isinstance(epoch, str) or not EPOCH_PATTERN.fullmatch(epoch):
        raise CodecError("epoch is not 1-64 characters of [A-Za-z0-9._:-]")
    for obs in observations:
        if not isinstance(obs, dict) or obs.get("resourceType") != "Observation":
            raise CodecError("bundle entry is not an Observation")
        if not isinstance(obs.get("id"), str) or seq_of(obs) is None:
            raise CodecError("Observation without id or sequence number")
    return Batch(unit, epoch, batch_id, seq_from, seq_to, str(env.get("created_at", "")),
                 observations)


def seq_of(obs: Mapping[str, Any]) -> int | None:
    idents = obs.get("identifier")
    for ident in idents if isinstance(idents, list) else []:
        if isinstance(ident, dict) and str(ident.get("system", "")).startswith(SEQ_SYSTEM):
            value = ident.get("value")
            # isascii: str.isdigit() accepts "²", which int() refuses
            if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
                return int(value)
    return None
