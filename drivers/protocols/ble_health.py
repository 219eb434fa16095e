"""Bluetooth SIG health profiles, sans-I/O: one decoder per characteristic value, the Record
Access Control Point (RACP), a glucose-meter download and a plain notify/indicate decoder.

Facts: ``docs/protocols.md`` §2 (GSS field tables), codes §9, FHIR mapping §10.

Every ``decode_XXXX(value) -> list[Event]`` is pure and total:

- Fields are little-endian; optional fields follow in table order when their flag is set.
- A value that is too short (``truncated``), has octets left over (``too-long``), sets RFU
  flag bits (``rfu-flags``: the layout is then unknown) or has an odd RR-interval tail
  (``rr-odd-length``) becomes ``Rejected(value, reason)`` with the whole characteristic value.
- IEEE 11073 special values give a Measurement with ``value=None`` and the PHD IG
  ``absent_reason`` (not-a-number, error, positive-infinity, negative-infinity); so does a
  scale's "measurement unsuccessful" (0xFFFF; ``error`` + flag ``measurement-unsuccessful``).
- Reserved, impossible and RFU values follow :mod:`drivers.protocols.policy`: RFU *values* inside a
  defined field are named ``reserved-<n>``; a temperature type 12 keeps its reading, a glucose
  sample type or location 0/11-14 withholds the number (``reserved-value``: it may be a control
  solution); RFU bits of status words are ignored (the raw value is kept on every
  Measurement); values outside the catalogue's physical ``limits`` are withheld
  (``impossible-value``), and so is a heart rate the sensor reports without skin contact
  (``no-sensor-contact``).
- An impossible Date Time keeps the reading without ``device_time`` and flags
  ``bad-device-time``; an unknown one (year/month/day 0) just has no ``device_time``.

Intermediate Cuff Pressure (0x2A36) decodes to ``cuff_pressure`` flagged ``intermediate``: it
is the live pressure while the cuff inflates, not a reading; Intermediate Temperature (0x2A1E)
likewise decodes to ``body_temperature`` flagged ``intermediate``. A caller may show it as progress
but must not store or forward it; the agent's BLE kinds do not subscribe to 0x2A36 and wait
for the final 0x2A35 indication.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum, IntEnum
from functools import wraps
from typing import Final

from drivers.base import (
    DecoderMisuse,
    DeviceFacts,
    DeviceInfo,
    Event,
    GattWrite,
    MessageComplete,
    Rejected,
    eui64,
    fact,
    source_key,
)
from drivers.protocols.ieee11073 import MderValue, decode_date_time, decode_float, decode_sfloat
from drivers.protocols.policy import checked, withheld
from edge_agent.catalogue import loinc_for
from edge_agent.models import Measurement, measurement

Context = tuple[tuple[str, str], ...]
Decoder = Callable[[bytes], list[Event]]


class _Bad(Exception):
    """A value that cannot be read as its characteristic; becomes ``Rejected``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Bad("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def s16(self) -> int:
        return int.from_bytes(self.take(2), "little", signed=True)

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "little")

    def sfloat(self) -> MderValue:
        return decode_sfloat(self.u16())

    def float32(self) -> MderValue:
        return decode_float(int.from_bytes(self.take(4), "little"))

    def left(self) -> int:
        return len(self.data) - self.pos

    def end(self) -> None:
        if self.pos != len(self.data):
            raise _Bad("too-long")


@dataclass(frozen=True, slots=True)
class _Time:
    iso: str | None
    flags: tuple[str, ...] = ()


_NO_TIME: Final = _Time(None)


def _time(octets: bytes) -> _Time:
    try:
        return _Time(decode_date_time(octets))
    except ValueError:
        return _Time(None, ("bad-device-time",))


def _flags8(r: _Reader, used_bits: int) -> int:
    flags = r.u8()
    if flags >> used_bits:
        raise _Bad("rfu-flags")
    return flags


def _bits(value: int, names: tuple[tuple[int, str], ...]) -> tuple[str, ...]:
    return tuple(name for bit, name in names if value >> bit & 1)


def _text(value: Decimal) -> str:
    return format(value, "f")


def _mder_text(v: MderValue, power: int = 0, unit: str = "") -> str:
    """A context value: the number at the device's precision, or the absent reason."""
    scaled = v.scaled(power)
    if scaled is None:
        return v.absent_reason or "error"
    return f"{_text(scaled)} {unit}".rstrip()


def _user(raw: int) -> Context:
    return (("user", "unknown" if raw == 255 else str(raw)),)


def _named(table: dict[int, str], raw: int) -> str:
    return table.get(raw, f"reserved-{raw}")


def _mder(
    key: str,
    v: MderValue,
    unit: str,
    raw: bytes,
    *,
    power: int = 0,
    time: _Time = _NO_TIME,
    flags: tuple[str, ...] = (),
    context: Context = (),
    loinc: str | None = None,
) -> Measurement:
    scaled = v.scaled(power)
    return checked(
        measurement(
            key,
            None if scaled is None else float(scaled),
            unit,
            loinc=loinc,
            device_time=time.iso,
            flags=time.flags + flags,
            absent_reason=v.absent_reason,
            raw=raw,
            context=context,
        )
    )


def _fixed(
    key: str,
    count: int,
    step: str,
    unit: str,
    raw: bytes,
    *,
    time: _Time = _NO_TIME,
    flags: tuple[str, ...] = (),
    context: Context = (),
) -> Measurement:
    """A uint16 fixed-point field (``count`` × ``step``); 0xFFFF where the GSS says
    "measurement unsuccessful" is handled by the caller."""
    return checked(
        measurement(
            key,
            float(count * Decimal(step)),
            unit,
            device_time=time.iso,
            flags=time.flags + flags,
            raw=raw,
            context=context,
        )
    )


def _unsuccessful(key: str, unit: str, raw: bytes, time: _Time, context: Context) -> Measurement:
    return measurement(
        key,
        None,
        unit,
        device_time=time.iso,
        flags=(*time.flags, "measurement-unsuccessful"),
        absent_reason="error",
        raw=raw,
        context=context,
    )


def _total(decode: Decoder) -> Decoder:
    """Turn a decoder's ``_Bad`` into ``Rejected`` with the whole characteristic value."""

    @wraps(decode)
    def run(value: bytes) -> list[Event]:
        data = bytes(value)  # bleak hands bytearray
        try:
            return decode(data)
        except _Bad as bad:
            return [Rejected(data, bad.reason)]

    return run


