"""Nonin oximeter simulator: encoders (inverse of ``drivers.protocols.nonin``) and a model.

The encoders are pure and used by the round-trip tests; :class:`NoninModel` plays a patient
with slowly varying SpO2 and pulse on a pty, deterministic from its seed, and answers the
data-format select command like the device (ACK, then the new format).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from drivers.protocols.nonin import ACK, FORMATS, NAK

STATUS_BITS = {
    "sensor-disconnect": 0x40,
    "artifact": 0x20,
    "out-of-track": 0x10,
    "sensor-alarm": 0x08,
    "marginal-perfusion": 0x06,
    "low-perfusion": 0x04,
}


def _status(flags: tuple[str, ...], sync: bool) -> int:
    status = 0x80 | (0x01 if sync else 0x00)
    for flag in flags:
        status |= STATUS_BITS.get(flag, 0)
    if not status & 0x06:
        status |= 0x02  # green perfusion
    return status


def _floats(spo2: int, hr: int, low_battery: bool, smartpoint: bool) -> list[int]:
    floats = [0] * 25
    floats[0] = (hr >> 7) & 0x03
    floats[1] = hr & 0x7F
    floats[2] = spo2 & 0x7F
    floats[7] = (0x20 if smartpoint else 0) | (0x01 if low_battery else 0)
    floats[8] = spo2 & 0x7F  # display values mirror the recording values here
    floats[19] = (hr >> 7) & 0x03
    floats[20] = hr & 0x7F
    return floats


def encode_df2_packet(
    spo2: int, hr: int, flags: tuple[str, ...] = (), pleth: int = 100,
    *, low_battery: bool = False, smartpoint: bool = False,
) -> bytes:
    out = bytearray()
    for i, value in enumerate(_floats(spo2, hr, low_battery, smartpoint)):
        frame = [0x01, _status(flags, i == 0), pleth & 0xFF, value]
        out += bytes([*frame, sum(frame) & 0xFF])
    return bytes(out)


def encode_df7_packet(
    spo2: int, hr: int, flags: tuple[str, ...] = (), pleth: int = 30000,
    *, low_battery: bool = False, smartpoint: bool = False,
) -> bytes:
    out = bytearray()
    for i, value in enumerate(_floats(spo2, hr, low_battery, smartpoint)):
        frame = [_status(flags, i == 0), (pleth >> 8) & 0xFF, pleth & 0xFF, value]
        out += bytes([*frame, sum(frame) & 0xFF])
    return bytes(out)


def encode_df8_frame(
    spo2: int, hr: int, *, artifact: bool = False, low_battery: bool = False
) -> bytes:
    status = 0x80 | (0x04 if artifact else 0) | ((hr >> 7) & 0x03)
    return bytes([status, hr & 0x7F, spo2 & 0x7F, 0x01 if low_battery else 0x00])


def _to_bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


def encode_df13_packet(
    spo2: int, hr: int, when: tuple[int, int, int, int, int, int],
    *, from_memory: bool = False, no_measurement: bool = False,
) -> bytes:
    year, month, day, hour, minute, second = when
    data = bytes(
        [_to_bcd(year // 100), _to_bcd(year % 100), _to_bcd(month), _to_bcd(day),
         _to_bcd(hour), _to_bcd(minute), _to_bcd(second), 0x00,
         0x01 if no_measurement else 0x00, 0x10 if from_memory else 0x00,
         (hr >> 8) & 0x01, hr & 0xFF, 0x00, spo2 & 0x7F]
    )
    return b"\x00\x02\x00\x0d" + len(data).to_bytes(2, "big") + data + bytes(
        [sum(data) & 0xFF, 0x03]
    )


@dataclass
class NoninModel:
    """A Nonin oximeter on a finger. ``sent_values`` lists every (spo2, hr) sent."""

    data_format: int = 2
    seed: int = 0
    sent_values: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.data_format not in FORMATS:
            raise ValueError(f"data format must be one of {FORMATS}")
        self._rng = random.Random(self.seed)
        self._spo2 = 97
        self._hr = 72
        self._reply = b""
        self._clock = (2026, 11, 23, 8, 0, 0)
        self._rx = bytearray()

    @property
    def interval(self) -> float:
        return {2: 1 / 3, 7: 1 / 3, 8: 1.0, 13: 5.0}[self.data_format]

    def receive(self, data: bytes) -> None:
        self._rx += data
        while len(self._rx) >= 6:
            start = self._rx.find(b"\x02\x70\x02\x02")
            if start < 0:
                del self._rx[:-3]
                return
            del self._rx[:start]
            if len(self._rx) < 6:
                return
            fmt, end = self._rx[4], self._rx[5]
            del self._rx[:6]
            if end == 0x03 and fmt in FORMATS:
                self._reply += bytes([ACK])
                self.data_format = fmt
            else:
                self._reply += bytes([NAK])

    def _step(self) -> tuple[int, int]:
        self._spo2 = min(100, max(88, self._spo2 + self._rng.choice((-1, 0, 0, 1))))
        self._hr = min(180, max(45, self._hr + self._rng.choice((-2, -1, 0, 1, 2))))
        self.sent_values.append((self._spo2, self._hr))
        return self._spo2, self._hr

    def output(self) -> bytes:
        reply, self._reply = self._reply, b""
        if reply:
            return reply  # the ACK goes out alone, before any data in the new format
        spo2, hr = self._step()
        if self.data_format == 2:
            return encode_df2_packet(spo2, hr)
        if self.data_format == 7:
            return encode_df7_packet(spo2, hr)
        if self.data_format == 8:
            return encode_df8_frame(spo2, hr)
        y, mo, d, h, mi, s = self._clock
        s += 5
        mi, s = mi + s // 60, s % 60
        h, mi = h + mi // 60, mi % 60
        self._clock = (y, mo, d, h % 24, mi, s)
        return encode_df13_packet(spo2, hr, self._clock)
