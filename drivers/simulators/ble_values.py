"""Characteristic values as devices send them: encoders (the inverse of
``drivers.protocols.ble_health``) and a glucose meter's record store answering RACP requests.
Used by the round-trip tests, the BlueZ stand-in device models and the demo."""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.protocols.ieee11073 import encode_date_time, encode_float32, encode_sfloat

Time = tuple[int, int, int, int, int, int]


def sf(value: float, exponent: int = 0) -> bytes:
    """SFLOAT with a fixed exponent (the device's resolution)."""
    return encode_sfloat(round(value / 10**exponent), exponent).to_bytes(2, "little")


def fl(value: float, exponent: int = -2) -> bytes:
    return encode_float32(round(value / 10**exponent), exponent).to_bytes(4, "little")


def _time(when: Time | None) -> bytes:
    return b"" if when is None else encode_date_time(*when)


def encode_2a35(systolic: float, diastolic: float, mean: float, *, kpa: bool = False,
                when: Time | None = None, pulse: float | None = None, user: int | None = None,
                status: int | None = None, raw_values: tuple[int, int, int] | None = None,
                ) -> bytes:
    flags = (0x01 if kpa else 0) | (0x02 if when else 0) | (0x04 if pulse is not None else 0)
    flags |= (0x08 if user is not None else 0) | (0x10 if status is not None else 0)
    exp = -1 if kpa else 0
    body = (b"".join(v.to_bytes(2, "little") for v in raw_values) if raw_values else
            sf(systolic, exp) + sf(diastolic, exp) + sf(mean, exp))
    out = bytes([flags]) + body + _time(when)
    if pulse is not None:
        out += sf(pulse)
    if user is not None:
        out += bytes([user])
    if status is not None:
        out += status.to_bytes(2, "little")
    return out


def encode_2a37(hr: int, *, wide: bool = False, contact: int = 0, energy: int | None = None,
                rr: tuple[int, ...] = ()) -> bytes:
    flags = (0x01 if wide else 0) | (contact << 1) | (0x08 if energy is not None else 0)
    flags |= 0x10 if rr else 0
    out = bytes([flags]) + hr.to_bytes(2 if wide else 1, "little")
    if energy is not None:
        out += energy.to_bytes(2, "little")
    return out + b"".join(r.to_bytes(2, "little") for r in rr)


def encode_2a1c(temperature: float, *, fahrenheit: bool = False, when: Time | None = None,
                site: int | None = None) -> bytes:
    flags = (0x01 if fahrenheit else 0) | (0x02 if when else 0) | (0x04 if site else 0)
    return bytes([flags]) + fl(temperature) + _time(when) + (bytes([site]) if site else b"")


def encode_2a18(seq: int, when: Time, *, mg_dl: float | None = None,
                mmol_l: float | None = None, offset_min: int | None = None, sample: int = 1,
                location: int = 1, ssa: int | None = None, context_follows: bool = False,
                ) -> bytes:
    flags = (0x01 if offset_min is not None else 0) | (0x08 if ssa is not None else 0)
    flags |= 0x10 if context_follows else 0
    out = bytearray()
    if mg_dl is not None:
        flags |= 0x02
        conc = encode_sfloat(round(mg_dl), -5).to_bytes(2, "little")  # kg/L = mg/dL x 1e-5
        out += conc + bytes([(location << 4) | sample])
    elif mmol_l is not None:
        flags |= 0x02 | 0x04
        out += encode_sfloat(round(mmol_l * 10), -4).to_bytes(2, "little")
        out += bytes([(location << 4) | sample])
    head = bytes([flags]) + seq.to_bytes(2, "little") + encode_date_time(*when)
    if offset_min is not None:
        head += offset_min.to_bytes(2, "little", signed=True)
    return head + bytes(out) + (ssa.to_bytes(2, "little") if ssa is not None else b"")


def encode_2a34(seq: int, *, meal: int | None = None, hba1c: float | None = None) -> bytes:
    flags = (0x02 if meal else 0) | (0x40 if hba1c is not None else 0)
    out = bytes([flags]) + seq.to_bytes(2, "little") + (bytes([meal]) if meal else b"")
    return out + (sf(hba1c, -1) if hba1c is not None else b"")