# --- Blood pressure 0x2A35 / intermediate cuff pressure 0x2A36 ------------------------------
BP_STATUS: Final = (
    (0, "body-movement"),
    (1, "cuff-too-loose"),
    (2, "irregular-pulse"),
    (5, "improper-position"),
)
_PULSE_RANGE: Final = {1: "pulse-rate-above-range", 2: "pulse-rate-below-range"}  # 3 is RFU
# The catalogue's pulse_rate code is the oximeter's; a cuff's pulse is non-invasive (§9).
MDC_PULS_RATE_NON_INV: Final = 149546


@dataclass(frozen=True, slots=True)
class _Bp:
    unit: str
    values: tuple[MderValue, MderValue, MderValue]
    time: _Time
    pulse: MderValue | None
    flags: tuple[str, ...]
    context: Context


def _bp(value: bytes) -> _Bp:
    r = _Reader(value)
    flags = _flags8(r, 5)
    unit = "kPa" if flags & 0x01 else "mm[Hg]"
    values = (r.sfloat(), r.sfloat(), r.sfloat())
    time = _time(r.take(7)) if flags & 0x02 else _NO_TIME
    pulse = r.sfloat() if flags & 0x04 else None
    context = _user(r.u8()) if flags & 0x08 else ()
    status: tuple[str, ...] = ()
    if flags & 0x10:
        word = r.u16()
        status = _bits(word, BP_STATUS)
        rate = _PULSE_RANGE.get(word >> 3 & 0x03)
        status += (rate,) if rate else ()
    r.end()
    return _Bp(unit, values, time, pulse, status, context)


@_total
def decode_2a35(value: bytes) -> list[Event]:
    """Blood Pressure Measurement: systolic, diastolic, MAP (mm[Hg] or kPa), pulse rate."""
    bp = _bp(value)
    keys = ("systolic_bp", "diastolic_bp", "mean_arterial_pressure")
    events: list[Event] = [
        _mder(key, v, bp.unit, value, time=bp.time, flags=bp.flags, context=bp.context)
        for key, v in zip(keys, bp.values, strict=True)
    ]
    if bp.pulse is not None:
        pulse = _mder(
            "pulse_rate", bp.pulse, "/min", value, time=bp.time, flags=bp.flags, context=bp.context
        )
        events.append(replace(pulse, mdc=MDC_PULS_RATE_NON_INV))
    return events


@_total
def decode_2a36(value: bytes) -> list[Event]:
    """Intermediate Cuff Pressure: the current cuff pressure (systolic slot), flagged
    ``intermediate``; live progress only, never a reading (see the module docstring)."""
    bp = _bp(value)  # diastolic and MAP slots are unused (NaN) and ignored
    events: list[Event] = [
        _mder(
            "cuff_pressure",
            bp.values[0],
            bp.unit,
            value,
            time=bp.time,
            flags=("intermediate", *bp.flags),
            context=bp.context,
        )
    ]
    if bp.pulse is not None:
        pulse = _mder(
            "pulse_rate",
            bp.pulse,
            "/min",
            value,
            time=bp.time,
            flags=("intermediate", *bp.flags),
            context=bp.context,
        )
        events.append(replace(pulse, mdc=MDC_PULS_RATE_NON_INV))
    return events


# --- Heart rate 0x2A37 -----------------------------------------------------------------------
_CONTACT: Final = {2: "not-detected", 3: "detected"}  # 0 and 1: contact detection unsupported


@_total
def decode_2a37(value: bytes) -> list[Event]:
    """Heart Rate Measurement: HR (uint8/uint16), energy expended (kJ, 0xFFFF = saturated),
    RR intervals (1/1024 s each -> ``rr_interval`` in s, oldest first)."""
    r = _Reader(value)
    flags = _flags8(r, 5)
    hr = r.u16() if flags & 0x01 else r.u8()
    contact = _CONTACT.get(flags >> 1 & 0x03)
    context: Context = (("sensor-contact", contact),) if contact else ()
    heart = measurement("heart_rate", float(hr), raw=value, context=context)
    if contact == "not-detected" or (hr == 0 and contact is None):
        heart = withheld(heart, "no-sensor-contact")  # not a measurement (policy.py)
    events: list[Event] = [checked(heart)]
    if flags & 0x08:
        energy = r.u16()
        events.append(
            checked(
                measurement(
                    "energy_expended",
                    float(energy),
                    raw=value,
                    flags=("saturated",) if energy == 0xFFFF else (),
                )
            )
        )
    if flags & 0x10:
        if r.left() == 0:
            raise _Bad("truncated")
        if r.left() % 2:
            raise _Bad("rr-odd-length")
        while r.left():
            rr = measurement("rr_interval", float(Decimal(r.u16()) / 1024), raw=value)
            events.append(checked(rr))
    r.end()
    return events


# --- Temperature 0x2A1C ----------------------------------------------------------------------
TEMPERATURE_TYPES: Final = {
    1: "armpit",
    2: "body",
    3: "ear",
    4: "finger",
    5: "gastro-intestinal-tract",
    6: "mouth",
    7: "rectum",
    8: "toe",
    9: "tympanum",
}
# MDC code by site (§9: MDC_TEMP_AXILLA, _EAR, _FINGER, _GIT, _ORAL, _RECT, _TOE, _TYMP);
# "body" and reserved types keep the catalogue's MDC_TEMP_BODY.
_TEMPERATURE_MDC: Final = {
    1: 188452,
    3: 188428,
    4: 188432,
    5: 188456,
    6: 188424,
    7: 188420,
    8: 188448,
    9: 150392,
}


@_total
def decode_2a1c(value: bytes) -> list[Event]:
    """Temperature Measurement: 32-bit FLOAT in Cel or [degF]; type (site) in context."""
    r = _Reader(value)
    flags = _flags8(r, 3)
    reading = r.float32()
    time = _time(r.take(7)) if flags & 0x02 else _NO_TIME
    site = r.u8() if flags & 0x04 else None
    r.end()
    unit = "[degF]" if flags & 0x01 else "Cel"
    context: Context = (("site", _named(TEMPERATURE_TYPES, site)),) if site is not None else ()
    m = _mder("body_temperature", reading, unit, value, time=time, context=context)
    mdc = _TEMPERATURE_MDC.get(site) if site is not None else None
    return [replace(m, mdc=mdc) if mdc else m]


