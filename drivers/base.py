"""Decoder interface and the events decoders emit.

Decoders are sans-I/O: ``receive_data(bytes) -> list[Event]``; bytes to send back (link-level
ACK/NAK, MLLP ACK, ASTM ACK) are queued inside and collected with ``data_to_send()``. An
acknowledgement that means "stored" is an *input*: the runtime commits the readings of a
:class:`MessageComplete` and only then calls ``acknowledge(message_id, stored=True)``.

Bad device input is data, not an exception: it becomes :class:`Rejected` with the raw bytes,
and the decoder resyncs. Only :class:`DecoderMisuse` is raised, for caller bugs.

Exactly once, from at-least-once devices: a device resends what it has no positive answer for
(our ACK was lost with the connection, the cursor did not move). A measurement decoded from an
identifiable source record carries ``source_key`` (:func:`source_key`, from the bytes only), and
the store derives the reading id from it, so the resent record is stored once and answered
positively again. A download cursor (glucose RACP) travels in :class:`MessageComplete` and is
committed in the same transaction as the message's readings: it never moves past what is stored
and never lags behind it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from edge_agent.models import Measurement


@dataclass(frozen=True, slots=True)
class Rejected:
    raw: bytes
    reason: str  # stable machine text, e.g. "checksum", "no-sync", "truncated"


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """All measurements of one message/record set were emitted; commit, then acknowledge.

    ``cursor`` (key, value): a device download cursor to save in the same transaction as the
    message's readings (the glucose meter's highest record number downloaded)."""

    message_id: str
    cursor: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """Non-measurement device facts (serial number, battery, clock, position fix...)."""

    key: str
    value: str


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What a device told us about itself (BLE Device Information, HL7 MSH-3/MSH-4 and OBX-18,
    an ASTM H record's sender): kept in the store's ``device_facts`` and sent as the FHIR
    Device's identifiers, manufacturer, model and version. None: not told (an empty value the
    device sent counts as none: :func:`fact`)."""

    serial: str | None = None
    system_id: str | None = None  # IEEE EUI-64, "FE-ED-AB-EE-DE-AD-77-C3"
    manufacturer: str | None = None
    model: str | None = None
    firmware: str | None = None

    def any(self) -> bool:
        return any(
            v is not None
            for v in (self.serial, self.system_id, self.manufacturer, self.model, self.firmware)
        )


def fact(value: str | bytes | None, limit: int = 64) -> str | None:
    """A device-reported text, printable and trimmed (NULs, padding), at most ``limit``
    characters; None when nothing is left."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "".join(c for c in (value or "") if c.isprintable()).strip()
    return text[:limit] or None


def eui64(system_id: bytes | None) -> str | None:
    """BLE System ID (0x2A23: manufacturer identifier then OUI, least significant octet
    first) as the PHD IG's EUI-64 text, most significant first: "FE-ED-AB-EE-DE-AD-77-C3";
    None when absent, not 8 octets, or all zero."""
    if not system_id or len(system_id) != 8 or not any(system_id):
        return None
    return "-".join(f"{b:02X}" for b in reversed(system_id))


Event = Measurement | Rejected | MessageComplete | DeviceInfo | DeviceFacts


def source_key(kind: str, *parts: str | int) -> str:
    """A measurement's ``source_key``: the protocol and the fields that identify its source
    record, written unambiguously (``hl7:["APP","FAC",...]``); equal parts give equal keys."""
    return kind + ":" + json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))


class DecoderMisuse(Exception):
    """The caller broke the decoder's contract (e.g. acknowledged an unknown message)."""


@runtime_checkable
class StreamDecoder(Protocol):
    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes as they arrive (any split). ``b""`` means end of stream."""
        ...

    def data_to_send(self) -> bytes:
        """Bytes the transport must write to the device now (may be empty)."""
        ...

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        """Tell the decoder whether a completed message was committed; queues the reply."""
        ...


class PassiveDecoder:
    """Mixin for stream protocols with no replies (Nonin, CMS50, NMEA, scales)."""

    def data_to_send(self) -> bytes:
        return b""

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        raise DecoderMisuse(f"this protocol has no messages to acknowledge: {message_id!r}")


@dataclass(frozen=True, slots=True)
class GattWrite:
    """A write the BLE transport must perform (e.g. a RACP request)."""

    characteristic: str  # 16-bit UUID as 4 lower-case hex digits, e.g. "2a52"
    value: bytes
    with_response: bool = True


@runtime_checkable
class GattDecoder(Protocol):
    """BLE: values arrive already framed, one characteristic value at a time."""

    subscriptions: tuple[str, ...]  # 16-bit UUIDs, 4 lower-case hex digits ("2a35")

    def receive_value(self, characteristic: str, value: bytes) -> list[Event]: ...

    def writes_to_send(self) -> list[GattWrite]: ...

    def acknowledge(self, message_id: str, *, stored: bool) -> None: ...


@runtime_checkable
class Flushable(Protocol):
    """A decoder holding part of a measurement across values (a multiple-packet Body
    Composition Measurement): when the link drops the transport calls ``flush`` and stores
    what it returns (the partial set, flagged), so nothing received is lost."""

    def flush(self) -> list[Event]: ...


class Sink(Protocol):
    """Where transports hand decoded events. ``store`` returns only after the COMMIT, which
    includes ``cursor`` (key, value) when given: the readings and the cursor commit together
    or not at all.

    ``may_buffer=True`` (data no device will be acknowledged for: stream devices, which
    never resend) lets the sink hold the data in memory while the disk is full and return at
    once, so the transport keeps reading; without it a full disk raises ``StoreFull``."""

    async def store(
        self,
        device_id: str,
        measurements: list[Measurement],
        rejects: list[Rejected],
        *,
        cursor: tuple[str, int] | None = None,
        may_buffer: bool = False,
    ) -> None: ...

    def device_status(self, device_id: str, state: str, detail: str = "") -> None: ...

    def device_facts(self, device_id: str, facts: DeviceFacts) -> None:
        """Keep what the device told about itself (written in the background)."""
        ...
