"""CMS50 simulator: the legacy 5-octet packet encoder (inverse of the decoder) and a model."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def encode_packet(
    spo2: int, pr: int, *, pleth: int = 64, strength: int = 6, searching: bool = False,
    finger_out: bool = False, probe_error: bool = False, dropping: bool = False,
    beep: bool = False,
) -> bytes:
    b1 = 0x80 | (0x40 if beep else 0) | (0x20 if dropping else 0) | (0x10 if finger_out else 0)
    b1 |= strength & 0x0F
    b3 = ((pr >> 1) & 0x40) | (0x20 if searching else 0) | (0x10 if probe_error else 0) | 0x05
    return bytes([b1, pleth & 0x7F, b3, pr & 0x7F, spo2 & 0x7F])


@dataclass
class Cms50Model:
    """60 packets a second, sent 6 at a time every 0.1 s; ``sent_values`` per second."""

    seed: int = 0
    interval: float = 0.1
    sent_values: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._spo2, self._pr, self._n = 97, 75, 0

    def receive(self, data: bytes) -> None:
        pass

    def output(self) -> bytes:
        out = bytearray()
        for _ in range(6):
            if self._n % 60 == 0:
                self._spo2 = min(100, max(85, self._spo2 + self._rng.choice((-1, 0, 1))))
                self._pr = min(200, max(40, self._pr + self._rng.choice((-2, 0, 2))))
                self.sent_values.append((self._spo2, self._pr))
            out += encode_packet(self._spo2, self._pr, pleth=(self._n * 7) % 128)
            self._n += 1
        return bytes(out)