@_total
def decode_2a1e(value: bytes) -> list[Event]:
    """Intermediate Temperature: the 0x2A1C layout while the thermometer is still measuring;
    flagged ``intermediate`` (live progress only, never a reading, like 0x2A36)."""
    return [
        replace(e, flags=("intermediate", *e.flags)) if isinstance(e, Measurement) else e
        for e in decode_2a1c(value)
    ]


# --- Glucose 0x2A18 + context 0x2A34 ---------------------------------------------------------
SAMPLE_TYPES: Final = {
    1: "capillary-whole-blood",
    2: "capillary-plasma",
    3: "venous-whole-blood",
    4: "venous-plasma",
    5: "arterial-whole-blood",
    6: "arterial-plasma",
    7: "undetermined-whole-blood",
    8: "undetermined-plasma",
    9: "interstitial-fluid",
    10: "control-solution",
}
SAMPLE_LOCATIONS: Final = {
    1: "finger",
    2: "alternate-site-test",
    3: "earlobe",
    4: "control-solution",
    15: "not-available",
}
GLUCOSE_STATUS: Final = (  # Sensor Status Annunciation bits
    (0, "low-battery"),
    (1, "sensor-malfunction"),
    (2, "sample-size-insufficient"),
    (3, "strip-insertion-error"),
    (4, "strip-type-incorrect"),
    (5, "above-measuring-range"),
    (6, "below-measuring-range"),
    (7, "temperature-too-high"),
    (8, "temperature-too-low"),
    (9, "strip-pulled-too-soon"),
    (10, "device-fault"),
    (11, "time-fault"),
)
# The LOINC follows sample type × unit (catalogue ``glucose.loinc_by``: capillary blood by
# glucometer 41653-7 / 14743-9, venous blood, arterial blood, plasma, interstitial fluid...);
# a reserved sample type takes the undetermined whole-blood code (blood, 2339-0 / 15074-8).
# Control solution is quality control, not a patient sample: flag "control", no LOINC.
GLUCOSE_MOLAR_LOINC: Final = "14743-9"
# MDC_CONC_GLU_* by sample type (§9); undetermined and reserved keep the catalogue's
# capillary whole blood code.
_GLUCOSE_MDC: Final = {
    1: 160184,
    2: 160188,
    3: 160192,
    4: 160196,
    5: 160200,
    6: 160204,
    9: 160212,
    10: 160208,
}


@dataclass(frozen=True, slots=True)
class _GlucoseRecord:
    """One Glucose Measurement value: its sequence number, time and event."""

    sequence: int
    device_time: str | None
    event: Measurement | DeviceInfo  # DeviceInfo when the record carries no concentration
    context_follows: bool
    stamp: str = ""  # base time and offset as sent (hex), for the source key


def _user_facing_time(base: bytes, offset: int | None) -> _Time:
    time = _time(base)
    if time.iso is None or offset is None:
        return time
    try:
        shifted = datetime.fromisoformat(time.iso) + timedelta(minutes=offset)
    except OverflowError:  # past 9999-12-31
        return _Time(None, ("bad-device-time",))
    if shifted.year < 1582:
        return _Time(None, ("bad-device-time",))
    return _Time(shifted.isoformat())


def _parse_glucose(value: bytes) -> _GlucoseRecord:
    """Read a Glucose Measurement value; raises ``_Bad``."""
    r = _Reader(value)
    flags = _flags8(r, 5)
    sequence = r.u16()
    base = r.take(7)
    offset = r.s16() if flags & 0x01 else None
    stamp = base.hex() + ("" if offset is None else f"{offset:+d}")
    time = _user_facing_time(base, offset)  # user-facing time = base time + offset
    concentration, type_location = (r.sfloat(), r.u8()) if flags & 0x02 else (None, 0)
    status = _bits(r.u16(), GLUCOSE_STATUS) if flags & 0x08 else ()
    r.end()
    context: Context = (("sequence", str(sequence)),)
    if concentration is None:
        detail = " ".join((f"sequence={sequence}", "no-concentration", *status))
        return _GlucoseRecord(
            sequence, time.iso, DeviceInfo("glucose-record", detail), bool(flags & 0x10), stamp
        )
    sample = _named(SAMPLE_TYPES, type_location & 0x0F)
    location = _named(SAMPLE_LOCATIONS, type_location >> 4)
    # The device's own coding is kept beside the names (the octet as sent).
    context += (
        ("sample-type", sample),
        ("sample-location", location),
        ("type-sample-location", f"0x{type_location:02x}"),
    )
    molar = bool(flags & 0x04)
    unit = "mmol/L" if molar else "mg/dL"
    control = "control-solution" in (sample, location)
    loinc: str | None = None
    if control:
        status = ("control", *status)  # QC of the meter: never patient glucose, never alerts
    else:
        coded = sample if (type_location & 0x0F) in SAMPLE_TYPES else "undetermined-whole-blood"
        loinc = loinc_for("glucose", unit, coded)
    event = _mder(
        "glucose",
        concentration,
        unit,
        value,
        power=3 if molar else 5,  # mol/L -> mmol/L, kg/L -> mg/dL
        time=time,
        flags=status,
        context=context,
        loinc=loinc,
    )
    if control:
        event = replace(event, loinc=None)  # no patient-sample code for a control solution
    if isinstance(event, Measurement) and "reserved-" in sample + location:
        # Type and location decide patient sample or control solution: a reserved value
        # leaves that open, so the number is withheld (policy.py rule 3).
        event = withheld(event, "reserved-value")
    mdc = _GLUCOSE_MDC.get(type_location & 0x0F)
    event = replace(event, mdc=mdc) if mdc else event
    return _GlucoseRecord(sequence, time.iso, event, bool(flags & 0x10), stamp)


@_total
def decode_2a18(value: bytes) -> list[Event]:
    """Glucose Measurement: base time + offset; kg/L -> mg/dL, mol/L -> mmol/L; sample type,
    location and sequence number in context; LOINC by sample type and unit; control solution
    flagged ``control`` (quality control: no LOINC, never alerts, never bound to a patient)."""
    return [_parse_glucose(value).event]


