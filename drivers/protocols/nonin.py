"""Nonin pulse oximeters, serial Data Formats 2, 7, 8 and 13 (sans-I/O).

Facts: ``docs/protocols.md`` §3 (Nonin OEM III / Xpod / WristOx2 3150 / Onyx II 9560).

- DF2: 5-octet frames ``01 STATUS PLETH FLOAT CHK``; DF7: ``STATUS PLETH_MSB PLETH_LSB FLOAT
  CHK``. CHK = sum of the first four octets mod 256; STATUS bit 7 is always 1 and bit 0 (SYNC)
  is set on frame 1 only. A packet is 25 frames (1/3 s); its FLOAT octets carry one value per
  frame. A whole packet gives one ``spo2`` and one ``pulse_rate`` from the 4-beat "recording"
  values (frames 1-3), with the union of its frames' STATUS flags.
- DF8: ``STATUS HR SPO2 STATUS2`` once a second, display values. No checksum: a frame is
  STATUS bit 7 = 1, the other octets bit 7 = 0 and SpO2 <= 100 or 127.
- DF13: spot checks ``00 02 00 0D LEN(2) data(LEN) CHK 03``, LEN >= 14 (the data section may
  grow; octets past the 14 known ones are ignored, LEN > 64 is taken as noise), CHK = sum of
  the data octets mod 256. Data: BCD ``20 YY MM DD hh mm ss`` and a fraction-of-second octet
  (ignored), STATUS MSB, STATUS LSB, PR MSB, PR LSB, reserved, SpO2. ``device_time`` is the
  stamp as ISO 8601 without zone. NOMS (no measurement) gives only
  ``DeviceInfo("spot-check", "no-measurement")``.
- HR is 9 bits everywhere: HR8/HR7 sit in bits 1-0 of the HR MSB (DF2/7) or STATUS (DF8)
  octet, HR6-HR0 in bits 6-0 of the next; DF13 has HR8 in bit 0 of PR MSB.
- Missing data, HR 511 / SpO2 127: no measurement for that quantity. ``DeviceInfo("signal",
  "missing")`` when a unit with missing data follows one without (or starts the stream) and
  ``DeviceInfo("signal", "ok")`` when complete values come back.

Flags (stable names, always in this order): ``sensor-disconnect`` (DF2/7 STATUS b6, OEM III),
``sensor-alarm`` (SNSA), ``out-of-track`` (OOT), ``artifact`` (ARTF), ``low-perfusion`` (red),
``marginal-perfusion`` (yellow; green gives no flag; the worst colour of the packet wins),
``smartpoint`` (SPA: SmartPoint high-quality measurement), ``low-battery``, ``from-memory``
(DF13 stored spot check).

Resync: the decoder tries to start a unit (packet, frame, spot check) at each octet in turn.
When a candidate fails, its first octet is rejected and scanning resumes at the next octet, so
a good unit right after noise is never lost. Rejected octets accumulate into one
``Rejected(raw, reason)``, reported when the next unit starts: ``no-sync`` (noise),
``checksum`` or ``sync`` (a DF2/7 packet or DF13 spot check that began well and broke: its
octets are the raw), ``truncated`` (end of stream inside a unit, or a packet cut off by a
select reply). A DF13 spot check with an impossible date (day 32, a non-BCD digit) is kept
without ``device_time`` and flagged ``bad-device-time``, and SpO2 values above 100 are
withheld (``impossible-value``): :mod:`drivers.protocols.policy`. Every octet ends up in exactly
one unit or ``Rejected`` (except units with only missing data and NOMS spot checks, which give
only ``DeviceInfo``). Decisions depend only on the octets, never on how the reads split them.
``b""`` ends the stream: leftovers are rejected, the signal state goes back to "ok" and a
pending request is dropped; the format stays.

Select format: :func:`select_format_command`; :meth:`NoninDecoder.request_format` queues it in
``data_to_send()``. While it is pending, an ACK (06) or NAK (15) octet is the device's reply
when it stands at a unit boundary (stream start, right after a unit, or where a DF2/7 packet in
progress breaks off) or when the octets after it start a good unit (in the requested format
for ACK, the current one for NAK). The reply gives ``DeviceInfo("format-select", "ack"|"nak")``
and ACK switches the decoder to the requested format. A reply lost in noise goes unreported.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from drivers.base import DecoderMisuse, DeviceInfo, Event, PassiveDecoder, Rejected
from drivers.protocols.policy import checked
from edge_agent.models import measurement

FORMATS: Final = (2, 7, 8, 13)
ACK: Final = 0x06
NAK: Final = 0x15
MISSING_HR: Final = 511
MISSING_SPO2: Final = 127
FRAME: Final = 5
PACKET_FRAMES: Final = 25
PACKET: Final = FRAME * PACKET_FRAMES
DF8_FRAME: Final = 4
DF13_HEADER: Final = b"\x00\x02\x00\x0d"
DF13_MIN_DATA: Final = 14
DF13_MAX_DATA: Final = 64  # a larger LEN is noise; waiting for it would stall decoding
MAX_JUNK: Final = 2 * PACKET  # report long noise in pieces rather than hold it

FLAG_ORDER: Final = (
    "sensor-disconnect",
    "sensor-alarm",
    "out-of-track",
    "artifact",
    "low-perfusion",
    "marginal-perfusion",
    "smartpoint",
    "low-battery",
    "from-memory",
)


def _check_format(fmt: int) -> None:
    if fmt not in FORMATS:
        raise DecoderMisuse(f"Nonin data format must be one of {FORMATS}, not {fmt!r}")


def select_format_command(fmt: int) -> bytes:
    """``02 70 02 02 fmt 03``: make the device send Data Format ``fmt`` (kept in its NVM)."""
    _check_format(fmt)
    return bytes([0x02, 0x70, 0x02, 0x02, fmt, 0x03])


def _ordered(flags: set[str]) -> tuple[str, ...]:
    return tuple(f for f in FLAG_ORDER if f in flags)


def _frame_fault(fmt: int, frame: bytes | bytearray, first: bool) -> str | None:
    """Check a DF2/DF7 frame, or as much of it as has arrived (so waiting never hides a fault)."""
    if fmt == 2:
        if frame[:1] not in (b"", b"\x01"):
            return "sync"
        status = frame[1] if len(frame) > 1 else None
    else:
        status = frame[0] if frame else None
    if status is not None and (not status & 0x80 or bool(status & 0x01) != first):
        return "sync"
    if len(frame) == FRAME and sum(frame[:4]) & 0xFF != frame[4]:
        return "checksum"
    return None


def _df8_fault(frame: bytes | bytearray) -> bool:
    if frame and not frame[0] & 0x80:
        return True
    if any(b & 0x80 for b in frame[1:]):
        return True
    return len(frame) > 2 and 100 < frame[2] < MISSING_SPO2


def _df13_fault(head: bytes | bytearray) -> bool:
    """Header and LEN (the first 6 octets, or what has arrived of them)."""
    if not DF13_HEADER.startswith(bytes(head[:4])):
        return True
    if len(head) >= 6:
        length = int.from_bytes(head[4:6], "big")
        return not DF13_MIN_DATA <= length <= DF13_MAX_DATA
    return False


def _unit_starts(fmt: int, data: bytes | bytearray) -> bool | None:
    """Whether ``data`` starts a good unit in ``fmt``; None while too short to tell."""
    if fmt in (2, 7):
        if _frame_fault(fmt, data[:FRAME], True) is not None:
            return False
        return True if len(data) >= FRAME else None
    if fmt == 8:
        if _df8_fault(data[:DF8_FRAME]):
            return False
        return True if len(data) >= DF8_FRAME else None
    if _df13_fault(data[:6]):
        return False
    return True if len(data) >= 6 else None


class NoninDecoder(PassiveDecoder):
    """Decode one Nonin serial stream; see the module docstring for the rules."""

    def __init__(self, data_format: int) -> None:
        _check_format(data_format)
        self.data_format = data_format
        self._buf = bytearray()  # the candidate unit starts at _buf[0]
        self._good = 0  # DF2/DF7: complete frames of the candidate already checked
        self._junk = bytearray()
        self._junk_reason = "no-sync"
        self._boundary = True  # _buf[0] follows a unit, a reply or the stream start
        self._pending: int | None = None
        self._out = bytearray()
        self._signal = "ok"

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def request_format(self, fmt: int) -> None:
        """Queue the select command; the reply is reported as ``DeviceInfo("format-select")``."""
        self._out += select_format_command(fmt)
        self._pending = fmt

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        while self._buf and self._step(events):
            pass
        if not data:
            self._flush_junk(events)
            if self._buf:
                events.append(Rejected(bytes(self._buf), "truncated"))
            self._buf.clear()
            self._good = 0
            self._boundary = True
            self._pending = None
            self._signal = "ok"
        return events

    # --- scanning: each step consumes octets and returns True, or returns False to wait ----
    def _step(self, events: list[Event]) -> bool:
        if self._pending is not None and self._buf[0] in (ACK, NAK):
            taken = self._boundary or self._reply_followed_by_data()
            if taken is None:
                return False
            if taken:
                self._take_reply(events)
                return True
        if self.data_format in (2, 7):
            return self._step_packet(events)
        if self.data_format == 8:
            return self._step_df8(events)
        return self._step_df13(events)

    def _reply_followed_by_data(self) -> bool | None:
        fmt = self._pending if self._buf[0] == ACK and self._pending else self.data_format
        return _unit_starts(fmt, self._buf[1:7])  # 6 octets tell for every format

    def _take_reply(self, events: list[Event]) -> None:
        self._flush_junk(events)
        ack = self._buf[0] == ACK
        del self._buf[0]
        events.append(DeviceInfo("format-select", "ack" if ack else "nak"))
        if ack and self._pending is not None:
            self.data_format = self._pending
        self._pending = None
        self._good = 0
        self._boundary = True

    def _discard(self, events: list[Event], reason: str) -> None:
        """Reject the candidate's first octet; scanning resumes at the next one."""
        if not self._junk:
            self._junk_reason = reason
        self._junk.append(self._buf[0])
        del self._buf[0]
        self._good = 0
        self._boundary = False
        if len(self._junk) >= MAX_JUNK:
            self._flush_junk(events)

    def _flush_junk(self, events: list[Event]) -> None:
        if self._junk:
            events.append(Rejected(bytes(self._junk), self._junk_reason))
            self._junk.clear()

    def _unit_done(self, size: int) -> bytes:
        raw = bytes(self._buf[:size])
        del self._buf[:size]
        self._good = 0
        self._boundary = True
        return raw

    # --- DF2 / DF7 ------------------------------------------------------------------------
    def _step_packet(self, events: list[Event]) -> bool:
        fmt, buf = self.data_format, self._buf
        fault: str | None = None
        while self._good < PACKET_FRAMES:
            start = self._good * FRAME
            frame = buf[start : start + FRAME]
            fault = _frame_fault(fmt, frame, self._good == 0)
            if fault is not None:
                break
            if len(frame) < FRAME:
                return False
            self._good += 1
            # Octets before a well-formed frame 1 can no longer belong to any packet.
            self._flush_junk(events)
        if fault is None:
            self._emit_packet(events, self._unit_done(PACKET))
            return True
        cut = self._good * FRAME
        if self._good and self._pending is not None and buf[cut] in (ACK, NAK):
            # The device answered between two frames: the packet so far is cut off.
            events.append(Rejected(self._unit_done(cut), "truncated"))
            return True
        self._discard(events, fault if self._good else "no-sync")
        return True

    def _emit_packet(self, events: list[Event], raw: bytes) -> None:
        frames = [raw[i : i + FRAME] for i in range(0, PACKET, FRAME)]
        status_at = 1 if self.data_format == 2 else 0
        flags: set[str] = set()
        perfusion = 0
        for frame in frames:
            status = frame[status_at]
            if status & 0x40:
                flags.add("sensor-disconnect")
            if status & 0x20:
                flags.add("artifact")
            if status & 0x10:
                flags.add("out-of-track")
            if status & 0x08:
                flags.add("sensor-alarm")
            # (RPRF, GPRF): 01 green, 11 yellow, 10 red; rank so the worst colour wins.
            perfusion = max(perfusion, {0b10: 2, 0b11: 1}.get((status >> 1) & 0x03, 0))
        if perfusion == 2:
            flags.add("low-perfusion")
        elif perfusion == 1:
            flags.add("marginal-perfusion")
        floats = [frame[3] for frame in frames]
        stat2 = floats[7]
        if stat2 & 0x20:
            flags.add("smartpoint")
        if stat2 & 0x01:
            flags.add("low-battery")
        hr = ((floats[0] & 0x03) << 7) | (floats[1] & 0x7F)
        self._emit_values(events, floats[2], hr, _ordered(flags), raw, None)

    def _emit_values(
        self,
        events: list[Event],
        spo2: int,
        hr: int,
        flags: tuple[str, ...],
        raw: bytes,
        device_time: str | None,
    ) -> None:
        state = "missing" if spo2 == MISSING_SPO2 or hr == MISSING_HR else "ok"
        if state != self._signal:
            self._signal = state
            events.append(DeviceInfo("signal", state))
        for key, value, missing in (("spo2", spo2, MISSING_SPO2), ("pulse_rate", hr, MISSING_HR)):
            if value != missing:
                m = measurement(key, float(value), flags=flags, raw=raw, device_time=device_time)
                events.append(checked(m))  # SpO2 101-126 is impossible (policy.py)

    # --- DF8 ------------------------------------------------------------------------------
    def _step_df8(self, events: list[Event]) -> bool:
        frame = self._buf[:DF8_FRAME]
        if _df8_fault(frame):
            self._discard(events, "no-sync")
            return True
        if len(frame) < DF8_FRAME:
            return False
        self._flush_junk(events)
        raw = self._unit_done(DF8_FRAME)
        status, hr_low, spo2, status2 = raw
        flags: set[str] = set()
        if status & 0x20:
            flags.add("out-of-track")
        if status & 0x10:
            flags.add("low-perfusion")
        elif status & 0x08:
            flags.add("marginal-perfusion")
        if status & 0x04:
            flags.add("artifact")
        if status2 & 0x20:
            flags.add("smartpoint")
        if status2 & 0x08:
            flags.add("sensor-alarm")
        if status2 & 0x01:
            flags.add("low-battery")
        hr = ((status & 0x03) << 7) | hr_low
        self._emit_values(events, spo2, hr, _ordered(flags), raw, None)
        return True

    # --- DF13 -----------------------------------------------------------------------------
    def _step_df13(self, events: list[Event]) -> bool:
        buf = self._buf
        if _df13_fault(buf[:6]):
            self._discard(events, "no-sync")
            return True
        if len(buf) < 6:
            return False
        self._flush_junk(events)
        length = int.from_bytes(buf[4:6], "big")
        size = 6 + length + 2
        if len(buf) < size:
            return False
        if buf[size - 1] != 0x03:
            self._discard(events, "sync")
            return True
        if sum(buf[6 : 6 + length]) & 0xFF != buf[size - 2]:
            self._discard(events, "checksum")
            return True
        self._emit_spot_check(events, self._unit_done(size))
        return True

    def _emit_spot_check(self, events: list[Event], raw: bytes) -> None:
        data = raw[6:-2]
        stamp = _bcd_time(data[:7])
        status_msb, status_lsb, pr_msb, pr_lsb, _reserved, spo2 = data[8:14]
        if status_msb & 0x01:
            events.append(DeviceInfo("spot-check", "no-measurement"))
            return
        flags: set[str] = set()
        if status_msb & 0x02:
            flags.add("smartpoint")
        if status_lsb & 0x10:
            flags.add("from-memory")
        if status_lsb & 0x01:
            flags.add("low-battery")
        hr = ((pr_msb & 0x01) << 8) | pr_lsb
        bad_time = () if stamp is not None else ("bad-device-time",)  # policy rule 4
        self._emit_values(events, spo2, hr, _ordered(flags) + bad_time, raw, stamp)


def _bcd(octet: int) -> int | None:
    high, low = octet >> 4, octet & 0x0F
    return None if high > 9 or low > 9 else high * 10 + low


def _bcd_time(octets: bytes) -> str | None:
    """``20 YY MM DD hh mm ss`` in BCD -> ``YYYY-MM-DDThh:mm:ss`` (the device has no zone)."""
    parts = [_bcd(o) for o in octets]
    if None in parts:
        return None
    century, year, month, day, hour, minute, second = (p or 0 for p in parts)
    try:  # the calendar check only; no clock is read
        stamp = datetime(century * 100 + year, month, day, hour, minute, second)
    except ValueError:
        return None
    return stamp.isoformat()
