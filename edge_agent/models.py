"""Value types shared by drivers, store and sync. No I/O here.

A :class:`Measurement` is what a decoder got from a device: a quantity from the catalogue,
its value in a UCUM unit, the device's own time stamp (as the device gave it) and the raw
bytes it came from. The store gives an accepted one a stable id (:func:`new_reading_id`), the
unit's sequence number and the agent's reception time (a row of its ``readings`` table).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from edge_agent.catalogue import quantity as _quantity


class ClockSource(StrEnum):
    """Where the reception time came from; readings stamped by an untrusted clock are flagged."""

    SYSTEM = "system"  # the unit's clock, synchronised (NTP) or confirmed by central
    GPS = "gps"  # NMEA RMC time from the van's receiver
    CENTRAL = "central"  # corrected with the offset learnt from central acks
    UNTRUSTED = "untrusted"  # booted offline, never confirmed


@dataclass(frozen=True, slots=True)
class Measurement:
    quantity: str
    value: float | None
    unit: str
    loinc: str | None = None
    mdc: int | None = None
    device_time: str | None = None  # ISO 8601 as the device gave it (no zone when it gave none)
    flags: tuple[str, ...] = ()  # device status: "artifact", "low-battery", "implausible", ...
    absent_reason: str | None = None  # FHIR dataAbsentReason code when value is None
    raw: bytes = b""
    context: tuple[tuple[str, str], ...] = ()  # e.g. (("site", "finger"),)
    # The source record's stable identity within the device (HL7 MSH-10 + OBX, ASTM specimen +
    # test + time, a glucose meter's identity + record number), computed by the decoder from
    # the bytes; the store derives the reading id from it, so a record sent again is stored
    # once. None for streams without record identity (a new id each time).
    source_key: str | None = None
    # The result status the device gave (HL7 OBX-11 / ASTM R-9, HL7 table 0085 letters:
    # "F" final, "P" preliminary, "C" corrected, "X" cannot be obtained, "R" not verified...),
    # upper case; None when the protocol has none (then the reading is final). Quality-control
    # readings are marked by the flag "control" instead: never alerting, never bound to a patient.
    status: str | None = None


def measurement(
    key: str,
    value: float | None,
    unit: str | None = None,
    *,
    loinc: str | None = None,
    device_time: str | None = None,
    flags: tuple[str, ...] = (),
    absent_reason: str | None = None,
    raw: bytes = b"",
    context: tuple[tuple[str, str], ...] = (),
    source_key: str | None = None,
    status: str | None = None,
) -> Measurement:
    """Build a Measurement with codes and unit defaulted from the catalogue."""
    q = _quantity(key)
    return Measurement(
        quantity=key,
        value=value,
        unit=unit or q.ucum,
        loinc=loinc if loinc is not None else q.loinc,
        mdc=q.mdc,
        device_time=device_time,
        flags=flags,
        absent_reason=absent_reason,
        raw=raw,
        context=context,
        source_key=source_key,
        status=status,
    )


def new_reading_id() -> str:
    return str(uuid.uuid4())