CARBOHYDRATES: Final = {
    1: "breakfast",
    2: "lunch",
    3: "dinner",
    4: "snack",
    5: "drink",
    6: "supper",
    7: "brunch",
}
MEALS: Final = {1: "preprandial", 2: "postprandial", 3: "fasting", 4: "casual", 5: "bedtime"}
TESTERS: Final = {1: "self", 2: "health-care-professional", 3: "lab", 15: "not-available"}
HEALTH: Final = {
    1: "minor-health-issues",
    2: "major-health-issues",
    3: "menses",
    4: "stress",
    5: "no-health-issues",
    15: "not-available",
}
MEDICATIONS: Final = {
    1: "rapid-acting-insulin",
    2: "short-acting-insulin",
    3: "intermediate-acting-insulin",
    4: "long-acting-insulin",
    5: "pre-mixed-insulin",
}


@dataclass(frozen=True, slots=True)
class _GlucoseContext:
    """One Glucose Measurement Context value, for the record with the same sequence number."""

    sequence: int
    items: Context
    hba1c: MderValue | None
    raw: bytes

    def hba1c_event(self, device_time: str | None = None) -> Measurement | None:
        if self.hba1c is None:
            return None
        return _mder(
            "hba1c",
            self.hba1c,
            "%",
            self.raw,
            time=_Time(device_time),
            context=(("sequence", str(self.sequence)), *self.items),
        )


def _parse_context(value: bytes) -> _GlucoseContext:
    """Read a Glucose Measurement Context value; raises ``_Bad``."""
    r = _Reader(value)
    flags = r.u8()  # all 8 bits are defined
    sequence = r.u16()
    if flags & 0x80 and r.u8():
        raise _Bad("rfu-flags")  # extended flags: all RFU in GLS 1.0, unknown fields follow
    items: list[tuple[str, str]] = []
    if flags & 0x01:
        items.append(("carbohydrate-id", _named(CARBOHYDRATES, r.u8())))
        items.append(("carbohydrate", _mder_text(r.sfloat(), 3, "g")))  # kg -> g
    if flags & 0x02:
        items.append(("meal", _named(MEALS, r.u8())))
    if flags & 0x04:
        octet = r.u8()
        items += [("tester", _named(TESTERS, octet & 0x0F)), ("health", _named(HEALTH, octet >> 4))]
    if flags & 0x08:
        duration, intensity = r.u16(), r.u8()
        items += [
            ("exercise-duration", "overrun" if duration == 0xFFFF else f"{duration} s"),
            ("exercise-intensity", f"{intensity} %"),
        ]
    if flags & 0x10:
        items.append(("medication-id", _named(MEDICATIONS, r.u8())))
        amount = r.sfloat()
        litres = bool(flags & 0x20)
        items.append(
            ("medication", _mder_text(amount, 3 if litres else 6, "mL" if litres else "mg"))
        )
    hba1c = r.sfloat() if flags & 0x40 else None
    r.end()
    return _GlucoseContext(sequence, tuple(items), hba1c, value)


@_total
def decode_2a34(value: bytes) -> list[Event]:
    """Glucose Measurement Context on its own: a ``glucose-context`` fact, and ``hba1c`` when
    present. :class:`GlucoseDownload` instead attaches it to its measurement."""
    ctx = _parse_context(value)
    detail = " ".join(f"{k}={v}" for k, v in (("sequence", str(ctx.sequence)), *ctx.items))
    hba1c = ctx.hba1c_event()
    return [DeviceInfo("glucose-context", detail), *([hba1c] if hba1c else [])]


# --- Pulse oximetry 0x2A5E / 0x2A5F ----------------------------------------------------------
PLX_MEASUREMENT_STATUS: Final = (
    (5, "measurement-ongoing"),
    (6, "early-estimate"),
    (7, "validated"),
    (8, "fully-qualified"),
    (9, "from-storage"),
    (10, "demonstration"),
    (11, "testing"),
    (12, "calibration-ongoing"),
    (13, "measurement-unavailable"),
    (14, "questionable"),
    (15, "invalid"),
)
PLX_SENSOR_STATUS: Final = (
    (0, "extended-display-update"),
    (1, "equipment-malfunction"),
    (2, "signal-processing-irregularity"),
    (3, "inadequate-signal"),
    (4, "poor-signal"),
    (5, "low-perfusion"),
    (6, "erratic-signal"),
    (7, "non-pulsatile-signal"),
    (8, "questionable-pulse"),
    (9, "signal-analysis-ongoing"),
    (10, "sensor-interference"),
    (11, "sensor-unconnected"),
    (12, "unknown-sensor"),
    (13, "sensor-displaced"),
    (14, "sensor-malfunctioning"),
    (15, "sensor-disconnected"),
)


def _plx_events(
    value: bytes,
    spo2: MderValue,
    pulse: MderValue,
    pai: MderValue | None,
    time: _Time,
    flags: tuple[str, ...],
    context: Context,
) -> list[Event]:
    events: list[Event] = [
        _mder("spo2", spo2, "%", value, time=time, flags=flags, context=context),
        _mder("pulse_rate", pulse, "/min", value, time=time, flags=flags, context=context),
    ]
    if pai is not None:
        events.append(
            _mder("pulse_amplitude_index", pai, "%", value, time=time, flags=flags, context=context)
        )
    return events


@_total
def decode_2a5e(value: bytes) -> list[Event]:
    """PLX Spot-check Measurement. With "device clock is not set" the time stamp is
    meaningless: no ``device_time`` and flag ``device-clock-not-set``."""
    r = _Reader(value)
    flags = _flags8(r, 5)
    spo2, pulse = r.sfloat(), r.sfloat()
    time = _time(r.take(7)) if flags & 0x01 else _NO_TIME
    status = _bits(r.u16(), PLX_MEASUREMENT_STATUS) if flags & 0x02 else ()
    status += _bits(r.u24(), PLX_SENSOR_STATUS) if flags & 0x04 else ()
    pai = r.sfloat() if flags & 0x08 else None
    r.end()
    if flags & 0x10:
        time, status = _Time(None), ("device-clock-not-set", *status)
    return _plx_events(value, spo2, pulse, pai, time, status, ())


