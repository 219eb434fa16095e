"""Nonin pulse oximeters, serial Data Formats 2, 7, 8 and 13 (sans-I/O).

Facts: ``shared/PROTOCOLS.md`` §3 (Nonin OEM III / Xpod / 3150 / 9560 specifications).

- DF2: 5-octet frames ``01 STATUS PLETH FLOAT CHK``; DF7: ``STATUS PLETH_MSB PLETH_LSB FLOAT
  CHK``. CHK = sum of the first four octets mod 256. STATUS bit 7 is always 1; bit 0 (SYNC)
  marks frame 1 of a 25-frame packet. The FLOAT octet carries a different value in each frame
  (1-2 HR, 3 SpO2, 8 STAT2, ...). One complete packet (1/3 s) gives one ``spo2`` and one
  ``pulse_rate`` from the 4-beat "recording" values.
- DF8: 4 octets once a second ``STATUS HR SPO2 STATUS2``, STATUS bit 7 = 1, others bit 7 = 0,
  no checksum; display values.
- DF13: spot-check packets ``00 02 00 0D LEN(2) data(14) CHK 03`` with a BCD time stamp.
- HR is 9 bits everywhere: HR8/HR7 in the low bits of the MSB/STATUS octet. Missing data is
  HR 511 / SpO2 127: no measurement, and ``DeviceInfo("signal", "missing")`` on the change.

Flags (stable names): ``artifact``, ``out-of-track``, ``sensor-alarm``, ``sensor-disconnect``,
``marginal-perfusion`` (yellow), ``low-perfusion`` (red), ``smartpoint`` (SPA: high-quality
measurement), ``low-battery``, ``from-memory`` (DF13 stored spot check).

Resync: a frame that breaks sync or fails its checksum ends the packet; the packet so far and
the first octet of the bad frame become one ``Rejected`` and scanning resumes one octet later.
Every octet received ends up in exactly one packet or one ``Rejected``. Decisions depend only
on the octets, never on how they were split across reads.

The data-format select command (``02 70 02 02 fmt 03``) is answered by one ACK (06) or NAK
(15) octet; :meth:`NoninDecoder.request_format` queues it and the next 06/15 seen before a
sync is reported as ``DeviceInfo("format-select", "ack"|"nak")`` (ACK switches the format).
"""

from __future__ import annotations

from typing import Final

from drivers.base import DecoderMisuse, DeviceInfo, Event, Rejected
from edge_agent.models import measurement

FORMATS: Final = (2, 7, 8, 13)
PACKET_FRAMES: Final = 25
MISSING_HR: Final = 511
MISSING_SPO2: Final = 127
ACK: Final = 0x06
NAK: Final = 0x15
MAX_JUNK: Final = 250  # flush unsynced octets as one reject every two packets' worth
DF13_HEADER: Final = b"\x00\x02\x00\x0d"
DF13_DATA_LEN: Final = 14
DF13_LEN: Final = 6 + DF13_DATA_LEN + 2


def select_format_command(fmt: int) -> bytes:
    if fmt not in FORMATS:
        raise DecoderMisuse(f"Nonin data format must be one of {FORMATS}, not {fmt}")
    return bytes([0x02, 0x70, 0x02, 0x02, fmt, 0x03])


def _status_flags(status: int) -> list[str]:
    """DF2/DF7 STATUS octet."""
    flags = []
    if status & 0x40:
        flags.append("sensor-disconnect")
    if status & 0x20:
        flags.append("artifact")
    if status & 0x10:
        flags.append("out-of-track")
    if status & 0x08:
        flags.append("sensor-alarm")
    perfusion = (status >> 1) & 0x03  # (RPRF, GPRF): 01 green, 11 yellow, 10 red
    if perfusion == 0b11:
        flags.append("marginal-perfusion")
    elif perfusion == 0b10:
        flags.append("low-perfusion")
    return flags


