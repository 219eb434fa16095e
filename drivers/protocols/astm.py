"""ASTM E1381 (CLSI LIS01-A2) low level + E1394 (CLSI LIS2-A2) records, receiver (host) side.

Sans-I/O: the transport feeds bytes to :meth:`AstmDecoder.receive_data`, writes
:meth:`AstmDecoder.data_to_send`, calls :meth:`AstmDecoder.timeout` after 30 s of silence
between frames and :meth:`AstmDecoder.acknowledge` once a message is committed.
Facts: ``docs/protocols.md`` §6.

Low level (E1381)
    neutral --ENQ--> ACK, transfer; frames ``STX FN text ETB|ETX C1 C2 CR LF``, FN '1'..'7','0',
    '1'... per transmission; checksum = sum of the bytes FN..ETB/ETX mod 256 as two hex digits.
    Good frame -> ACK. Bad checksum, frame number, structure, length (text > 240) or a restricted
    character -> NAK plus ``Rejected(raw, reason)``; the analyser resends the same frame (it gives
    up after 6 tries). A repeat of the last accepted frame (our ACK was lost) is ACKed and
    dropped. EOT ends the transmission and returns to neutral. Bytes outside any frame become
    ``Rejected(raw, "unexpected-data")`` once the next control byte arrives.

The final acknowledgement waits for the commit
    A message (E1394 H ... L) is complete when the frame carrying its L record, ended by ETX,
    is accepted. The ACK of *that* frame is held back: the decoder emits the message's events,
    then ``MessageComplete(message_id)``, and queues nothing. ``acknowledge(id, stored=True)``
    queues the ACK, so the analyser only learns "delivered" after our COMMIT; ``stored=False``
    queues a NAK, the analyser resends that frame and the message completes again (new id).
    While the ACK is held the decoder is busy: an ENQ is answered NAK (the analyser retries
    later). If the analyser gives up waiting (EOT after its 15 s reply timer, or a new ENQ, or
    our :meth:`timeout`), the held reply is never written: a late ACK would be read as the answer
    to its next ENQ. It will resend the message; its results carry the same source keys (below),
    so the store keeps them once and the resend is ACKed.

Contention
    The host never sends ENQ here (receive only), so E1381 contention cannot arise. If a
    query/download side is added, the instrument has priority: on ENQ while our ENQ is
    pending, stop, answer its ENQ and wait (>= 20 s per E1381, recalled) before bidding again.

Records (E1394)
    Delimiters come from the H record (``H|\\^&``: field, repeat, component, escape); escapes
    ``&F& &S& &R& &E&``. P-3 patient id and O-3 specimen id go into the measurement ``context``
    (never logged here: this module does not log). R-3 ``^^^code`` is looked up in the
    per-model test map; unknown codes give ``Rejected(record, "unknown-test-code")``. R-4 value,
    R-5 unit mapped to UCUM, R-7 abnormal flags as ``abnormal:<flag>``, R-9 status, R-13 (else
    R-12) as ISO 8601 without zone (instrument local time); R-9 also becomes the
    measurement's ``status``. The test map may define quantities the catalogue lacks
    (:mod:`~drivers.protocols.sitecodes`). Quality control: a message with H-12 processing id ``Q``
    or an order with O-12 action code ``Q`` gives results flagged ``control`` with ``("qc",
    ...)`` in the context and no patient id: they never alert and are never bound to a patient
    (the store leaves their encounter empty). C after R adds a ``comment``;
    Q and M records are ignored; other record types are rejected.

Source keys (exactly once)
    A result's ``source_key`` is the analyser (H-5 sender name and serial number), the specimen
    (O-3), the result's sequence number (R-2), the test (R-3 universal test id) and the result
    time (R-13, else R-12), all as sent: a message resent after a lost ACK gives the same keys
    and the store keeps each result once (R-2 keeps a test repeated on one specimen within the
    same second apart). A result without a time has no key (two runs of one test on one
    specimen could not be told apart): it is stored each time it is sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum
from typing import Any, Final

from drivers.base import (
    DecoderMisuse,
    DeviceFacts,
    DeviceInfo,
    Event,
    MessageComplete,
    Rejected,
    fact,
    source_key,
)
from drivers.protocols.sitecodes import (
    CodeMapError,
    CodeMapping,
    load_code_map,
    mapped_measurement,
    unit_refused,
)
from edge_agent.models import Measurement

__all__ = [
    "AstmDecoder",
    "TestMapError",
    "TestMapping",
    "load_test_map",
]

STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
ENQ: Final = 0x05
ACK: Final = 0x06
LF: Final = 0x0A
CR: Final = 0x0D
NAK: Final = 0x15
ETB: Final = 0x17
# SOH STX ETX EOT ENQ ACK DLE NAK SYN ETB LF DC1-DC4 may not appear in frame text (E1381).
RESTRICTED: Final = frozenset(
    {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0A, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17}
)
MAX_TEXT: Final = 240
MAX_FRAME: Final = MAX_TEXT + 7  # STX FN ... ETX C1 C2 CR LF
# Bound on buffered junk / overlong frames, so noise cannot grow memory; counted in bytes so the
# events stay the same for any split of the stream.
_HOLD_LIMIT: Final = 4096

_NUMBER: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TIME_FORMATS: Final = {14: ("%Y%m%d%H%M%S", "seconds"), 12: ("%Y%m%d%H%M", "minutes")}

# Unit spellings seen on analysers -> UCUM. Keys are lower-case.
_UCUM: Final[Mapping[str, str]] = {
    "mg/dl": "mg/dL",
    "mmol/l": "mmol/L",
    "g/dl": "g/dL",
    "g/l": "g/L",
    "mg/l": "mg/L",
    "%": "%",
    "umol/l": "umol/L",
    "\u00b5mol/l": "umol/L",  # micro sign
    "\u03bcmol/l": "umol/L",  # Greek mu
    "u/l": "U/L",
    "iu/l": "[IU]/L",
    "mmol/mol": "mmol/mol",
    "ng/ml": "ng/mL",
}
_STATUS_FLAGS: Final[Mapping[str, str]] = {"P": "preliminary", "C": "corrected"}


# The test map is a site code map (drivers/protocols/sitecodes.py): catalogue quantities or
# quantities the site defines (LOINC + UCUM + names), checked at config load.
TestMapError = CodeMapError
TestMapping = CodeMapping


def load_test_map(obj: Any) -> dict[str, CodeMapping]:
    """Parse ``{"GLU": {"quantity": "glucose", "sample": "serum-or-plasma"}}`` (the JSON form,
    :mod:`drivers.protocols.sitecodes`); raises :class:`TestMapError` naming the code at fault."""
    try:
        return load_code_map(obj)
    except CodeMapError as exc:
        raise TestMapError(f"test map: {exc}") from None


class _Phase(Enum):
    NEUTRAL = "neutral"  # waiting for ENQ
    TRANSFER = "transfer"  # ENQ accepted, frames until EOT


@dataclass(slots=True)
class _Held:
    """A completed message whose last frame's ACK waits for ``acknowledge``."""

    message_id: str
    fn: int
    restore_text: bytes  # message text before the held frame, to accept its resend after NAK
    restore_fn: int | None
    live: bool = True  # False once the analyser gave up: then nothing is written