@_total
def decode_2a5f(value: bytes) -> list[Event]:
    """PLX Continuous Measurement: SpO2PR-Normal as the readings; the fast and slow averages,
    when sent, ride in their context (one reading per quantity per value)."""
    r = _Reader(value)
    flags = _flags8(r, 5)
    spo2, pulse = r.sfloat(), r.sfloat()
    context: Context = ()
    for bit, name in ((0x01, "fast"), (0x02, "slow")):
        if flags & bit:
            context += (
                (f"spo2-{name}", _mder_text(r.sfloat(), unit="%")),
                (f"pulse-rate-{name}", _mder_text(r.sfloat(), unit="/min")),
            )
    status = _bits(r.u16(), PLX_MEASUREMENT_STATUS) if flags & 0x04 else ()
    status += _bits(r.u24(), PLX_SENSOR_STATUS) if flags & 0x08 else ()
    pai = r.sfloat() if flags & 0x10 else None
    r.end()
    return _plx_events(value, spo2, pulse, pai, _Time(None), status, context)


# --- Weight 0x2A9D / body composition 0x2A9C -------------------------------------------------
def _mass_unit(imperial: bool) -> tuple[str, str]:
    return ("0.01", "[lb_av]") if imperial else ("0.005", "kg")


def _height_unit(imperial: bool) -> tuple[str, str]:
    return ("0.1", "[in_i]") if imperial else ("0.1", "cm")  # SI: 0.001 m = 0.1 cm


@_total
def decode_2a9d(value: bytes) -> list[Event]:
    """Weight Measurement: weight (SI 0.005 kg, imperial 0.01 lb; 0xFFFF = unsuccessful),
    BMI (0.1 kg/m2) and height (SI 0.001 m, imperial 0.1 in)."""
    r = _Reader(value)
    flags = _flags8(r, 4)
    imperial = bool(flags & 0x01)
    weight = r.u16()
    time = _time(r.take(7)) if flags & 0x02 else _NO_TIME
    context = _user(r.u8()) if flags & 0x04 else ()
    bmi_height = (r.u16(), r.u16()) if flags & 0x08 else None
    r.end()
    step, unit = _mass_unit(imperial)
    if weight == 0xFFFF:
        return [_unsuccessful("body_weight", unit, value, time, context)]
    events: list[Event] = [
        _fixed("body_weight", weight, step, unit, value, time=time, context=context)
    ]
    if bmi_height is not None:
        hstep, hunit = _height_unit(imperial)
        events += [
            _fixed("bmi", bmi_height[0], "0.1", "kg/m2", value, time=time, context=context),
            _fixed("body_height", bmi_height[1], hstep, hunit, value, time=time, context=context),
        ]
    return events


# Optional uint16 fields after the time stamp and user ID, in flag-bit order.
_BODY_FIELDS: Final = (
    (3, "basal_metabolism"),
    (4, "muscle_percentage"),
    (5, "muscle_mass"),
    (6, "fat_free_mass"),
    (7, "soft_lean_mass"),
    (8, "body_water_mass"),
    (9, "body_impedance"),
    (10, "body_weight"),
    (11, "body_height"),
)
_BODY_FIXED: Final = {
    "basal_metabolism": ("1", "kJ"),
    "muscle_percentage": ("0.1", "%"),
    "body_impedance": ("0.1", "Ohm"),
}


def _body_unit(key: str, imperial: bool) -> tuple[str, str]:
    if key == "body_height":
        return _height_unit(imperial)
    return _BODY_FIXED.get(key) or _mass_unit(imperial)  # the masses: 0.005 kg / 0.01 lb


@dataclass(frozen=True, slots=True)
class _BodyPacket:
    """One Body Composition Measurement value, parsed."""

    imperial: bool
    fat: int
    time: _Time
    stamp: bytes  # the Date Time octets as sent (b"" when absent), to match two packets
    context: Context
    multiple: bool  # b12: one of the packets of a split measurement
    fields: tuple[tuple[str, int], ...]
    raw: bytes


def _parse_2a9c(value: bytes) -> _BodyPacket:
    r = _Reader(value)
    flags = r.u16()
    if flags >> 13:
        raise _Bad("rfu-flags")
    fat = r.u16()
    stamp = r.take(7) if flags & 0x0002 else b""
    time = _time(stamp) if stamp else _NO_TIME
    context = _user(r.u8()) if flags & 0x0004 else ()
    fields = tuple((key, r.u16()) for bit, key in _BODY_FIELDS if flags >> bit & 1)
    r.end()
    return _BodyPacket(
        bool(flags & 0x0001), fat, time, stamp, context, bool(flags & 0x1000), fields, value
    )


def _body_events(packet: _BodyPacket, status: tuple[str, ...]) -> list[Event]:
    time, context, value = packet.time, packet.context, packet.raw
    if packet.fat == 0xFFFF:
        first = _unsuccessful("body_fat_percentage", "%", value, time, context)
        events: list[Event] = [replace(first, flags=first.flags + status)]
    else:
        events = [
            _fixed(
                "body_fat_percentage",
                packet.fat,
                "0.1",
                "%",
                value,
                time=time,
                flags=status,
                context=context,
            )
        ]
    for key, count in packet.fields:
        step, unit = _body_unit(key, packet.imperial)
        events.append(
            _fixed(key, count, step, unit, value, time=time, flags=status, context=context)
        )
    return events


@_total
def decode_2a9c(value: bytes) -> list[Event]:
    """Body Composition Measurement (16-bit flags): body fat % (0.1 %, 0xFFFF = unsuccessful)
    and the flagged fields in bit order. One value on its own: a packet of a multiple-packet
    measurement (b12) is flagged ``multiple-packet``; :class:`BodyCompositionAssembler`
    (used by :class:`HealthDecoder`) joins the packets into one set."""
    packet = _parse_2a9c(value)
    return _body_events(packet, ("multiple-packet",) if packet.multiple else ())


