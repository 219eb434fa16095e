"""Nonin oximeter simulator: pure encoders (the inverse of ``drivers.protocols.nonin``) and a model.

The encoders take the decoder's flag names, so ``decode(encode(v, flags))`` gives back ``v`` and
``flags``; the round-trip tests rely on that. Perfusion colour is put on every frame (a real
device sets it on the 12 frames around each pulse); the display and extended values in the
FLOAT octets mirror the recording values.

:class:`NoninModel` plays a patient with slowly varying SpO2 and pulse, deterministic from its
seed, and answers the data-format select command like the device: ACK alone, then data in the
new format; NAK for a format it does not have. (The real device accepts the command only in its
first 5 s after connection; the model always does.)
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from drivers.protocols.nonin import ACK, FORMATS, NAK, PACKET_FRAMES

# DF2/DF7 STATUS bits by flag; perfusion is the (RPRF, GPRF) pair, green when neither flag.
_STATUS_BITS: Final = {
    "sensor-disconnect": 0x40,
    "artifact": 0x20,
    "out-of-track": 0x10,
    "sensor-alarm": 0x08,
    "low-perfusion": 0x04,
    "marginal-perfusion": 0x06,
}
_STAT2_BITS: Final = {"smartpoint": 0x20, "low-battery": 0x01}
_DF8_STATUS_BITS: Final = {
    "out-of-track": 0x20,
    "low-perfusion": 0x10,
    "marginal-perfusion": 0x08,
    "artifact": 0x04,
}
_DF8_STATUS2_BITS: Final = {"smartpoint": 0x20, "sensor-alarm": 0x08, "low-battery": 0x01}
_DF13_MSB_BITS: Final = {"smartpoint": 0x02}
_DF13_LSB_BITS: Final = {"from-memory": 0x10, "low-battery": 0x01}
SELECT_PREFIX: Final = b"\x02\x70\x02\x02"


def _bits(flags: Iterable[str], *tables: dict[str, int]) -> list[int]:
    """One OR-ed octet per table; a flag no table knows is a caller bug."""
    out = [0] * len(tables)
    for flag in flags:
        hits = [i for i, table in enumerate(tables) if flag in table]
        if not hits:
            raise ValueError(f"flag {flag!r} cannot be encoded in this format")
        for i in hits:
            out[i] |= tables[i][flag]
    return out


def _packet_fields(spo2: int, hr: int, flags: Iterable[str]) -> tuple[int, list[int]]:
    flags = tuple(flags)
    status, stat2 = _bits(flags, _STATUS_BITS, _STAT2_BITS)
    if not status & 0x06:
        status |= 0x02  # green perfusion
    if "low-perfusion" in flags:
        status &= ~0x02  # red wins over yellow, as in the decoder
    floats = [0] * PACKET_FRAMES
    floats[0] = floats[13] = floats[19] = floats[21] = (hr >> 7) & 0x03  # HR, E-HR, HR-D, E-HR-D
    floats[1] = floats[14] = floats[20] = floats[22] = hr & 0x7F
    floats[2] = floats[8] = floats[9] = floats[10] = floats[15] = floats[16] = spo2
    floats[3] = 0x31  # SREV (firmware revision), arbitrary
    floats[7] = stat2
    return 0x80 | status, floats


def _frames(spo2: int, hr: int, flags: Iterable[str], fmt: int, pleth: Iterable[int]) -> bytes:
    status, floats = _packet_fields(spo2, hr, flags)
    waves = list(pleth)
    out = bytearray()
    for i, value in enumerate(floats):
        s = status | (0x01 if i == 0 else 0x00)
        wave = waves[i % len(waves)]
        head = [0x01, s, wave & 0xFF] if fmt == 2 else [s, (wave >> 8) & 0xFF, wave & 0xFF]
        frame = [*head, value]
        out += bytes([*frame, sum(frame) & 0xFF])
    return bytes(out)


def encode_df2_packet(
    spo2: int, hr: int, flags: Iterable[str] = (), *, pleth: Iterable[int] = (128,)
) -> bytes:
    """25 frames ``01 STATUS PLETH FLOAT CHK``; ``pleth`` values are cycled over the frames."""
    return _frames(spo2, hr, flags, 2, pleth)


def encode_df7_packet(
    spo2: int, hr: int, flags: Iterable[str] = (), *, pleth: Iterable[int] = (30000,)
) -> bytes:
    """25 frames ``STATUS PLETH_MSB PLETH_LSB FLOAT CHK`` (16-bit pleth)."""
    return _frames(spo2, hr, flags, 7, pleth)


def encode_df8_frame(spo2: int, hr: int, flags: Iterable[str] = ()) -> bytes:
    status, status2 = _bits(flags, _DF8_STATUS_BITS, _DF8_STATUS2_BITS)
    return bytes([0x80 | status | ((hr >> 7) & 0x03), hr & 0x7F, spo2, status2])


def _to_bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


def encode_df13_packet(
    spo2: int,
    hr: int,
    when: tuple[int, int, int, int, int, int],
    flags: Iterable[str] = (),
    *,
    no_measurement: bool = False,
    extra: bytes = b"",
) -> bytes:
    """A spot check stamped ``when`` = (year, month, day, hour, minute, second).

    ``extra`` appends data octets past the 14 known ones (the data section is expandable).
    """
    year, month, day, hour, minute, second = when
    msb, lsb = _bits(flags, _DF13_MSB_BITS, _DF13_LSB_BITS)
    stamp = [year // 100, year % 100, month, day, hour, minute, second]
    data = (
        bytes(
            [
                *(_to_bcd(v) for v in stamp),
                0x00,
                msb | (0x01 if no_measurement else 0x00),
                lsb,
                (hr >> 8) & 0x01,
                hr & 0xFF,
                0x00,
                spo2,
            ]
        )
        + extra
    )
    return (
        b"\x00\x02\x00\x0d" + len(data).to_bytes(2, "big") + data + bytes([sum(data) & 0xFF, 0x03])
    )


class NoninModel:
    """A Nonin oximeter on a finger; ``sent_values`` lists every (spo2, hr) it sent, in order."""

    def __init__(self, data_format: int, seed: int = 0) -> None:
        if data_format not in FORMATS:
            raise ValueError(f"data format must be one of {FORMATS}, not {data_format!r}")
        self.data_format = data_format
        self.sent_values: list[tuple[int, int]] = []
        self._rng = random.Random(seed)
        self._spo2 = self._rng.randint(94, 99)
        self._hr = self._rng.randint(60, 90)
        self._phase = 0
        self._reply = bytearray()
        self._rx = bytearray()
        self._clock = datetime(2026, 11, 23, 8, 0, 0)  # the device's own clock (DF13 stamps)

    @property
    def interval(self) -> float:
        return {2: 1 / 3, 7: 1 / 3, 8: 1.0, 13: 5.0}[self.data_format]

    def receive(self, data: bytes) -> None:
        self._rx += data
        while True:
            start = self._rx.find(SELECT_PREFIX)
            if start < 0:
                del self._rx[: max(0, len(self._rx) - len(SELECT_PREFIX) + 1)]
                return
            del self._rx[:start]
            if len(self._rx) < 6:
                return
            fmt, end = self._rx[4], self._rx[5]
            del self._rx[:6]
            if end == 0x03 and fmt in FORMATS:
                self._reply.append(ACK)
                self.data_format = fmt
            else:
                self._reply.append(NAK)

    def _step(self) -> tuple[int, int]:
        # A bounded random walk: SpO2 drifts by at most 1 %, pulse by at most 2 /min.
        self._spo2 = min(100, max(88, self._spo2 + self._rng.choice((-1, 0, 0, 0, 1))))
        self._hr = min(180, max(45, self._hr + self._rng.choice((-2, -1, 0, 0, 1, 2))))
        self.sent_values.append((self._spo2, self._hr))
        return self._spo2, self._hr

    def _pleth(self) -> list[int]:
        # One pulse-shaped cycle per beat; the phase carries over between packets.
        per_beat = max(1, round(75 * 60 / self._hr))  # 75 frames/s
        waves = []
        for _ in range(PACKET_FRAMES):
            self._phase = (self._phase + 1) % per_beat
            waves.append(round(200 - 150 * self._phase / per_beat))
        return waves

    def output(self) -> bytes:
        if self._reply:
            reply, self._reply = bytes(self._reply), bytearray()
            return reply  # the reply goes out alone, before any data in the new format
        spo2, hr = self._step()
        if self.data_format == 2:
            return encode_df2_packet(spo2, hr, pleth=self._pleth())
        if self.data_format == 7:
            return encode_df7_packet(spo2, hr, pleth=[w * 150 for w in self._pleth()])
        if self.data_format == 8:
            return encode_df8_frame(spo2, hr)
        self._clock += timedelta(seconds=5)
        c = self._clock
        when = (c.year, c.month, c.day, c.hour, c.minute, c.second)
        return encode_df13_packet(spo2, hr, when, ("smartpoint",))