class NoninDecoder:
    def __init__(self, data_format: int = 2) -> None:
        if data_format not in FORMATS:
            raise DecoderMisuse(f"Nonin data format must be one of {FORMATS}, not {data_format}")
        self.data_format = data_format
        self._buf = bytearray()
        self._junk = bytearray()
        self._packet: list[bytes] = []  # DF2/DF7 frames accepted so far
        self._out = bytearray()
        self._pending_format: int | None = None
        self._signal = "ok"

    # --- StreamDecoder --------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        raise DecoderMisuse(f"Nonin formats have no messages to acknowledge: {message_id!r}")

    def request_format(self, fmt: int) -> None:
        self._out += select_format_command(fmt)
        self._pending_format = fmt

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        while True:
            fmt = self.data_format
            if fmt in (2, 7):
                self._frames(events)
            elif fmt == 8:
                self._df8(events)
            else:
                self._df13(events)
            if fmt == self.data_format:  # an ACK switches format: decode the rest in the new one
                break
        if not data:  # end of stream: nothing may stay unaccounted for
            self._flush_junk(events, "no-sync")
            self._junk += b"".join(self._packet) + bytes(self._buf)
            self._packet.clear()
            self._buf.clear()
            self._flush_junk(events, "truncated")
        return events

    # --- helpers --------------------------------------------------------------------------
    def _reply(self, events: list[Event]) -> bool:
        """Consume a select-format ACK/NAK octet if one is expected here."""
        if self._pending_format is None or not self._buf or self._buf[0] not in (ACK, NAK):
            return False
        ok = self._buf[0] == ACK
        del self._buf[0]
        self._flush_junk(events, "no-sync")
        events.append(DeviceInfo("format-select", "ack" if ok else "nak"))
        if ok:
            self.data_format = self._pending_format
            self._packet.clear()
        self._pending_format = None
        return True

    def _skip(self, events: list[Event], count: int = 1) -> None:
        self._junk += self._buf[:count]
        del self._buf[:count]
        if len(self._junk) >= MAX_JUNK:
            self._flush_junk(events, "no-sync")

    def _flush_junk(self, events: list[Event], reason: str) -> None:
        if self._junk:
            events.append(Rejected(bytes(self._junk), reason))
            self._junk.clear()

    def _set_signal(self, events: list[Event], state: str) -> None:
        if state != self._signal:
            self._signal = state
            events.append(DeviceInfo("signal", state))

    # --- DF2 / DF7 ------------------------------------------------------------------------
    def _frame_fault(self, frame: bytes, first: bool) -> str | None:
        status = frame[1] if self.data_format == 2 else frame[0]
        if self.data_format == 2 and frame[0] != 0x01:
            return "sync"
        if not status & 0x80 or bool(status & 0x01) != first:
            return "sync"
        if sum(frame[:4]) & 0xFF != frame[4]:
            return "checksum"
        return None

    def _frames(self, events: list[Event]) -> None:
        while len(self._buf) >= 5 or (self._buf and self._pending_format is not None):
            if not self._packet and self._reply(events):
                continue
            if len(self._buf) < 5:
                return
            frame = bytes(self._buf[:5])
            first = not self._packet
            fault = self._frame_fault(frame, first)
            if fault is None:
                self._flush_junk(events, "no-sync")
                self._packet.append(frame)
                del self._buf[:5]
                if len(self._packet) == PACKET_FRAMES:
                    self._emit_packet(events)
                continue
            if first:
                self._skip(events)
                continue
            # A packet in progress broke: reject it with the bad frame's first octet.
            raw = b"".join(self._packet) + frame[:1]
            self._packet.clear()
            del self._buf[:1]
            events.append(Rejected(raw, fault))

    def _emit_packet(self, events: list[Event]) -> None:
        frames, self._packet = self._packet, []
        raw = b"".join(frames)
        floats = [f[3] for f in frames]
        statuses = [f[1] if self.data_format == 2 else f[0] for f in frames]
        flags: list[str] = []
        for status in statuses:
            flags.extend(f for f in _status_flags(status) if f not in flags)
        stat2 = floats[7]
        if stat2 & 0x20:
            flags.append("smartpoint")
        if stat2 & 0x01:
            flags.append("low-battery")
        hr = ((floats[0] & 0x03) << 7) | (floats[1] & 0x7F)
        spo2 = floats[2] & 0x7F
        self._emit_values(events, spo2, hr, tuple(flags), raw, None)

    def _emit_values(
        self,
        events: list[Event],
        spo2: int,
        hr: int,
        flags: tuple[str, ...],
        raw: bytes,
        device_time: str | None,
    ) -> None:
        missing = spo2 == MISSING_SPO2 or hr == MISSING_HR
        self._set_signal(events, "missing" if missing else "ok")
        if spo2 != MISSING_SPO2:
            events.append(
                measurement("spo2", float(spo2), flags=flags, raw=raw, device_time=device_time)
            )
        if hr != MISSING_HR:
            events.append(
                measurement("pulse_rate", float(hr), flags=flags, raw=raw, device_time=device_time)
            )

    # --- DF8 ------------------------------------------------------------------------------
    def _df8(self, events: list[Event]) -> None:
        while self._buf:
            if self._reply(events):
                continue
            if len(self._buf) < 4:
                return
            frame = bytes(self._buf[:4])
            if not frame[0] & 0x80 or any(b & 0x80 for b in frame[1:]):
                self._skip(events)
                continue
            self._flush_junk(events, "no-sync")
            del self._buf[:4]
            status, hr_low, spo2, status2 = frame
            flags: list[str] = []
            if status & 0x20:
                flags.append("out-of-track")
            if status & 0x10:
                flags.append("low-perfusion")
            if status & 0x08:
                flags.append("marginal-perfusion")
            if status & 0x04:
                flags.append("artifact")
            if status2 & 0x08:
                flags.append("sensor-alarm")
            if status2 & 0x20:
                flags.append("smartpoint")
            if status2 & 0x01:
                flags.append("low-battery")
            hr = ((status & 0x03) << 7) | hr_low
            self._emit_values(events, spo2, hr, tuple(flags), frame, None)

    # --- DF13 -----------------------------------------------------------------------------
    def _df13(self, events: list[Event]) -> None:
        while self._buf:
            if self._reply(events):
                continue
            if len(self._buf) < DF13_LEN:
                # Wait for a whole packet, unless what we have cannot start one.
                if not DF13_HEADER.startswith(bytes(self._buf[:4])):
                    self._skip(events)
                    continue
                return
            packet = bytes(self._buf[:DF13_LEN])
            fault = self._df13_fault(packet)
            if fault == "sync":
                self._skip(events)
                continue
            self._flush_junk(events, "no-sync")
            del self._buf[:DF13_LEN]
            if fault is not None:
                events.append(Rejected(packet, fault))
                continue
            self._emit_spot_check(events, packet)

    @staticmethod
    def _df13_fault(packet: bytes) -> str | None:
        if packet[:4] != DF13_HEADER or packet[-1] != 0x03:
            return "sync"
        if int.from_bytes(packet[4:6], "big") != DF13_DATA_LEN:
            return "sync"
        data = packet[6 : 6 + DF13_DATA_LEN]
        if sum(data) & 0xFF != packet[6 + DF13_DATA_LEN]:
            return "checksum"
        return None

    def _emit_spot_check(self, events: list[Event], packet: bytes) -> None:
        data = packet[6 : 6 + DF13_DATA_LEN]
        stamp = _bcd_time(data[:8])
        status_msb, status_lsb, pr_msb, pr_lsb, _reserved, spo2 = data[8:14]
        if stamp is None:
            events.append(Rejected(packet, "bad-time-stamp"))
            return
        if status_msb & 0x01:  # NOMS: the device took no measurement
            events.append(DeviceInfo("spot-check", "no-measurement"))
            return
        flags: list[str] = []
        if status_msb & 0x02:
            flags.append("smartpoint")
        if status_lsb & 0x10:
            flags.append("from-memory")
        if status_lsb & 0x01:
            flags.append("low-battery")
        hr = ((pr_msb & 0x01) << 8) | pr_lsb
        self._emit_values(events, spo2, hr, tuple(flags), packet, stamp)


def _bcd(octet: int) -> int | None:
    high, low = octet >> 4, octet & 0x0F
    return None if high > 9 or low > 9 else high * 10 + low


def _bcd_time(octets: bytes) -> str | None:
    """``20 YY MM DD hh mm ss 00`` -> ISO 8601 local time (the device has no zone)."""
    parts = [_bcd(o) for o in octets[:7]]
    if any(p is None for p in parts) or octets[7] != 0:
        return None
    century, year, month, day, hour, minute, second = (p or 0 for p in parts)
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return None
    return (
        f"{century:02d}{year:02d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    )