class BodyCompositionAssembler:
    """Joins the packets of a multiple-packet Body Composition Measurement (b12).

    A full measurement (30 octets) exceeds the default 20-octet ATT payload, so a scale that
    does not negotiate a larger MTU sends it as two indications, each a well-formed value with
    its own flags (b12 set), the mandatory body fat %, and a share of the optional fields
    (PROTOCOLS.md §2.6, §11.2: the split procedure is not pinned down, so this rule is ours and
    deliberately strict). Two b12 packets form one set when they agree on unit system, time
    stamp and user (where both carry them), carry no optional field twice and give the same
    body fat %; the set is emitted once, every measurement flagged ``reassembled`` with both
    packets' bytes as raw. A packet that cannot join the held one (a new measurement), a
    value without b12, or :meth:`flush` (the link dropped: the BLE transport calls it through
    :class:`drivers.base.Flushable`) emits the held packet on its own flagged
    ``incomplete-multiple-packet``: its values are real, the set is partial.
    """

    def __init__(self) -> None:
        self._held: _BodyPacket | None = None

    def receive(self, value: bytes) -> list[Event]:
        try:
            packet = _parse_2a9c(bytes(value))
        except _Bad as bad:
            return [*self.flush(), Rejected(bytes(value), bad.reason)]
        if not packet.multiple:
            return [*self.flush(), *_body_events(packet, ())]
        held, self._held = self._held, None
        if held is None:
            self._held = packet
            return []
        if not _joinable(held, packet):
            self._held = packet
            return _body_events(held, ("incomplete-multiple-packet",))
        merged = replace(
            held,
            stamp=held.stamp or packet.stamp,
            time=held.time if held.stamp else packet.time,
            context=held.context or packet.context,
            fields=tuple(sorted((*held.fields, *packet.fields), key=lambda f: _BODY_ORDER[f[0]])),
            raw=held.raw + packet.raw,
        )
        return _body_events(merged, ("reassembled",))

    def flush(self) -> list[Event]:
        held, self._held = self._held, None
        return _body_events(held, ("incomplete-multiple-packet",)) if held else []


_BODY_ORDER: Final = {key: bit for bit, key in _BODY_FIELDS}


def _joinable(a: _BodyPacket, b: _BodyPacket) -> bool:
    keys_a, keys_b = {k for k, _ in a.fields}, {k for k, _ in b.fields}
    return (
        a.imperial == b.imperial
        and a.fat == b.fat
        and not keys_a & keys_b
        and (not a.stamp or not b.stamp or a.stamp == b.stamp)
        and (not a.context or not b.context or a.context == b.context)
    )


DECODERS: Final[dict[str, Decoder]] = {
    "2a35": decode_2a35,
    "2a36": decode_2a36,
    "2a37": decode_2a37,
    "2a1c": decode_2a1c,
    "2a1e": decode_2a1e,
    "2a18": decode_2a18,
    "2a34": decode_2a34,
    "2a5e": decode_2a5e,
    "2a5f": decode_2a5f,
    "2a9d": decode_2a9d,
    "2a9c": decode_2a9c,
}


# --- Record Access Control Point 0x2A52 ------------------------------------------------------
class RacpOp(IntEnum):
    REPORT_RECORDS = 1
    DELETE_RECORDS = 2
    ABORT = 3
    REPORT_COUNT = 4
    COUNT_RESPONSE = 5
    RESPONSE_CODE = 6


class RacpOperator(IntEnum):
    NULL = 0
    ALL = 1
    LESS_OR_EQUAL = 2
    GREATER_OR_EQUAL = 3
    WITHIN_RANGE = 4
    FIRST = 5
    LAST = 6


RACP_FILTER_SEQUENCE: Final = 0x01  # GLS filter type: sequence number (uint16)
RACP_RESPONSES: Final = {
    1: "success",
    2: "op-code-not-supported",
    3: "invalid-operator",
    4: "operator-not-supported",
    5: "invalid-operand",
    6: "no-records-found",
    7: "abort-unsuccessful",
    8: "procedure-not-completed",
    9: "operand-not-supported",
}


def _seq(seq: int) -> bytes:
    if not 0 <= seq <= 0xFFFF:
        raise ValueError(f"a glucose sequence number is uint16, got {seq}")
    return bytes([RACP_FILTER_SEQUENCE]) + seq.to_bytes(2, "little")


def racp_report_all() -> bytes:
    return bytes([RacpOp.REPORT_RECORDS, RacpOperator.ALL])


def racp_report_from(seq: int) -> bytes:
    """Report stored records with sequence number >= ``seq``."""
    return bytes([RacpOp.REPORT_RECORDS, RacpOperator.GREATER_OR_EQUAL]) + _seq(seq)


def racp_count_all() -> bytes:
    return bytes([RacpOp.REPORT_COUNT, RacpOperator.ALL])


def racp_count_from(seq: int) -> bytes:
    """Report the number of stored records with sequence number >= ``seq``."""
    return bytes([RacpOp.REPORT_COUNT, RacpOperator.GREATER_OR_EQUAL]) + _seq(seq)


def racp_abort() -> bytes:
    return bytes([RacpOp.ABORT, RacpOperator.NULL])


@dataclass(frozen=True, slots=True)
class RacpCount:
    """Number of Stored Records Response (op code 5)."""

    count: int


@dataclass(frozen=True, slots=True)
class RacpResponse:
    """Response Code (op code 6) to the request with op code ``request``."""

    request: int
    code: int

    @property
    def name(self) -> str:
        return RACP_RESPONSES.get(self.code, f"reserved-{self.code}")

    @property
    def finished(self) -> bool:
        """The procedure ran to its end; "no records found" is not an error."""
        return self.code in (1, 6)


def decode_racp(value: bytes) -> RacpCount | RacpResponse | Rejected:
    """A RACP indication from the server: count or response code; anything else is
    ``Rejected`` (the collector never receives requests)."""
    data = bytes(value)
    if not data:
        return Rejected(data, "truncated")
    if data[0] not in (RacpOp.COUNT_RESPONSE, RacpOp.RESPONSE_CODE):
        return Rejected(data, "racp-op-code")
    if len(data) != 4:  # both: op code, operator, uint16 (GLS count / request + code)
        return Rejected(data, "truncated" if len(data) < 4 else "too-long")
    if data[1] != RacpOperator.NULL:
        return Rejected(data, "racp-operator")
    if data[0] == RacpOp.COUNT_RESPONSE:
        return RacpCount(int.from_bytes(data[2:4], "little"))
    return RacpResponse(data[2], data[3])