@dataclass(frozen=True, slots=True)
class _Delimiters:
    field: str = "|"
    repeat: str = "\\"
    component: str = "^"
    escape: str = "&"

    def unescape(self, text: str) -> str:
        e = self.escape
        if e not in text:
            return text
        table = {"F": self.field, "S": self.component, "R": self.repeat, "E": e}
        pattern = re.escape(e) + "([FSRE])" + re.escape(e)
        return re.sub(pattern, lambda m: table[m.group(1)], text)


class AstmDecoder:
    """E1381/E1394 receiver. See the module docstring for the acknowledgement contract."""

    carries_identity = True  # P records hold patient ids: rejects are logged as digests

    def __init__(self, test_map: Mapping[str, CodeMapping], *, encoding: str = "latin-1") -> None:
        self._map = dict(test_map)
        self._encoding = encoding
        self._phase = _Phase.NEUTRAL
        self._frame: bytearray | None = None  # bytes since STX
        self._overflow = False  # the current frame already exceeded _HOLD_LIMIT
        self._junk = bytearray()
        self._text = bytearray()  # joined texts of the accepted frames of the current message
        self._last_fn: int | None = None
        self._held: _Held | None = None
        self._out = bytearray()
        self._messages = 0

    # -- StreamDecoder -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if not data:
            self._reset(events, "eof")
            return events
        for byte in data:
            if self._frame is not None:
                self._frame_byte(byte, events)
            elif byte == STX and self._phase is _Phase.TRANSFER:
                self._flush_junk(events)
                self._frame = bytearray((byte,))
            elif byte == ENQ:
                self._flush_junk(events)
                self._on_enq(events)
            elif byte == EOT:
                self._flush_junk(events)
                self._on_eot(events)
            else:
                self._junk.append(byte)
                if len(self._junk) >= _HOLD_LIMIT:
                    self._flush_junk(events)
        return events

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        held = self._held
        if held is None or held.message_id != message_id:
            raise DecoderMisuse(f"no ASTM message {message_id!r} is waiting for acknowledgement")
        self._held = None
        if not held.live:
            return  # the analyser gave up; it will resend the whole message
        if stored:
            self._out.append(ACK)
        else:
            self._out.append(NAK)
            self._text = bytearray(held.restore_text)
            self._last_fn = held.restore_fn

    def timeout(self) -> list[Event]:
        """30 s without a byte between frames: drop any partial message (as Rejected), go idle."""
        events: list[Event] = []
        self._reset(events, "timeout")
        return events

    # -- low level -----------------------------------------------------------------------------

    def _reset(self, events: list[Event], reason: str) -> None:
        if self._frame is not None:
            events.append(Rejected(bytes(self._frame), reason))
            self._frame = None
            self._overflow = False
        self._flush_junk(events)
        self._end_transfer(events, reason)

    def _end_transfer(self, events: list[Event], reason: str) -> None:
        if self._text:
            events.append(Rejected(bytes(self._text), reason))
            self._text.clear()
        if self._held is not None:
            self._held.live = False
        self._phase = _Phase.NEUTRAL
        self._last_fn = None

    def _flush_junk(self, events: list[Event]) -> None:
        if self._junk:
            events.append(Rejected(bytes(self._junk), "unexpected-data"))
            self._junk.clear()

    def _on_enq(self, events: list[Event]) -> None:
        if self._held is not None:
            # Busy until the commit is answered; a restart mid-transfer also ends that transfer.
            self._end_transfer(events, "incomplete-message")
            self._out.append(NAK)
            return
        if self._phase is _Phase.TRANSFER:
            self._end_transfer(events, "incomplete-message")  # sender restarted without EOT
        self._phase = _Phase.TRANSFER
        self._last_fn = None
        self._out.append(ACK)

    def _on_eot(self, events: list[Event]) -> None:
        if self._phase is _Phase.TRANSFER:
            self._end_transfer(events, "incomplete-message")

    def _frame_byte(self, byte: int, events: list[Event]) -> None:
        frame = self._frame
        assert frame is not None
        if byte in (STX, EOT):
            # Restricted in text: the frame in progress lost its end.
            events.append(Rejected(bytes(frame), "too-long" if self._overflow else "truncated"))
            self._frame = bytearray((byte,)) if byte == STX else None
            self._overflow = False
            if byte == EOT:
                self._on_eot(events)
            return
        frame.append(byte)
        if byte == LF:
            self._frame = None
            overflow, self._overflow = self._overflow, False
            if overflow:
                events.append(Rejected(bytes(frame), "too-long"))
                self._reply(NAK)
            else:
                self._on_frame(bytes(frame), events)
        elif len(frame) >= _HOLD_LIMIT:
            events.append(Rejected(bytes(frame), "too-long"))
            frame.clear()
            self._overflow = True

    def _reply(self, byte: int) -> None:
        # While a final ACK is held the analyser must stay silent; answering anything else
        # would be taken as the answer to the held frame.
        if self._held is None:
            self._out.append(byte)

    def _on_frame(self, raw: bytes, events: list[Event]) -> None:
        checked = _check_frame(raw)
        held = self._held
        if held is not None:
            if isinstance(checked, str) or checked[0] != held.fn:
                events.append(Rejected(raw, "busy"))
            return  # a resend of the held frame: its answer comes with acknowledge()
        if isinstance(checked, str):
            events.append(Rejected(raw, checked))
            self._reply(NAK)
            return
        fn, text, last = checked
        if fn == self._last_fn:
            self._reply(ACK)  # our ACK was lost; the analyser resent the frame
            return
        expected = 1 if self._last_fn is None else (self._last_fn + 1) % 8
        if fn != expected:
            events.append(Rejected(raw, "frame-number"))
            self._reply(NAK)
            return
        restore_text, restore_fn = bytes(self._text), self._last_fn
        self._text += text
        self._last_fn = fn
        if last and self._complete(events):
            self._held = _Held(self._current_id(), fn, restore_text, restore_fn)
            return
        self._reply(ACK)

    def _current_id(self) -> str:
        return f"astm-{self._messages}"

    def _complete(self, events: list[Event]) -> bool:
        """After an ETX frame: emit the message if its L record arrived."""
        if not self._text.endswith(b"\r"):
            self._text.append(CR)  # ETX ends a record even when the analyser omits the CR
        records = bytes(self._text).split(b"\r")[:-1]
        end = next((i for i, rec in enumerate(records) if rec[:1] == b"L"), None)
        if end is None:
            return False
        self._text = bytearray(b"".join(rec + b"\r" for rec in records[end + 1 :]))
        events.extend(self._parse(records[: end + 1]))
        self._messages += 1
        events.append(MessageComplete(self._current_id()))
        return True

    # -- records -------------------------------------------------------------------------------

    def _parse(self, records: list[bytes]) -> list[Event]:
        events: list[Event] = []
        d = _Delimiters()
        patient = specimen = ""
        qc_message = qc_order = False  # H-12 / O-12 "Q": quality control, not a patient
        sender: tuple[str, str] = ("", "")  # H-5 name and serial number, for source keys
        last_result: int | None = None  # index in events of the previous record's measurement
        for raw in records:
            if not raw:
                continue
            text = raw.decode(self._encoding, "replace")
            kind = text[0].upper()
            previous, last_result = last_result, None
            if kind == "H":
                d, header = _header(text, raw)
                events.extend(header)
                patient = specimen = ""
                qc_message = _field(text, d, 11).upper().startswith("Q")
                qc_order = False
                name, serial = ([*_raw_field(text, d, 4).split(d.component), "", ""])[:2]
                sender = (d.unescape(name).strip(), d.unescape(serial).strip())
            elif kind == "P":
                patient = _field(text, d, 2)
                specimen = ""
                qc_order = False
            elif kind == "O":
                specimen = d.unescape(_raw_field(text, d, 2).split(d.component)[0]).strip()
                qc_order = _field(text, d, 11).upper() == "Q"
            elif kind == "R":
                qc = "processing-id" if qc_message else "action-code" if qc_order else ""
                event = self._result(text, raw, d, patient, specimen, sender, qc)
                if isinstance(event, Measurement):
                    last_result = len(events)
                events.append(event)
            elif kind == "C":
                if previous is not None:
                    m = events[previous]
                    assert isinstance(m, Measurement)
                    comment = " ".join(
                        d.unescape(c) for c in _raw_field(text, d, 3).split(d.component) if c
                    )
                    if comment:
                        events[previous] = replace(m, context=(*m.context, ("comment", comment)))
            elif kind in "QML":
                pass  # queries and manufacturer records carry no results; L ends the message
            else:
                events.append(Rejected(raw, "unknown-record"))
        return events

    def _result(
        self,
        text: str,
        raw: bytes,
        d: _Delimiters,
        patient: str,
        specimen: str,
        sender: tuple[str, str],
        qc: str = "",
    ) -> Measurement | Rejected:
        fields = text.split(d.field)
        if len(fields) < 4:
            return Rejected(raw, "bad-record")
        components = fields[2].split(d.component)
        code = d.unescape(components[3] if len(components) > 3 else components[-1]).strip()
        mapping = self._map.get(code)
        if mapping is None:
            return Rejected(raw, "unknown-test-code")

        def get(index: int) -> str:
            return d.unescape(fields[index]).strip() if index < len(fields) else ""

        flags: list[str] = []
        context: list[tuple[str, str]] = []
        if qc:
            # Quality control: marked, never alerting, never bound to a patient (no patient id).
            flags.append("control")
            context.append(("qc", qc))
        elif patient:
            context.append(("patient-id", patient))
        if specimen:
            context.append(("specimen-id", specimen))
        context.append(("test-code", code))

        status = get(8)
        if status:
            context.append(("result-status", status))
            if status in _STATUS_FLAGS:
                flags.append(_STATUS_FLAGS[status])
        reference = get(5)
        if reference:
            context.append(("reference-range", reference))

        value, absent, value_flag = _value(d.unescape(fields[3].split(d.component)[0]).strip())
        if value_flag:
            flags.append(value_flag)
        if absent == "as-text":
            context.append(("value-text", get(3)))
        elif absent is not None and status == "X":
            absent = "error"  # X: the test could not be done

        unit_text = get(4)
        if not unit_text:
            unit = None  # catalogue unit, flagged: the analyser did not say
            flags.append("unit-missing")
        else:
            unit = _UCUM.get(unit_text.lower())
            if unit is None:
                unit = unit_text
                flags.append("unit-unmapped")

        refused = unit_refused(mapping, unit)
        if refused:
            return Rejected(raw, refused)

        for flag in fields[6].split(d.repeat) if len(fields) > 6 else ():
            flag = d.unescape(flag).strip()
            if flag:
                flags.append(f"abnormal:{flag}")

        time_text = get(12) or get(11)
        device_time = _iso_time(time_text) if time_text else None
        if time_text and device_time is None:
            flags.append("bad-device-time")
        key = None
        if time_text:
            key = source_key("astm", *sender, specimen, get(1), get(2), time_text)

        return mapped_measurement(
            mapping,
            value,
            unit,
            device_time=device_time,
            flags=tuple(flags),
            absent_reason=absent,
            raw=raw,
            context=tuple(context),
            source_key=key,
            status=status.upper() or None,
        )


