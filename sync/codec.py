"""The wire format: a batch of readings as a FHIR R4 transaction Bundle, zlib-compressed.

``mmu.readings/3`` (the current one): the payload is a FHIR R4 ``transaction`` Bundle
(:mod:`sync.fhir` builds it; the schema, unit and store epoch are ``Bundle.meta.tag`` codes, the
batch id is ``Bundle.identifier``), JSON, compressed with zlib (RFC 1950) primed with a preset
dictionary: :data:`ZDICT` (``mmu-zdict-3``; payloads primed with ``mmu-zdict-2`` still decode).
MQTT 5 says so: content type ``application/zlib`` and the user
properties :data:`WIRE_PROPERTIES` (the inner media type, the dictionary's name and Adler-32).
The zlib header itself names the dictionary (its Adler-32, RFC 1950 DICTID): the decoder picks
the dictionary from it, so a third party needs only the dictionary bytes (docs/wire-format.md).

``mmu.readings/2`` (a JSON envelope ``{"schema", "unit", "epoch", "batch_id", "seq_from",
"seq_to", "created_at", "bundle"}`` with a collection Bundle, dictionary V1) is still decoded,
so a unit not yet updated keeps syncing; ``mmu.readings/1`` (no epoch) is refused with a
:class:`CodecError` that says so. Decoding is strict and bounded (a decompression bomb is
refused): anything malformed raises :class:`CodecError` and nothing else.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final

from sync import fhir, fhir_text, topics

SCHEMA: Final = fhir.SCHEMA
LEGACY_SCHEMA: Final = "mmu.readings/2"
RETIRED_SCHEMAS: Final = frozenset({"mmu.readings/1"})
INNER_CONTENT_TYPE: Final = "application/fhir+json; fhirVersion=4.0"
CONTENT_TYPE: Final = topics.READINGS.content_type  # RFC 6713: the payload is a zlib stream
ENCODING: Final = "zlib+dict3"  # zlib with the preset dictionary ZDICT_V3
MAX_DECOMPRESSED: Final = 32 * 1024 * 1024
LOINC: Final = fhir.LOINC
MDC: Final = fhir.MDC
UCUM: Final = fhir.UCUM
SEQ_SYSTEM: Final = "urn:mmu:seq"  # mmu.readings/2: an Observation identifier
EPOCH_PATTERN: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a uuid, in practice


# A preset dictionary primes zlib with the FHIR boilerplate every batch repeats, so a batch of
# one reading (an alert on a flapping 2G link) is small too. Each version is a data file shipped
# in the package, sync/dictionaries/<name>.zdict: its exact bytes (ASCII, no final newline),
# read once at import. Never edit one: add a version (scripts/zdict.py writes it) and its name
# to DICTIONARIES; tests/sync/test_codec.py pins every version's Adler-32.
# mmu-zdict-1: the mmu.readings/1 envelope's boilerplate (mmu.readings/2 compresses with it too).
# mmu-zdict-2: the mmu.readings/3 transaction Bundle's (sync/fhir.py's output, values emptied).
# mmu-zdict-3: the same from scripts/zdict.py (issue 8: the Device with what the device told us,
# Observation.device only beside a Patient, no MDC coding beside a vital-signs profile's LOINC).


def _shipped_dictionary(name: str) -> bytes:
    return resources.files("sync").joinpath(f"dictionaries/{name}.zdict").read_bytes()


ZDICT_V1: Final = _shipped_dictionary("mmu-zdict-1")
ZDICT_V2: Final = _shipped_dictionary("mmu-zdict-2")
ZDICT_V2_NAME: Final = "mmu-zdict-2"
ZDICT_V3: Final = _shipped_dictionary("mmu-zdict-3")
ZDICT_V3_NAME: Final = "mmu-zdict-3"
ZDICT: Final = ZDICT_V3  # what encode_batch primes zlib with
ZDICT_NAME: Final = ZDICT_V3_NAME
# Every dictionary a unit ever sent with, by Adler-32 (the zlib header's DICTID): payloads
# compressed with an older one (a unit not yet updated, a batch stored before) still decode.
DICTIONARIES: Final[Mapping[int, bytes]] = {
    zlib.adler32(d): d for d in (ZDICT_V1, ZDICT_V2, ZDICT_V3)
}
# What the MQTT 5 user properties say about a readings payload (beside content type
# application/zlib): enough for a platform that is not ours to decode it.
# (The dictionary's Adler-32 is in the zlib header itself: RFC 1950 DICTID.)
WIRE_PROPERTIES: Final = (
    ("schema", SCHEMA),
    ("encoding", ENCODING),
    ("inner-content-type", INNER_CONTENT_TYPE),
    ("zlib-dictionary", ZDICT_NAME),
)


class CodecError(ValueError):
    """A payload that is not a valid batch (bad compression, JSON, schema or field)."""


@dataclass(frozen=True)
class Carried:
    """One reading of a batch: its id and seq, and the resource that carries it (its own
    Observation, a BP panel with the other parts of its measurement, a GPS Location)."""

    id: str
    seq: int
    resource: dict[str, Any]
    update: bool = False  # sent again as a conditional update (attributed after it was sent)
    part: int = 0  # its place among the resource's readings (a panel's component, a fix's axis)


@dataclass(frozen=True)
class Batch:
    unit: str
    epoch: str
    batch_id: str
    seq_from: int
    seq_to: int
    created_at: str
    readings: list[Carried]
    # Patient, Encounter, Device, Location, with whether the Bundle asks to update them (PUT)
    # or only to create them when missing (POST with ifNoneExist).
    resources: list[Other] = field(default_factory=list)


@dataclass(frozen=True)
class Other:
    resource: dict[str, Any]
    update: bool


def encode_batch(
    unit: str, batch_id: str, rows: Sequence[Mapping[str, Any]], created_at: str, *, epoch: str
) -> bytes:
    if not rows:
        raise ValueError("a batch needs at least one reading")
    if not EPOCH_PATTERN.fullmatch(epoch):
        raise ValueError(f"epoch {epoch!r} is not 1-64 characters of [A-Za-z0-9._:-]")
    text = fhir_text.bundle_json(unit, epoch, batch_id, rows, created_at)
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT)
    return packer.compress(text.encode("utf-8")) + packer.flush()


def dictionary_of(payload: bytes) -> bytes | None:
    """The preset dictionary the zlib header names (RFC 1950 FDICT + DICTID); None if the
    stream has none."""
    if len(payload) < 6 or payload[0] & 0x0F != 8 or (payload[0] << 8 | payload[1]) % 31:
        return None  # not a zlib header: inflating says so
    if not payload[1] & 0x20:
        return None
    wanted = int.from_bytes(payload[2:6], "big")
    found = DICTIONARIES.get(wanted)
    if found is None:
        raise CodecError(f"unknown zlib preset dictionary {wanted:08x}")
    return found


def _inflate(payload: bytes) -> bytes:
    zdict = dictionary_of(payload)
    inflater = zlib.decompressobj(zdict=zdict) if zdict is not None else zlib.decompressobj()
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
        doc = json.loads(_inflate(payload))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CodecError(f"not JSON: {exc}") from None
    except RecursionError:  # absurdly nested arrays: small once compressed
        raise CodecError("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise CodecError("payload is not a JSON object")
    if doc.get("resourceType") == "Bundle":
        return _decode_bundle(doc)
    schema = doc.get("schema")
    if isinstance(schema, str) and schema in RETIRED_SCHEMAS:
        raise CodecError(
            f"schema {schema} is retired (no store epoch): the unit must be "
            f"updated to send {SCHEMA}"
        )
    if schema != LEGACY_SCHEMA:
        raise CodecError(f"schema is not {SCHEMA}")
    return _decode_envelope(doc)


def _check_ids(unit: Any, epoch: Any, batch_id: Any) -> None:
    if not (isinstance(unit, str) and isinstance(batch_id, str)):
        raise CodecError("bad envelope fields")
    if not isinstance(epoch, str) or not EPOCH_PATTERN.fullmatch(epoch):
        raise CodecError("epoch is not 1-64 characters of [A-Za-z0-9._:-]")


def _decode_envelope(env: dict[str, Any]) -> Batch:
    """mmu.readings/2: a collection of Observations, one per reading."""
    try:
        unit, batch_id, epoch = env["unit"], env["batch_id"], env["epoch"]
        seq_from, seq_to = env["seq_from"], env["seq_to"]
        entries = env["bundle"]["entry"]
        observations = [e["resource"] for e in entries]
    except (KeyError, TypeError) as exc:
        raise CodecError(f"missing field {exc}") from None
    _check_ids(unit, epoch, batch_id)
    if not (isinstance(seq_from, int) and isinstance(seq_to, int) and seq_from <= seq_to):
        raise CodecError("bad envelope fields")
    readings = []
    for obs in observations:
        if not isinstance(obs, dict) or obs.get("resourceType") != "Observation":
            raise CodecError("bundle entry is not an Observation")
        seq = seq_of(obs)
        if not isinstance(obs.get("id"), str) or seq is None:
            raise CodecError("Observation without id or sequence number")
        readings.append(Carried(obs["id"], seq, obs))
    return Batch(unit, epoch, batch_id, seq_from, seq_to, str(env.get("created_at", "")), readings)


def _tags(bundle: dict[str, Any]) -> dict[str, Any]:
    meta = bundle.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    if not isinstance(tags, list):
        raise CodecError("Bundle without meta.tag")
    return {str(t.get("system")): t.get("code") for t in tags if isinstance(t, dict)}


def _decode_bundle(bundle: dict[str, Any]) -> Batch:
    """mmu.readings/3: a transaction Bundle; readings are the resources with reading ids."""
    tags = _tags(bundle)
    if tags.get(fhir.TAG_SCHEMA) != SCHEMA:
        raise CodecError(f"Bundle is not tagged {SCHEMA}")
    unit, epoch = tags.get(fhir.TAG_UNIT), tags.get(fhir.TAG_EPOCH)
    ident, entries = bundle.get("identifier"), bundle.get("entry")
    batch_id = ident.get("value") if isinstance(ident, dict) else None
    if isinstance(batch_id, str):
        batch_id = batch_id.removeprefix("urn:uuid:")
    _check_ids(unit, epoch, batch_id)
    assert isinstance(unit, str) and isinstance(epoch, str) and isinstance(batch_id, str)
    if not isinstance(entries, list) or not entries:
        raise CodecError("Bundle without entries")
    try:
        seqs = fhir.parse_seq_runs(str(tags.get(fhir.TAG_SEQS, "")))
    except ValueError as exc:
        raise CodecError(f"Bundle tag {fhir.TAG_SEQS}: {exc}") from None
    readings: list[Carried] = []
    others: list[Other] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(request, dict):
            raise CodecError("Bundle entry without resource or request")
        ids, update = _reading_ids(resource), request.get("method") == "PUT"
        if not ids:
            others.append(Other(resource, update))
            continue
        if len(readings) + len(ids) > len(seqs):
            raise CodecError("more readings than seqs")
        base = len(readings)
        readings.extend(
            Carried(rid, seqs[base + i], resource, update, i) for i, rid in enumerate(ids)
        )
    if not readings or len(readings) != len(seqs):
        raise CodecError(f"{len(readings)} readings for {len(seqs)} seqs")
    return Batch(
        unit,
        epoch,
        batch_id,
        min(seqs),
        max(seqs),
        str(bundle.get("timestamp", "")),
        readings,
        others,
    )


def _reading_ids(resource: dict[str, Any]) -> list[str]:
    idents = resource.get("identifier")
    out = []
    for ident in idents if isinstance(idents, list) else []:
        if isinstance(ident, dict) and ident.get("system") == fhir.READING_SYSTEM:
            value = ident.get("value")
            if not isinstance(value, str) or not value:
                raise CodecError("reading identifier without a value")
            out.append(value)
    return out


def _seq_value(value: Any) -> int | None:
    # isascii: str.isdigit() accepts "²", which int() refuses
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def seq_of(obs: Mapping[str, Any]) -> int | None:
    """The seq of a mmu.readings/2 Observation (identifier ``urn:mmu:seq:<unit>``)."""
    idents = obs.get("identifier")
    for ident in idents if isinstance(idents, list) else []:
        if isinstance(ident, dict) and str(ident.get("system", "")).startswith(SEQ_SYSTEM):
            value = _seq_value(ident.get("value"))
            if value is not None:
                return value
    return None


def observation(unit: str, row: Mapping[str, Any], epoch: str = "0") -> dict[str, Any]:
    """One reading's resource alone (the naive one-message-per-reading baseline)."""
    resource: dict[str, Any] = fhir.bundle(unit, epoch, "single", [row], str(row["received_at"]))[
        "entry"
    ][-1]["resource"]
    return resource