# --- GATT decoders ---------------------------------------------------------------------------
class HealthDecoder:
    """Notify/indicate profiles (cuff, thermometer, oximeter, scales, heart rate): every value
    is one complete measurement, decoded by :data:`DECODERS`. Nothing is written and nothing
    is acknowledged: these profiles never emit ``MessageComplete``, so the runtime commits
    their events as they come and a call to :meth:`acknowledge` is a caller bug
    (``DecoderMisuse``)."""

    def __init__(self, characteristics: tuple[str, ...]) -> None:
        unknown = [c for c in characteristics if c not in DECODERS]
        if not characteristics:
            raise DecoderMisuse("HealthDecoder needs at least one characteristic")
        if unknown:
            raise DecoderMisuse(f"no decoder for characteristics {unknown}")
        self.subscriptions: tuple[str, ...] = tuple(characteristics)
        self._body = BodyCompositionAssembler()

    def receive_value(self, characteristic: str, value: bytes) -> list[Event]:
        if characteristic not in self.subscriptions:
            return [Rejected(bytes(value), "unexpected-characteristic")]
        if characteristic == "2a9c":
            return self._body.receive(value)  # joins multiple-packet measurements
        return DECODERS[characteristic](value)

    def flush(self) -> list[Event]:
        """The link dropped: a half-received multiple-packet measurement, flagged."""
        return self._body.flush()

    def writes_to_send(self) -> list[GattWrite]:
        return []

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        raise DecoderMisuse(f"notify/indicate profiles have nothing to acknowledge: {message_id!r}")


# --- Device Information 0x180A: who the meter is ---------------------------------------------
DIS_SERIAL_NUMBER: Final = "2a25"  # UTF-8 string
DIS_SYSTEM_ID: Final = "2a23"  # uint40 manufacturer identifier + uint24 OUI
DIS_MANUFACTURER: Final = "2a29"  # UTF-8 string
DIS_MODEL_NUMBER: Final = "2a24"  # UTF-8 string
DIS_FIRMWARE: Final = "2a26"  # UTF-8 string
# The Device Information characteristics read from every BLE device that exposes them.
DEVICE_INFORMATION: Final = (
    DIS_SERIAL_NUMBER,
    DIS_SYSTEM_ID,
    DIS_MANUFACTURER,
    DIS_MODEL_NUMBER,
    DIS_FIRMWARE,
)


def device_information(values: Mapping[str, bytes]) -> DeviceFacts:
    """A device's Device Information Service values (characteristic -> bytes read) as its
    facts; absent, empty, padding-only or all-zero values are none."""
    return DeviceFacts(
        serial=fact(values.get(DIS_SERIAL_NUMBER)),
        system_id=eui64(values.get(DIS_SYSTEM_ID)),
        manufacturer=fact(values.get(DIS_MANUFACTURER)),
        model=fact(values.get(DIS_MODEL_NUMBER)),
        firmware=fact(values.get(DIS_FIRMWARE)),
    )


def meter_identity(serial_number: bytes | None, system_id: bytes | None) -> str | None:
    """A meter's identity from its Device Information values (None: not exposed), or None
    when it gives neither (an empty or all-zero value counts as none)."""
    parts = []
    serial = (serial_number or b"").decode("utf-8", "replace").strip("\x00 \t\r\n")
    if serial:
        parts.append(f"serial={serial}")
    if system_id and any(system_id):
        parts.append(f"system-id={bytes(system_id).hex()}")
    return ",".join(parts) or None


class _Procedure(Enum):
    IDLE = "idle"
    REPORTING = "reporting"  # report request written, waiting for records and the response
    COUNTING = "counting"  # nothing new: asked how many records >= the cursor (reset check)
    ABORTING = "aborting"  # abort written, waiting for its response