def encode_2a5e(spo2: float, pr: float, *, when: Time | None = None,
                status: int | None = None, sensor: int | None = None,
                pai: float | None = None, clock_not_set: bool = False) -> bytes:
    flags = (0x01 if when else 0) | (0x02 if status is not None else 0)
    flags |= (0x04 if sensor is not None else 0) | (0x08 if pai is not None else 0)
    flags |= 0x10 if clock_not_set else 0
    out = bytes([flags]) + sf(spo2) + sf(pr) + _time(when)
    out += status.to_bytes(2, "little") if status is not None else b""
    out += sensor.to_bytes(3, "little") if sensor is not None else b""
    return out + (sf(pai, -1) if pai is not None else b"")


def encode_2a5f(spo2: float, pr: float, *, pai: float | None = None) -> bytes:
    flags = 0x10 if pai is not None else 0
    return bytes([flags]) + sf(spo2) + sf(pr) + (sf(pai, -1) if pai is not None else b"")


def encode_2a9d(kg: float, *, when: Time | None = None, user: int | None = None,
                bmi: float | None = None, height_cm: float | None = None) -> bytes:
    flags = (0x02 if when else 0) | (0x04 if user is not None else 0)
    flags |= 0x08 if bmi is not None else 0
    out = bytes([flags]) + round(kg / 0.005).to_bytes(2, "little") + _time(when)
    out += bytes([user]) if user is not None else b""
    if bmi is not None and height_cm is not None:
        out += round(bmi * 10).to_bytes(2, "little") + round(height_cm * 10).to_bytes(2, "little")
    return out


def encode_2a9c(fat_percent: float, *, kg: float | None = None,
                height_cm: float | None = None) -> bytes:
    flags = (0x0400 if kg is not None else 0) | (0x0800 if height_cm is not None else 0)
    out = flags.to_bytes(2, "little") + round(fat_percent * 10).to_bytes(2, "little")
    out += round(kg / 0.005).to_bytes(2, "little") if kg is not None else b""
    return out + (round(height_cm * 10).to_bytes(2, "little") if height_cm is not None else b"")


@dataclass
class GlucoseMeterRecords:
    """A meter's memory: ``(sequence, mg/dL)`` records, answering RACP like GLS 1.0."""

    records: list[tuple[int, float]] = field(default_factory=list)
    with_context: bool = False

    def add(self, mg_dl: float) -> int:
        seq = (self.records[-1][0] + 1) if self.records else 1
        self.records.append((seq, mg_dl))
        return seq

    def _value(self, seq: int, mg_dl: float) -> list[tuple[str, bytes]]:
        when = (2026, 11, 1 + seq % 28, 8, seq % 60, 0)
        out = [("2a18", encode_2a18(seq, when, mg_dl=mg_dl, context_follows=self.with_context))]
        if self.with_context:
            out.append(("2a34", encode_2a34(seq, meal=1 + seq % 5)))
        return out

    def handle_racp(self, request: bytes) -> list[tuple[str, bytes]]:
        """The notifications and the final indication a request produces, in order."""
        op = request[0] if request else 0
        if op in (0x01, 0x04):
            if request[1:2] == b"\x01":
                chosen = self.records
            elif request[1:3] == b"\x03\x01" and len(request) == 5:
                start = int.from_bytes(request[3:5], "little")
                chosen = [r for r in self.records if r[0] >= start]
            else:
                return [("2a52", bytes([0x06, 0x00, op, 0x03]))]  # invalid operator
            if op == 0x04:
                return [("2a52", b"\x05\x00" + len(chosen).to_bytes(2, "little"))]
            if not chosen:
                return [("2a52", bytes([0x06, 0x00, 0x01, 0x06]))]  # no records found
            values = [v for seq, mg in chosen for v in self._value(seq, mg)]
            return [*values, ("2a52", bytes([0x06, 0x00, 0x01, 0x01]))]
        if op == 0x03:
            return [("2a52", bytes([0x06, 0x00, 0x03, 0x01]))]
        return [("2a52", bytes([0x06, 0x00, op, 0x02]))]  # op code not supported
