"""CMS50 simulator: the legacy 5-octet packet encoder (inverse of the decoder) and a model."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from drivers.protocols.cms50 import PER_SECOND, V7_REALTIME, V7_START, Packet, v7_packet

PACKETS_PER_OUTPUT = 6  # 60 Hz sent in bursts of 6 every 0.1 s, like a USB-serial bridge


def encode(p: Packet) -> bytes:
    """The 5 octets of a packet: octet 1 has bit 7 set, the others clear."""
    b1 = 0x80 | (p.beep << 6) | (p.spo2_dropping << 5) | (p.finger_out << 4) | (p.strength & 0x0F)
    b3 = ((p.pr >> 1) & 0x40) | (p.searching << 5) | (p.probe_error << 4) | (p.bar & 0x0F)
    return bytes([b1, p.pleth & 0x7F, b3, p.pr & 0x7F, p.spo2 & 0x7F])


@dataclass
class Cms50Model:
    """A finger in a CMS50D+: 60 packets a second (six per ``output()``), a pleth wave at the
    pulse rate, SpO2 and PR wandering once a second. ``searching`` seconds with zero values
    come first (the probe looking for a pulse). ``sent_values`` lists (SpO2, PR) per second
    with a finger in."""

    seed: int = 0
    searching: int = 0
    sent_values: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._spo2, self._pr, self._n = 97, 75, 0
        self._phase = 0.0

    @property
    def interval(self) -> float:
        return 0.1

    def receive(self, data: bytes) -> None:
        pass  # the legacy stream takes no commands

    def _next(self) -> Packet:
        second, tick = divmod(self._n, PER_SECOND)
        self._n += 1
        if second < self.searching:
            return Packet(0, 0, pleth=0, strength=0, bar=0, searching=True)
        if tick == 0:
            rng = self._rng
            self._spo2 = min(100, max(85, self._spo2 + rng.choice((-1, 0, 0, 1))))
            self._pr = min(180, max(45, self._pr + rng.choice((-2, 0, 2))))
            self.sent_values.append((self._spo2, self._pr))
        self._phase = (self._phase + self._pr / 60 / PER_SECOND) % 1.0
        pleth = round(64 + 50 * math.sin(2 * math.pi * self._phase))
        beep = self._phase < self._pr / 60 / PER_SECOND  # the wave wrapped: a beat
        return Packet(self._spo2, self._pr, pleth=pleth, bar=pleth >> 3, beep=beep)

    def output(self) -> bytes:
        return b"".join(encode(self._next()) for _ in range(PACKETS_PER_OUTPUT))


def encode_v7(p: Packet, pi: int = 0) -> bytes:
    """One V7.0 live-data packet (type 0x01) with the same fields (PI in 0.01 %)."""
    status = (p.beep << 6) | (p.spo2_dropping << 5) | (p.finger_out << 4) | (p.strength & 0x0F)
    flags = (p.searching << 5) | (p.probe_error << 4) | (p.bar & 0x0F)
    return v7_packet(
        V7_REALTIME,
        bytes(
            [status, p.pleth & 0x7F, flags, p.pr & 0xFF, p.spo2 & 0x7F, pi & 0xFF, pi >> 8 & 0xFF]
        ),
    )


@dataclass
class Cms50V7Model(Cms50Model):
    """The same finger on the V7.0 protocol: silent until the host's start command."""

    started: bool = False

    def receive(self, data: bytes) -> None:
        if V7_START in data:
            self.started = True

    def output(self) -> bytes:
        if not self.started:
            return b""
        return b"".join(encode_v7(self._next(), pi=250) for _ in range(PACKETS_PER_OUTPUT))