class GlucoseDownload:
    """Download a glucose meter's stored records with the RACP, each once.

    ``resume(meter, cursor_key, last_seq)`` says which meter this is (its Device Information
    identity, read by the transport) and where its cursor is kept; ``start()`` then queues
    "report all records" (``last_seq`` None: first contact) or "report records with
    sequence >= last_seq + 1". Measurements (0x2A18) and contexts (0x2A34) are collected, a
    context joined to its measurement by sequence number (HbA1c becomes an ``hba1c`` reading at
    its measurement's time). The response indication ends the procedure: success or "no records
    found" (not an error) emits the collected events then ``MessageComplete`` carrying the new
    cursor ``(cursor_key, highest sequence number)``, which the runtime commits in the same
    transaction as the readings; any other response code emits ``DeviceInfo("racp", <name>)``
    and drops what was collected (the next download asks again from the same cursor).

    Reset or replaced meter: when nothing above the cursor came back, the download asks for the
    number of records >= ``last_seq``. None means the meter's highest record is below the
    cursor: its memory was cleared or its numbering restarted. It emits
    ``DeviceInfo("racp-reset", ...)``, downloads all records and the cursor moves to their
    highest number, even below the old one. (A meter whose numbering restarted and has passed the
    old cursor again before the next download cannot be told apart by sequence numbers; its
    records below the cursor are not asked for.)

    Source keys: ``gls:[meter, sequence, base time + offset as sent, characteristic]``: a
    record delivered again (filter ignored, cursor lost, download repeated) is stored once; the
    time keeps records of a reset meter that reuse old sequence numbers apart; the identity
    keeps two meters apart. Without ``meter`` (no ``resume``) readings have no source key.

    :attr:`last_seq` moves only when the runtime calls ``acknowledge(message_id, stored=True)``
    after the commit: a failed commit, a failed procedure or a disconnect downloads the same
    records again rather than skip any. Values outside a procedure are ignored (the meter keeps
    them; the next download gets them). Timing out a stalled procedure is the transport's job:
    it calls :meth:`abort`.
    """

    subscriptions: tuple[str, ...] = ("2a18", "2a34", "2a52")

    def __init__(
        self,
        last_seq: int | None = None,
        *,
        meter: str | None = None,
        cursor_key: str | None = None,
    ) -> None:
        self._state = _Procedure.IDLE
        self._writes: list[GattWrite] = []
        self._records: dict[int, _GlucoseRecord] = {}
        self._contexts: dict[int, _GlucoseContext] = {}
        self._unacknowledged: dict[str, int | None] = {}
        self._procedures = 0
        self._reset = False  # this procedure downloads everything after a detected reset
        self._last_seq: int | None = None
        self._meter: str | None = None
        self._cursor_key: str | None = None
        self.resume(meter, cursor_key, last_seq)

    def resume(self, meter: str | None, cursor_key: str | None, last_seq: int | None) -> None:
        """Before :meth:`start`: the meter's identity (for source keys), the key its cursor is
        committed under and the cursor's value (None: never downloaded)."""
        if self.active or self._unacknowledged:
            raise DecoderMisuse("resume() while a procedure is running or unacknowledged")
        if last_seq is not None and not 0 <= last_seq <= 0xFFFF:
            raise DecoderMisuse(f"a glucose sequence number is uint16, got {last_seq}")
        self._meter, self._cursor_key, self._last_seq = meter, cursor_key, last_seq

    @property
    def last_seq(self) -> int | None:
        """Highest sequence number committed (by this decoder's acknowledged downloads)."""
        return self._last_seq

    @property
    def active(self) -> bool:
        """A procedure is waiting for the meter (the transport times this out)."""
        return self._state is not _Procedure.IDLE

    def start(self) -> None:
        if self.active or self._unacknowledged:
            raise DecoderMisuse("start() while a procedure is running or unacknowledged")
        if self._last_seq is None:
            request = racp_report_all()
        else:
            # At 0xFFFF nothing newer is addressable; ">= 0xFFFF" returns only seen records.
            request = racp_report_from(min(self._last_seq + 1, 0xFFFF))
        self._writes.append(GattWrite("2a52", request))
        self._state = _Procedure.REPORTING
        self._reset = False

    def abort(self) -> None:
        """Queue the RACP abort (``03 00``) and drop what the procedure collected."""
        self._writes.append(GattWrite("2a52", racp_abort()))
        self._drop()
        self._state = _Procedure.ABORTING

    def writes_to_send(self) -> list[GattWrite]:
        out, self._writes = self._writes, []
        return out

    def receive_value(self, characteristic: str, value: bytes) -> list[Event]:
        data = bytes(value)
        if characteristic == "2a52":
            return self._racp(data)
        if characteristic not in ("2a18", "2a34"):
            return [Rejected(data, "unexpected-characteristic")]
        try:
            if characteristic == "2a18":
                record = _parse_glucose(data)
                if self._state is _Procedure.REPORTING:
                    self._records[record.sequence] = record
            else:
                context = _parse_context(data)
                if self._state is _Procedure.REPORTING:
                    self._contexts[context.sequence] = context
        except _Bad as bad:
            return [Rejected(data, bad.reason)]
        return []

    def _racp(self, data: bytes) -> list[Event]:
        response = decode_racp(data)
        if isinstance(response, Rejected):
            return [response]
        if isinstance(response, RacpCount):
            if self._state is _Procedure.COUNTING:
                return self._counted(response.count)
            return [DeviceInfo("racp-count", str(response.count))]
        if self._state is _Procedure.ABORTING:
            if response.request == RacpOp.ABORT:
                self._state = _Procedure.IDLE
            return [DeviceInfo("racp", response.name)]
        if self._state is _Procedure.COUNTING and response.request == RacpOp.REPORT_COUNT:
            # The meter cannot count: the reset check is skipped, nothing new was found.
            self._state = _Procedure.IDLE
            return [
                DeviceInfo("racp", f"count {response.name}: reset not checked"),
                *self._complete(),
            ]
        if self._state is not _Procedure.REPORTING or response.request != RacpOp.REPORT_RECORDS:
            return [DeviceInfo("racp", response.name)]
        self._state = _Procedure.IDLE
        if not response.finished:
            self._drop()
            return [DeviceInfo("racp", response.name)]
        if not self._records and self._last_seq is not None and not self._reset:
            # Nothing above the cursor: is the record at the cursor still there?
            self._writes.append(GattWrite("2a52", racp_count_from(self._last_seq)))
            self._state = _Procedure.COUNTING
            self._contexts.clear()
            return []
        return self._complete()

    def _counted(self, count: int) -> list[Event]:
        if count:
            self._state = _Procedure.IDLE
            return self._complete()  # the cursor's record is still there: nothing new
        self._reset = True
        self._writes.append(GattWrite("2a52", racp_report_all()))
        self._state = _Procedure.REPORTING
        return [self._reset_fact()]

    def _reset_fact(self) -> DeviceInfo:
        return DeviceInfo(
            "racp-reset",
            f"the meter holds no record at or above the cursor "
            f"{self._last_seq}: reset or replaced; downloading all its records",
        )

    def _key(self, seq: int, stamp: str, characteristic: str) -> str | None:
        if self._meter is None:
            return None
        return source_key("gls", self._meter, seq, stamp, characteristic)

    def _complete(self) -> list[Event]:
        events: list[Event] = []
        last = self._last_seq
        if self._records and last is not None and not self._reset and max(self._records) < last:
            # The meter ignored the filter and sent its whole memory, all below the cursor.
            self._reset = True
            events.append(self._reset_fact())
        fresh = sorted(s for s in self._records if self._reset or last is None or s > last)
        for seq in fresh:
            record, context = self._records[seq], self._contexts.pop(seq, None)
            event = record.event
            if isinstance(event, Measurement):
                event = replace(event, source_key=self._key(seq, record.stamp, "2a18"))
                if context is not None:
                    event = replace(event, context=event.context + context.items)
            events.append(event)
            hba1c = context.hba1c_event(record.device_time) if context else None
            if hba1c is not None:
                events.append(replace(hba1c, source_key=self._key(seq, record.stamp, "2a34")))
        for seq, context in sorted(self._contexts.items()):
            if seq in self._records:
                continue  # belongs to a record already stored (seq <= last_seq)
            hba1c = context.hba1c_event()
            if hba1c is not None:
                events.append(replace(hba1c, source_key=self._key(seq, "", "2a34")))
            else:
                events.append(DeviceInfo("glucose-context", f"sequence={seq} no-record"))
        old = len(self._records) - len(fresh)
        if old:  # the meter ignored the filter: these were committed before
            events.append(DeviceInfo("racp", f"skipped {old} records already stored"))
        self._procedures += 1
        message_id = f"racp-{self._procedures}"
        highest = fresh[-1] if fresh else None
        self._unacknowledged[message_id] = highest
        cursor = None
        if highest is not None and self._cursor_key is not None:
            cursor = (self._cursor_key, highest)
        self._drop()
        self._reset = False
        return [*events, MessageComplete(message_id, cursor)]

    def _drop(self) -> None:
        self._records.clear()
        self._contexts.clear()

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        if message_id not in self._unacknowledged:
            raise DecoderMisuse(f"no RACP download {message_id!r} waits for acknowledgement")
        highest = self._unacknowledged.pop(message_id)
        if stored and highest is not None:
            self._last_seq = highest  # after a reset this may be below the old cursor