def _check_frame(raw: bytes) -> tuple[int, bytes, bool] | str:
    """Validate a frame from STX to LF: ``(fn, text, is_last)`` or the reject reason."""
    if len(raw) < 7 or raw[-2:] != b"\r\n" or raw[-5] not in (ETB, ETX):
        return "bad-frame"
    # Upper case per E1381; lower case accepted since the value is what protects the data.
    if raw[-4:-2].upper() != f"{sum(raw[1:-4]) % 256:02X}".encode():
        return "checksum"
    if not 0x30 <= raw[1] <= 0x37:
        return "frame-number"
    text = raw[2:-5]
    if any(byte in RESTRICTED for byte in text):
        return "restricted-character"
    if len(text) > MAX_TEXT:
        return "too-long"
    return raw[1] - 0x30, text, raw[-5] == ETX


def _raw_field(text: str, d: _Delimiters, index: int) -> str:
    fields = text.split(d.field)
    return fields[index] if index < len(fields) else ""


def _field(text: str, d: _Delimiters, index: int) -> str:
    return d.unescape(_raw_field(text, d, index)).strip()


def _header(text: str, raw: bytes) -> tuple[_Delimiters, list[Event]]:
    """Delimiters (H-2) and the sender facts (H-5 ``name^serial^version``, H-14 clock)."""
    if len(text) < 5 or len(set(text[1:5])) != 4 or any(c.isalnum() for c in text[1:5]):
        return _Delimiters(), [Rejected(raw, "bad-header")]
    d = _Delimiters(field=text[1], repeat=text[2], component=text[3], escape=text[4])
    events: list[Event] = []
    sender = _raw_field(text, d, 4).split(d.component)
    for key, part in zip(("model", "serial-number", "software-version"), sender, strict=False):
        value = d.unescape(part).strip()
        if value:
            events.append(DeviceInfo(key, value))
    # The same, for the store's device facts (the FHIR Device): H-5 name^serial^version.
    name, serial, version = [fact(d.unescape(p)) for p in [*sender, "", "", ""][:3]]
    facts = DeviceFacts(model=name, serial=serial, firmware=version)
    if facts.any():
        events.append(facts)
    clock = _iso_time(_field(text, d, 13))
    if clock is not None:
        events.append(DeviceInfo("device-clock", clock))
    return d, events


def _value(text: str) -> tuple[float | None, str | None, str | None]:
    """R-4 -> (value, FHIR dataAbsentReason, flag)."""
    if not text:
        return None, "unknown", None
    flag = None
    if text[0] in "<>":
        flag = "below-measuring-range" if text[0] == "<" else "above-measuring-range"
        text = text[1:].strip()
    if _NUMBER.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value, None, flag
    return None, "as-text", None


def _iso_time(text: str) -> str | None:
    """E1394 ``YYYYMMDD[HHMM[SS]]`` -> ISO 8601 without zone; None when malformed."""
    text = text.strip()
    if not text.isdigit():
        return None
    try:
        if len(text) == 8:
            return datetime.strptime(text, "%Y%m%d").date().isoformat()
        fmt, spec = _TIME_FORMATS[len(text)]
        return datetime.strptime(text, fmt).isoformat(timespec=spec)
    except (KeyError, ValueError):
        return None
