"""Contec CMS50 USB-serial oximeters, the legacy 5-octet live stream (sans-I/O).

Facts: ``shared/PROTOCOLS.md`` §4 (19200 bps, 8 data bits, odd parity; 60 packets a second).
Octet 1 has bit 7 set (sync): b6 pulse beep, b5 SpO2 dropping, b4 searching too long (finger
out), b3-0 signal strength. Octets 2-5 have bit 7 clear: pleth; b6 PR bit 7, b5 searching
pulse, b4 probe error, b3-0 bar graph; PR bits 6-0; SpO2. No checksum.

At 60 Hz every packet repeats the same SpO2/PR, so one reading per second of data is emitted:
at every 60th packet (counted, no clock) the latest valid values are emitted with the flags
seen during that second (``searching``, ``finger-out``, ``probe-error``, ``spo2-dropping``,
``weak-signal`` for strength < 2). Zero values while searching or with the finger out are
"no reading": ``DeviceInfo("finger", "out"|"in")`` on change. A sync violation ends the packet:
its octets become a ``Rejected`` and scanning resumes at the next octet with bit 7 set.
"""

from __future__ import annotations

from typing import Final

from drivers.base import DeviceInfo, Event, PassiveDecoder, Rejected
from edge_agent.models import measurement

PACKET: Final = 5
PER_SECOND: Final = 60
MAX_JUNK: Final = 300


class Cms50Decoder(PassiveDecoder):
    def __init__(self) -> None:
        self._buf = bytearray()
        self._junk = bytearray()
        self._count = 0
        self._flags: list[str] = []
        self._latest: tuple[int, int] | None = None
        self._raw = bytearray()  # the second's packets, kept with its reading
        self._finger = "unknown"

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        buf = self._buf
        while buf:
            if not buf[0] & 0x80:
                self._junk.append(buf[0])
                del buf[:1]
                if len(self._junk) >= MAX_JUNK:
                    self._flush(events)
                continue
            if len(buf) < PACKET:
                break
            broken = next((i for i in range(1, PACKET) if buf[i] & 0x80), None)
            if broken is not None:
                # A new sync octet inside the packet: this one was cut short.
                self._junk += buf[:broken]
                del buf[:broken]
                self._flush(events, "truncated")
                continue
            self._flush(events)
            packet = bytes(buf[:PACKET])
            del buf[:PACKET]
            self._packet(events, packet)
        if not data:
            self._junk += buf
            buf.clear()
            self._flush(events, "truncated")
            if self._raw:  # a partial second: keep its bytes rather than lose them
                events.append(Rejected(bytes(self._raw), "partial-second"))
                self._raw.clear()
        return events

    def _flush(self, events: list[Event], reason: str = "no-sync") -> None:
        if self._junk:
            events.append(Rejected(bytes(self._junk), reason))
            self._junk.clear()

    def _packet(self, events: list[Event], packet: bytes) -> None:
        b1, _pleth, b3, b4, b5 = packet
        pr = ((b3 & 0x40) << 1) | (b4 & 0x7F)
        spo2 = b5 & 0x7F
        searching = bool(b3 & 0x20)
        finger_out = bool(b1 & 0x10)
        for flag, on in (("searching", searching), ("finger-out", finger_out),
                         ("probe-error", bool(b3 & 0x10)), ("spo2-dropping", bool(b1 & 0x20)),
                         ("weak-signal", (b1 & 0x0F) < 2)):
            if on and flag not in self._flags:
                self._flags.append(flag)
        valid = 0 < spo2 < 127 and 0 < pr < 255 and not finger_out
        if valid:
            self._latest = (spo2, pr)
        finger = "out" if (finger_out or (searching and not valid)) else "in"
        if finger != self._finger:
            self._finger = finger
            events.append(DeviceInfo("finger", finger))
        self._raw += packet
        self._count += 1
        if self._count < PER_SECOND:
            return
        raw, flags, latest = bytes(self._raw), tuple(self._flags), self._latest
        self._count, self._flags, self._latest = 0, [], None
        self._raw.clear()
        if latest is None:
            return  # a second with the finger out or still searching: no reading
        spo2, pr = latest
        events.append(measurement("spo2", float(spo2), flags=flags, raw=raw))
        events.append(measurement("pulse_rate", float(pr), flags=flags, raw=raw))
