"""Characteristic values as devices send them: encoders (the inverse of
``drivers.protocols.ble_health``) and a glucose meter's record store answering RACP requests.

Pure: bytes out, no clock, no I/O. Used by the round-trip tests, the BlueZ stand-in device
models and the demo. Values are numbers in the decoder's units (mm[Hg], Cel, mg/dL, kg, cm...)
or :class:`~drivers.protocols.ieee11073.Special` for the IEEE 11073 special values; a value
that the field's resolution cannot hold raises ValueError rather than send something else.
``when=`` and ``kg=`` are older spellings of ``time=`` and ``weight=`` (BlueZ stand-in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from drivers.protocols.ble_health import RACP_FILTER_SEQUENCE, RacpOp, RacpOperator
from drivers.protocols.ieee11073 import (
    Number,
    Special,
    encode_date_time,
    encode_float,
    encode_sfloat,
)

DateTime = tuple[int, int, int, int, int, int]  # year, month, day, hour, minute, second
Value = Number | Special


def sfloat(value: Value, exponent: int | None = None) -> bytes:
    """SFLOAT octets; ``exponent`` fixes the resolution (rounds), else the written one."""
    return encode_sfloat(value, exponent).to_bytes(2, "little")


def mder_float(value: Value, exponent: int | None = None) -> bytes:
    return encode_float(value, exponent).to_bytes(4, "little")


def _scaled(value: Value, power: int) -> Value:
    """``value`` × 10**power, exactly (mg/dL -> kg/L is power -5)."""
    if isinstance(value, Special):
        return value
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    return number.scaleb(power)


def _uint16(value: Number, step: str) -> bytes:
    """A fixed-point uint16 field (value / step, rounded as a device would)."""
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    count = int((number / Decimal(step)).quantize(Decimal(1), ROUND_HALF_EVEN))
    if not 0 <= count <= 0xFFFF:
        raise ValueError(f"{value!r} does not fit a uint16 of {step}")
    return count.to_bytes(2, "little")


def _time(time: DateTime | None, when: DateTime | None) -> DateTime | None:
    if time is not None and when is not None:
        raise ValueError("give time= or when=, not both")
    return time if time is not None else when


def _date_time(time: DateTime | None) -> bytes:
    return b"" if time is None else encode_date_time(*time)


def _flags(*bits: bool) -> int:
    return sum(1 << i for i, on in enumerate(bits) if on)


def encode_2a35(
    systolic: Value,
    diastolic: Value,
    mean: Value,
    unit: Literal["mmHg", "kPa"] = "mmHg",
    time: DateTime | None = None,
    pulse: Value | None = None,
    user: int | None = None,
    status: int | None = None,
    *,
    when: DateTime | None = None,
    raw_values: tuple[int, int, int] | None = None,
) -> bytes:
    """Blood Pressure Measurement. ``status`` is the 16-bit Measurement Status word;
    ``raw_values`` (SFLOAT words) replaces the three pressures when given."""
    time = _time(time, when)
    flags = _flags(
        unit == "kPa", time is not None, pulse is not None, user is not None, status is not None
    )
    words = (
        [w.to_bytes(2, "little") for w in raw_values]
        if raw_values is not None
        else [sfloat(systolic), sfloat(diastolic), sfloat(mean)]
    )
    out = bytes([flags]) + b"".join(words)
    out += _date_time(time)
    out += sfloat(pulse) if pulse is not None else b""
    out += bytes([user]) if user is not None else b""
    return out + (status.to_bytes(2, "little") if status is not None else b"")


def encode_2a36(
    cuff: Value,
    unit: Literal["mmHg", "kPa"] = "mmHg",
    time: DateTime | None = None,
    pulse: Value | None = None,
    user: int | None = None,
    status: int | None = None,
) -> bytes:
    """Intermediate Cuff Pressure: the current pressure; diastolic and MAP sent as NaN."""
    return encode_2a35(cuff, Special.NAN, Special.NAN, unit, time, pulse, user, status)


def encode_2a37(
    heart_rate: int,
    *,
    wide: bool | None = None,
    contact: int = 0,
    energy: int | None = None,
    rr: tuple[int, ...] = (),
) -> bytes:
    """Heart Rate Measurement. ``rr`` in 1/1024 s ticks; ``wide`` defaults to what the
    rate needs; ``contact`` is the 2-bit sensor-contact field (3 = detected)."""
    wide = heart_rate > 0xFF if wide is None else wide
    flags = _flags(wide, bool(contact & 1), bool(contact & 2), energy is not None, bool(rr))
    out = bytes([flags]) + heart_rate.to_bytes(2 if wide else 1, "little")
    out += energy.to_bytes(2, "little") if energy is not None else b""
    return out + b"".join(r.to_bytes(2, "little") for r in rr)


def encode_2a1c(
    temperature: Value,
    unit: Literal["Cel", "[degF]"] = "Cel",
    time: DateTime | None = None,
    site: int | None = None,
    *,
    exponent: int | None = None,
    when: DateTime | None = None,
) -> bytes:
    """Temperature Measurement (32-bit FLOAT); ``site`` is the Temperature Type code."""
    time = _time(time, when)
    flags = _flags(unit == "[degF]", time is not None, site is not None)
    out = bytes([flags]) + mder_float(temperature, exponent) + _date_time(time)
    return out + (bytes([site]) if site is not None else b"")


def encode_2a18(
    sequence: int,
    time: DateTime | None,
    concentration: Value | None = None,
    unit: Literal["mg/dL", "mmol/L"] = "mg/dL",
    sample_type: int = 1,
    location: int = 1,
    offset: int | None = None,
    status: int | None = None,
    context_follows: bool = False,
) -> bytes:
    """Glucose Measurement. ``time`` is the base time (None: unknown, zeros), ``offset`` the
    time offset in minutes, ``status`` the Sensor Status Annunciation word."""
    molar = unit == "mmol/L"
    flags = _flags(
        offset is not None, concentration is not None, molar, status is not None, context_follows
    )
    out = bytes([flags]) + sequence.to_bytes(2, "little")
    out += encode_date_time(*time) if time is not None else bytes(7)
    out += offset.to_bytes(2, "little", signed=True) if offset is not None else b""
    if concentration is not None:  # the wire unit is kg/L or mol/L
        out += sfloat(_scaled(concentration, -3 if molar else -5))
        out += bytes([location << 4 | sample_type])
    return out + (status.to_bytes(2, "little") if status is not None else b"")


def encode_2a34(
    sequence: int,
    *,
    carbohydrate: tuple[int, Value] | None = None,
    meal: int | None = None,
    tester: int | None = None,
    health: int | None = None,
    exercise: tuple[int, int] | None = None,
    medication: tuple[int, Value] | None = None,
    medication_unit: Literal["mg", "mL"] = "mg",
    hba1c: Value | None = None,
    extended: int | None = None,
) -> bytes:
    """Glucose Measurement Context. ``carbohydrate`` (id, grams), ``exercise`` (seconds,
    intensity %), ``medication`` (id, mg or mL); tester/health default to 15 (n/a)."""
    tester_health = tester is not None or health is not None
    flags = _flags(
        carbohydrate is not None,
        meal is not None,
        tester_health,
        exercise is not None,
        medication is not None,
        medication_unit == "mL",
        hba1c is not None,
        extended is not None,
    )
    out = bytes([flags]) + sequence.to_bytes(2, "little")
    out += bytes([extended]) if extended is not None else b""
    if carbohydrate is not None:
        out += bytes([carbohydrate[0]]) + sfloat(_scaled(carbohydrate[1], -3))  # g -> kg
    out += bytes([meal]) if meal is not None else b""
    if tester_health:
        out += bytes([(15 if health is None else health) << 4 | (15 if tester is None else tester)])
    if exercise is not None:
        out += exercise[0].to_bytes(2, "little") + bytes([exercise[1]])
    if medication is not None:
        power = -3 if medication_unit == "mL" else -6  # mL -> L, mg -> kg
        out += bytes([medication[0]]) + sfloat(_scaled(medication[1], power))
    return out + (sfloat(hba1c) if hba1c is not None else b"")


def encode_2a5e(
    spo2: Value,
    pulse: Value,
    time: DateTime | None = None,
    status: int | None = None,
    sensor: int | None = None,
    pai: Value | None = None,
    clock_not_set: bool = False,
    *,
    when: DateTime | None = None,
) -> bytes:
    """PLX Spot-check Measurement; ``status`` 16-bit, ``sensor`` 24-bit status words."""
    time = _time(time, when)
    flags = _flags(
        time is not None, status is not None, sensor is not None, pai is not None, clock_not_set
    )
    out = bytes([flags]) + sfloat(spo2) + sfloat(pulse) + _date_time(time)
    out += status.to_bytes(2, "little") if status is not None else b""
    out += sensor.to_bytes(3, "little") if sensor is not None else b""
    return out + (sfloat(pai) if pai is not None else b"")


def encode_2a5f(
    spo2: Value,
    pulse: Value,
    fast: tuple[Value, Value] | None = None,
    slow: tuple[Value, Value] | None = None,
    status: int | None = None,
    sensor: int | None = None,
    pai: Value | None = None,
) -> bytes:
    """PLX Continuous Measurement; ``fast``/``slow`` are (SpO2, PR) pairs."""
    flags = _flags(
        fast is not None, slow is not None, status is not None, sensor is not None, pai is not None
    )
    out = bytes([flags]) + sfloat(spo2) + sfloat(pulse)
    for pair in (fast, slow):
        out += sfloat(pair[0]) + sfloat(pair[1]) if pair is not None else b""
    out += status.to_bytes(2, "little") if status is not None else b""
    out += sensor.to_bytes(3, "little") if sensor is not None else b""
    return out + (sfloat(pai) if pai is not None else b"")


def _mass_step(unit: str) -> str:
    return "0.01" if unit == "[lb_av]" else "0.005"


def encode_2a9d(
    weight: Number | None = None,
    unit: Literal["kg", "[lb_av]"] = "kg",
    time: DateTime | None = None,
    user: int | None = None,
    bmi: Number | None = None,
    height: Number | None = None,
    *,
    when: DateTime | None = None,
) -> bytes:
    """Weight Measurement; ``weight`` None sends 0xFFFF (measurement unsuccessful); height
    in cm (SI) or [in_i] (imperial), sent with ``bmi``."""
    time = _time(time, when)
    if (bmi is None) != (height is None):
        raise ValueError("BMI and height travel together")
    flags = _flags(unit == "[lb_av]", time is not None, user is not None, bmi is not None)
    out = bytes([flags])
    out += b"\xff\xff" if weight is None else _uint16(weight, _mass_step(unit))
    out += _date_time(time) + (bytes([user]) if user is not None else b"")
    if bmi is not None and height is not None:
        out += _uint16(bmi, "0.1") + _uint16(height, "0.1")
    return out


def encode_2a9c(
    fat: Number | None,
    unit: Literal["kg", "[lb_av]"] = "kg",
    time: DateTime | None = None,
    user: int | None = None,
    *,
    basal_metabolism: int | None = None,
    muscle_percentage: Number | None = None,
    muscle_mass: Number | None = None,
    fat_free_mass: Number | None = None,
    soft_lean_mass: Number | None = None,
    body_water_mass: Number | None = None,
    impedance: Number | None = None,
    weight: Number | None = None,
    height: Number | None = None,
    multiple_packet: bool = False,
    kg: Number | None = None,
    when: DateTime | None = None,
) -> bytes:
    """Body Composition Measurement; ``fat`` None sends 0xFFFF (unsuccessful). Masses in
    ``unit``, height in cm or [in_i], basal metabolism in kJ, impedance in Ohm."""
    time = _time(time, when)
    if weight is not None and kg is not None:
        raise ValueError("give weight= or kg=, not both")
    weight = weight if weight is not None else kg
    mass = _mass_step(unit)
    fields: tuple[tuple[Number | None, str], ...] = (
        (basal_metabolism, "1"),
        (muscle_percentage, "0.1"),
        (muscle_mass, mass),
        (fat_free_mass, mass),
        (soft_lean_mass, mass),
        (body_water_mass, mass),
        (impedance, "0.1"),
        (weight, mass),
        (height, "0.1"),
    )
    flags = _flags(
        unit == "[lb_av]",
        time is not None,
        user is not None,
        *(v is not None for v, _ in fields),
        multiple_packet,
    )
    out = flags.to_bytes(2, "little")
    out += b"\xff\xff" if fat is None else _uint16(fat, "0.1")
    out += _date_time(time) + (bytes([user]) if user is not None else b"")
    return out + b"".join(_uint16(v, step) for v, step in fields if v is not None)


# --- A glucose meter's memory, answering RACP --------------------------------------------------
def _response(request: int, code: int) -> tuple[str, bytes]:
    return ("2a52", bytes([RacpOp.RESPONSE_CODE, RacpOperator.NULL, request, code]))


@dataclass
class GlucoseMeterRecords:
    """A GLS meter's stored records ``(sequence, mg/dL)`` answering RACP requests: the
    measurement notifications (and contexts with ``with_context``) then the response
    indication, in the order a meter sends them. Filters: sequence number only (GLS 0x01)."""

    records: list[tuple[int, float]] = field(default_factory=list)
    with_context: bool = False
    first_time: DateTime = (2026, 11, 1, 8, 0, 0)  # record n is taken n × 15 min later

    def add(self, mg_dl: float) -> int:
        seq = (self.records[-1][0] + 1) if self.records else 1
        self.records.append((seq, mg_dl))
        return seq

    def time_of(self, seq: int) -> DateTime:
        t = datetime(*self.first_time) + timedelta(minutes=15 * seq)
        return (t.year, t.month, t.day, t.hour, t.minute, t.second)

    def values_of(self, seq: int, mg_dl: float) -> list[tuple[str, bytes]]:
        out = [
            ("2a18", encode_2a18(seq, self.time_of(seq), mg_dl, context_follows=self.with_context))
        ]
        if self.with_context:
            out.append(("2a34", encode_2a34(seq, meal=1 + seq % 5, tester=1, health=5)))
        return out

    def _select(self, operator: int, operand: bytes) -> list[tuple[int, float]] | int:
        """The records an operator/operand pair selects, or a response code."""
        if operator in (RacpOperator.ALL, RacpOperator.FIRST, RacpOperator.LAST):
            if operand:
                return 5  # invalid operand
            if operator == RacpOperator.ALL or not self.records:
                return list(self.records)
            return [self.records[0 if operator == RacpOperator.FIRST else -1]]
        if operator == RacpOperator.NULL:
            return 3  # invalid operator
        if operator > RacpOperator.LAST:
            return 4  # operator not supported
        if not operand:
            return 5
        if operand[0] != RACP_FILTER_SEQUENCE:
            return 9  # operand not supported (user-facing-time filter)
        if len(operand) != (5 if operator == RacpOperator.WITHIN_RANGE else 3):
            return 5  # filter type + one uint16 (two for a range)
        low = high = int.from_bytes(operand[1:3], "little")
        if operator == RacpOperator.WITHIN_RANGE:
            high = int.from_bytes(operand[3:5], "little")
            if low > high:
                return 5
        elif operator == RacpOperator.LESS_OR_EQUAL:
            low = 0
        else:
            high = 0xFFFF
        return [r for r in self.records if low <= r[0] <= high]

    def handle_racp(self, request: bytes) -> list[tuple[str, bytes]]:
        """The notifications and the final indication a RACP request produces, in order."""
        op = request[0] if request else 0
        if op == RacpOp.ABORT:
            return [_response(op, 1 if request == bytes([3, 0]) else 3)]
        if op not in (RacpOp.REPORT_RECORDS, RacpOp.DELETE_RECORDS, RacpOp.REPORT_COUNT):
            return [_response(op, 2)]  # op code not supported
        if len(request) < 2:
            return [_response(op, 3)]
        chosen = self._select(request[1], request[2:])
        if isinstance(chosen, int):
            return [_response(op, chosen)]
        if op == RacpOp.REPORT_COUNT:
            count = bytes([RacpOp.COUNT_RESPONSE, RacpOperator.NULL])
            return [("2a52", count + len(chosen).to_bytes(2, "little"))]
        if not chosen:
            return [_response(op, 6)]  # no records found
        if op == RacpOp.DELETE_RECORDS:
            self.records = [r for r in self.records if r not in chosen]
            return [_response(op, 1)]
        values = [v for seq, mg in chosen for v in self.values_of(seq, mg)]
        return [*values, _response(op, 1)]
