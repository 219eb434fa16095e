"""Contec CMS50 USB-serial oximeters: the legacy 5-octet live stream and the newer V7.0
packet protocol (:class:`Cms50V7Decoder`, provisional: see its section below), sans-I/O.

Facts: ``docs/protocols.md`` §4 (19200 bps, 8 data bits, odd parity; 60 packets a second).
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
from drivers.protocols.policy import checked
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

    def _packet(self, events: list[Event], packet: bytes, raw: bytes | None = None) -> None:
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
        self._raw += packet if raw is None else raw
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
            m = measurement(key, float(value), flags=flags, raw=raw, context=context)
            events.append(checked(m))  # SpO2 101-126 is not a saturation (drivers.protocols.policy)
        events.extend(self._extra(raw, flags, context))

    def _extra(
        self, raw: bytes, flags: tuple[str, ...], context: tuple[tuple[str, str], ...]
    ) -> list[Event]:
        return []  # the legacy stream has nothing more


# --- The newer protocol (CMS50D+ firmware >= 4.6, CMS50E/F): "V7.0" ---------------------------
#
# PROVISIONAL. Facts: PROTOCOLS.md §4 marks this protocol "not solid"; the framing below is the
# one of Contec's "Communication protocol of pulse oximeter V7.0" as two public drivers read it
# (a 2019 CMS50D+ 4.6 download script citing the V7.0 PDF; a 2016 CMS50D+ 4.6 live-data gist),
# and their field positions for live data agree only on pleth, pulse rate and SpO2. No capture
# from a device was available: confirm with one before relying on the status bits and PI.
#
# 115200 bps 8N1. Every packet is a *type* octet (bit 7 clear), a *high-bits* octet (bit 7
# set; its bit i is bit 7 of data octet i+1) and 0-7 data octets (bit 7 set, 7 data bits).
# Because only type octets have bit 7 clear, the stream resynchronises on its own. The host
# starts live data with the control command 0x7D, START_REALTIME 0xA1 (padded to 7 data
# octets): ``7D 81 A1 80 80 80 80 80 80``; the decoder queues it at start.
# Live data, type 0x01, 7 data octets: 1 status as the legacy octet 1 (b3-0 signal strength,
# b4 finger out / searching too long, b5 SpO2 dropping, b6 beep), 2 pleth, 3 b3-0 bar graph,
# b4 probe error, b5 searching pulse, 4 pulse rate (8 bits with the high-bits octet), 5 SpO2,
# 6-7 perfusion index uint16 LE in 0.01 % (0: not supported). Readings: one per 60 packets, as
# for the legacy stream; SpO2 0 or 127 and PR 0 or 255 are "no reading".
# Other types: 0x04 device id (7 ASCII octets) -> DeviceInfo("device-id"), 0x0B command feedback
# (command, reason) -> DeviceInfo("command-feedback"), 0x0D disconnect notice (reason) ->
# DeviceInfo("disconnect"), 0x0C free feedback (no data); a known type cut short by the next
# type octet is ``Rejected(packet, "truncated")``, an unknown type ``Rejected(packet,
# "unknown-type")``, data octets without a type ``Rejected(octets, "no-sync")``.

V7_START: Final = bytes((0x7D, 0x81, 0xA1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80))
V7_LENGTHS: Final = {0x01: 7, 0x04: 7, 0x05: 7, 0x0B: 2, 0x0C: 0, 0x0D: 1, 0x11: 7}
V7_REALTIME: Final = 0x01
V7_MAX: Final = 9  # type + high bits + 7 data octets


def v7_packet(kind: int, data: bytes) -> bytes:
    """Encode one V7.0 packet (the simulator and tests build vectors with this)."""
    if kind & 0x80 or len(data) > 7:
        raise ValueError("type must be < 0x80 and data at most 7 octets")
    high = 0x80 | sum(1 << i for i, b in enumerate(data) if b & 0x80)
    return bytes((kind, high, *(b | 0x80 for b in data)))


def v7_data(packet: bytes) -> bytes:
    """The data octets of a framed packet, bit 7 restored from the high-bits octet."""
    high = packet[1]
    return bytes((b & 0x7F) | (0x80 if high >> i & 1 else 0) for i, b in enumerate(packet[2:]))


class Cms50V7Decoder(Cms50Decoder):
    """The V7.0 protocol (see the comment above): same readings and flags as the legacy
    stream, plus ``perfusion_index`` when the device reports one."""

    def __init__(self) -> None:
        super().__init__()
        self._out = bytearray(V7_START)
        self._pi: int | None = None

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        buf = self._buf
        while buf:
            if buf[0] & 0x80:  # data octets without their type octet
                self._junk.append(buf[0])
                del buf[:1]
                if len(self._junk) >= MAX_JUNK:
                    self._flush(events)
                continue
            self._flush(events)
            expected = V7_LENGTHS.get(buf[0])
            n = 1
            while n < len(buf) and n < V7_MAX and buf[n] & 0x80:
                n += 1
            if expected is not None and n >= expected + 2:
                n = expected + 2  # a whole known packet; anything after it is junk
            elif n == len(buf) and n < V7_MAX and data:
                break  # the packet may go on: wait for more octets (or the end)
            packet = bytes(buf[:n])
            del buf[:n]
            self._v7_packet(events, packet, expected)
        if not data:
            self._flush(events)
            self._close_second(events)
        return events

    def _v7_packet(self, events: list[Event], packet: bytes, expected: int | None) -> None:
        if expected is None:
            events.append(Rejected(packet, "unknown-type"))
            return
        if len(packet) != expected + 2:
            events.append(Rejected(packet, "truncated"))  # a type octet came too early
            return
        data = v7_data(packet)
        kind = packet[0]
        if kind == V7_REALTIME:
            status, pleth, flags, pr, spo2, pi_low, pi_high = data
            legacy = bytes(
                (
                    0x80 | status & 0x7F,
                    pleth & 0x7F,
                    (flags & 0x3F) | (pr & 0x80) >> 1,
                    pr & 0x7F,
                    spo2 & 0x7F,
                )
            )
            pi = pi_low | pi_high << 8
            self._pi = pi if pi else None
            self._packet(events, legacy, raw=packet)
        elif kind == 0x04:
            text = data.decode("ascii", "replace").strip("\x00 ")
            events.append(DeviceInfo("device-id", text))
        elif kind == 0x0B:
            events.append(DeviceInfo("command-feedback", f"0x{data[0]:02x} reason={data[1]}"))
        elif kind == 0x0D:
            events.append(DeviceInfo("disconnect", f"reason={data[0]}"))
        # 0x05 user info, 0x0C free feedback, 0x11 device notice: nothing to store

    def _extra(
        self, raw: bytes, flags: tuple[str, ...], context: tuple[tuple[str, str], ...]
    ) -> list[Event]:
        if self._pi is None:
            return []
        value = self._pi / 100
        return [
            checked(
                measurement("pulse_amplitude_index", value, flags=flags, raw=raw, context=context)
            )
        ]
