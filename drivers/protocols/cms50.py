"""Contec CMS50 USB-serial oximeters, the legacy 5-octet live stream (sans-I/O).

Facts: ``shared/PROTOCOLS.md`` §4 (19200 bps, 8 data bits, odd parity; 60 packets a second).
Octet 1 has bit 7 set (sync): b6 pulse beep, b5 SpO2 dropping, b4 searching too long (finger
out), b3-0 signal strength. Octets 2-5 have bit 7 clear: pleth; b6 PR bit 7, b5 searching
pulse, b4 probe error, b3-0 bar graph; PR bits 6-0; SpO2. No checksum.

At 60 Hz every packet repeats the same SpO2/PR, so at most one reading per second of data is
emitted: every 60th packet (packets are counted; there is no clock) closes a second, and its
latest valid values become one ``spo2`` and one ``pulse_rate`` with the flags seen during that
second: ``searching``, ``finger-out``, ``probe-error``, ``spo2-dropping``. ``context`` has the
``signal_strength`` (0-8) of the packet the values came from and ``raw`` holds the second's
packets. Zero values (and the all-ones "no value" codes, SpO2 127 / PR 255) are no reading: a
second without a valid packet gives nothing. At end of stream a partial second still gives its
reading. ``DeviceInfo("signal", "ok"|"searching"|"finger-out")`` reports the probe state of
each packet, on change.

Resync: an octet with bit 7 clear outside a packet, or a new sync octet inside one (a packet
cut short), breaks sync. Octets are then skipped one at a time up to the next sync octet and
become one ``Rejected`` (``no-sync``, or ``truncated`` for a cut packet, also at end of stream).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from drivers.base import DeviceInfo, Event, PassiveDecoder, Rejected
from edge_agent.models import measurement

PACKET: Final = 5
PER_SECOND: Final = 60
MAX_JUNK: Final = 300  # unsynced octets are flushed as one reject per second's worth
NO_SPO2: Final = 127
NO_PR: Final = 255


@dataclass(frozen=True, slots=True)
class Packet:
    """The fields of one 5-octet packet (the simulator encodes these)."""

    spo2: int  # 7 bits
    pr: int  # 8 bits
    pleth: int = 64  # 7 bits
    strength: int = 6  # 0-8
    bar: int = 5  # 0-15
    searching: bool = False
    finger_out: bool = False
    probe_error: bool = False
    spo2_dropping: bool = False
    beep: bool = False


def parse_packet(packet: bytes) -> Packet:
    """Fields of a synced packet (octet 1 bit 7 set, octets 2-5 bit 7 clear)."""
    b1, pleth, b3, b4, b5 = packet
    return Packet(
        spo2=b5 & 0x7F,
        pr=((b3 & 0x40) << 1) | (b4 & 0x7F),
        pleth=pleth & 0x7F,
        strength=b1 & 0x0F,
        bar=b3 & 0x0F,
        searching=bool(b3 & 0x20),
        finger_out=bool(b1 & 0x10),
        probe_error=bool(b3 & 0x10),
        spo2_dropping=bool(b1 & 0x20),
        beep=bool(b1 & 0x40),
    )


class Cms50Decoder(PassiveDecoder):
    def __init__(self) -> None:
        self._buf = bytearray()
        self._junk = bytearray()
        self._count = 0  # packets in the current second
        self._flags: list[str] = []
        self._latest: tuple[int, int, int] | None = None  # spo2, pr, strength
        self._raw = bytearray()  # the second's packets, kept with its reading
        self._signal = "unknown"

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
                # A sync octet inside the packet: this one was cut short; resync there.
                self._flush(events)
                self._junk += buf[:broken]
                del buf[:broken]
                self._flush(events, "truncated")
                continue
            self._flush(events)
            packet = bytes(buf[:PACKET])
            del buf[:PACKET]
            self._packet(events, packet)
        if not data:
            self._flush(events)
            self._junk += buf
            buf.clear()
            self._flush(events, "truncated")
            self._close_second(events)
        return events

    def _flush(self, events: list[Event], reason: str = "no-sync") -> None:
        if self._junk:
            events.append(Rejected(bytes(self._junk), reason))
            self._junk.clear()

    def _packet(self, events: list[Event], packet: bytes) -> None:
        p = parse_packet(packet)
        for flag, on in (
            ("searching", p.searching),
            ("finger-out", p.finger_out),
            ("probe-error", p.probe_error),
            ("spo2-dropping", p.spo2_dropping),
        ):
            if on and flag not in self._flags:
                self._flags.append(flag)
        if 0 < p.spo2 < NO_SPO2 and 0 < p.pr < NO_PR:
            self._latest = (p.spo2, p.pr, p.strength)
        signal = "finger-out" if p.finger_out else "searching" if p.searching else "ok"
        if signal != self._signal:
            self._signal = signal
            events.append(DeviceInfo("signal", signal))
        self._raw += packet
        self._count += 1
        if self._count == PER_SECOND:
            self._close_second(events)

    def _close_second(self, events: list[Event]) -> None:
        raw, flags, latest = bytes(self._raw), tuple(self._flags), self._latest
        self._count, self._flags, self._latest = 0, [], None
        self._raw.clear()
        if latest is None:
            return  # finger out or still searching the whole second: no reading
        spo2, pr, strength = latest
        context = (("signal_strength", str(strength)),)
        for key, value in (("spo2", spo2), ("pulse_rate", pr)):
            events.append(measurement(key, float(value), flags=flags, raw=raw, context=context))
