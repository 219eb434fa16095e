"""Bluetooth SIG health profiles, sans-I/O: one decoder per characteristic value, the Record
Access Control Point, and the glucose-meter record download.

Facts: ``shared/PROTOCOLS.md`` §2 (GSS field tables). Little-endian; optional fields follow in
table order when their flag is set. A value that is too short, too long, or sets RFU flag bits
is ``Rejected`` with its bytes, never an exception; IEEE 11073 special values give a
measurement with ``value = None`` and a FHIR ``absent_reason``, never a number.

Intermediate values (Intermediate Cuff Pressure 0x2A36) decode with the flag ``intermediate``
for a technician's ``decode``; the agent does not subscribe to them, so they are not stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from drivers.base import DecoderMisuse, DeviceInfo, Event, GattWrite, MessageComplete, Rejected
from drivers.protocols.ieee11073 import MderValue, date_time, float32, sfloat
from edge_agent.models import Measurement, measurement


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Reader:
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
        return sfloat(self.u16())

    def float32(self) -> MderValue:
        return float32(int.from_bytes(self.take(4), "little"))

    def time(self) -> str | None:
        return date_time(self.take(7))

    def done(self) -> None:
        if self.pos != len(self.data):
            raise _Bad("too-long")


def _rfu(flags: int, used_bits: int) -> None:
    if flags & ~((1 << used_bits) - 1):
        raise _Bad("rfu-flags")


def _m(key: str, v: MderValue, unit: str, raw: bytes, *, device_time: str | None = None,
       flags: tuple[str, ...] = (), context: tuple[tuple[str, str], ...] = (),
       loinc: str | None = None, scale: float = 1.0) -> Measurement:
    value = None if v.value is None else round(v.value * scale, 10)
    return measurement(key, value, unit, loinc=loinc, device_time=device_time, flags=flags,
                       absent_reason=v.absent_reason, raw=raw, context=context)


def _bits(value: int, names: dict[int, str]) -> tuple[str, ...]:
    return tuple(name for bit, name in names.items() if value & (1 << bit))


def _guard(decode: Callable[[bytes], list[Event]]) -> Callable[[bytes], list[Event]]:
    def run(value: bytes) -> list[Event]:
        try:
            return decode(value)
        except _Bad as bad:
            return [Rejected(bytes(value), bad.reason)]

    run.__doc__ = decode.__doc__
    return run


# --- Blood pressure 0x2A35 / intermediate cuff pressure 0x2A36 -----------------------------
BP_STATUS: Final = {0: "body-movement", 1: "cuff-too-loose", 2: "irregular-pulse",
                    5: "improper-position"}


def _bp(value: bytes, intermediate: bool) -> list[Event]:
    r = _Reader(value)
    flags = r.u8()
    _rfu(flags, 5)
    unit = "kPa" if flags & 0x01 else "mm[Hg]"
    sys_, dia, mean = r.sfloat(), r.sfloat(), r.sfloat()
    stamp = r.time() if flags & 0x02 else None
    pulse = r.sfloat() if flags & 0x04 else None
    context: tuple[tuple[str, str], ...] = ()
    if flags & 0x08:
        user = r.u8()
        context += (("user", "unknown" if user == 255 else str(user)),)
    status: tuple[str, ...] = ()
    if flags & 0x10:
        bits = r.u16()
        status = _bits(bits, BP_STATUS)
        rate = (bits >> 3) & 0x03
        status += {1: ("pulse-rate-above-range",), 2: ("pulse-rate-below-range",)}.get(rate, ())
    r.done()
    if intermediate:
        return [_m("cuff_pressure", sys_, unit, value, device_time=stamp,
                   flags=("intermediate", *status), context=context)]
    events: list[Event] = [
        _m("systolic_bp", sys_, unit, value, device_time=stamp, flags=status, context=context),
        _m("diastolic_bp", dia, unit, value, device_time=stamp, flags=status, context=context),
        _m("mean_arterial_pressure", mean, unit, value, device_time=stamp, flags=status,
           context=context),
    ]
    if pulse is not None:
        events.append(_m("pulse_rate", pulse, "/min", value, device_time=stamp, flags=status,
                         context=context))
    return events


@_guard
def decode_2a35(value: bytes) -> list[Event]:
    """Blood Pressure Measurement."""
    return _bp(value, intermediate=False)


@_guard
def decode_2a36(value: bytes) -> list[Event]:
    """Intermediate Cuff Pressure (not a final reading)."""
    return _bp(value, intermediate=True)


# --- Heart rate 0x2A37 ---------------------------------------------------------------------
@_guard
def decode_2a37(value: bytes) -> list[Event]:
    """Heart Rate Measurement: HR, energy expended, RR intervals (1/1024 s)."""
    r = _Reader(value)
    flags = r.u8()
    _rfu(flags, 5)
    hr = r.u16() if flags & 0x01 else r.u8()
    contact = (flags >> 1) & 0x03
    status = ("no-contact",) if contact == 2 else ()
    events: list[Event] = [measurement("heart_rate", float(hr), flags=status, raw=value)]
    if flags & 0x08:
        energy = r.u16()
        events.append(measurement("energy_expended", float(energy), raw=value,
                                  flags=("saturated",) if energy == 0xFFFF else ()))
    if flags & 0x10:
        rest = len(value) - r.pos
        if rest == 0 or rest % 2:
            raise _Bad("rr-intervals")
        while r.pos < len(value):
            events.append(measurement("rr_interval", round(r.u16() / 1024, 6), raw=value))
    r.done()
    return events


# --- Temperature 0x2A1C --------------------------------------------------------------------
TEMPERATURE_SITES: Final = {1: "armpit", 2: "body", 3: "ear", 4: "finger",
                            5: "gastro-intestinal-tract", 6: "mouth", 7: "rectum", 8: "toe",
                            9: "tympanum"}


@_guard
def decode_2a1c(value: bytes) -> list[Event]:
    """Temperature Measurement (32-bit FLOAT, Celsius or Fahrenheit, optional site)."""
    r = _Reader(value)
    flags = r.u8()
    _rfu(flags, 3)
    reading = r.float32()
    stamp = r.time() if flags & 0x02 else None
    context: tuple[tuple[str, str], ...] = ()
    if flags & 0x04:
        site = r.u8()
        if site not in TEMPERATURE_SITES:
            raise _Bad("temperature-type")
        context = (("site", TEMPERATURE_SITES[site]),)
    r.done()
    unit = "[degF]" if flags & 0x01 else "Cel"
    return [_m("body_temperature", reading, unit, value, device_time=stamp, context=context)]


# --- Glucose 0x2A18 + context 0x2A34 -------------------------------------------------------
SAMPLE_TYPES: Final = {1: "capillary-whole-blood", 2: "capillary-plasma", 3: "venous-whole-blood",
                       4: "venous-plasma", 5: "arterial-whole-blood", 6: "arterial-plasma",
                       7: "undetermined-whole-blood", 8: "undetermined-plasma",
                       9: "interstitial-fluid", 10: "control-solution"}
SAMPLE_LOCATIONS: Final = {1: "finger", 2: "alternate-site-test", 3: "earlobe",
                           4: "control-solution", 15: "not-available"}
SSA: Final = {0: "battery-low", 1: "sensor-malfunction", 2: "sample-size-insufficient",
              3: "strip-insertion-error", 4: "strip-type-incorrect", 5: "result-too-high",
              6: "result-too-low", 7: "temperature-too-high", 8: "temperature-too-low",
              9: "strip-pulled-too-soon", 10: "device-fault", 11: "time-fault"}
# (mass LOINC, molar LOINC) by sample: capillary = by glucometer; venous/arterial by specimen.
_GLUCOSE_LOINC: Final = {"capillary": ("41653-7", "14743-9"), "plasma": ("2345-7", "14749-6"),
                         "whole-blood": ("2339-0", "15074-8")}


@dataclass(frozen=True)
class GlucoseRecord:
    sequence: int
    events: list[Event]
    context_follows: bool


def _glucose_loinc(sample: str | None, molar: bool) -> str:
    if sample is None or sample.startswith("capillary"):
        pair = _GLUCOSE_LOINC["capillary"]
    elif sample.endswith("plasma"):
        pair = _GLUCOSE_LOINC["plasma"]
    else:
        pair = _GLUCOSE_LOINC["whole-blood"]
    return pair[1] if molar else pair[0]


def parse_glucose(value: bytes) -> GlucoseRecord:
    r = _Reader(value)
    flags = r.u8()
    _rfu(flags, 5)
    seq = r.u16()
    base = r.take(7)
    stamp = date_time(base)
    if flags & 0x01:
        offset = r.s16()
        if stamp is not None:
            stamp = (datetime.fromisoformat(stamp) + timedelta(minutes=offset)).isoformat()
    context: tuple[tuple[str, str], ...] = (("sequence", str(seq)),)
    events: list[Event] = []
    status: tuple[str, ...] = ()
    concentration = None
    sample = None
    if flags & 0x02:
        concentration = r.sfloat()
        type_location = r.u8()
        sample = SAMPLE_TYPES.get(type_location & 0x0F)
        location = SAMPLE_LOCATIONS.get(type_location >> 4)
        context += (("sample-type", sample or "reserved"), ("sample-location",
                                                            location or "reserved"))
        if sample == "control-solution" or location == "control-solution":
            status += ("control-solution",)  # QC, never patient glucose
    if flags & 0x08:
        status += _bits(r.u16(), SSA)
    r.done()
    if concentration is not None:
        molar = bool(flags & 0x04)
        events.append(_m("glucose", concentration, "mmol/L" if molar else "mg/dL", value,
                         device_time=stamp, flags=status, context=context,
                         loinc=_glucose_loinc(sample, molar),
                         scale=1000.0 if molar else 100000.0))
    else:
        events.append(DeviceInfo("glucose-record", f"{seq}: no concentration"))
    return GlucoseRecord(seq, events, bool(flags & 0x10))


@_guard
def decode_2a18(value: bytes) -> list[Event]:
    """Glucose Measurement (base time + offset; kg/L -> mg/dL, mol/L -> mmol/L)."""
    return parse_glucose(value).events


MEALS: Final = {1: "preprandial", 2: "postprandial", 3: "fasting", 4: "casual", 5: "bedtime"}
CARBS: Final = {1: "breakfast", 2: "lunch", 3: "dinner", 4: "snack", 5: "drink", 6: "supper",
                7: "brunch"}
TESTERS: Final = {1: "self", 2: "health-care-professional", 3: "lab", 15: "not-available"}
HEALTH: Final = {1: "minor-problems", 2: "major-problems", 3: "menses", 4: "stress",
                 5: "no-issues", 15: "not-available"}
MEDICATION: Final = {1: "rapid-acting-insulin", 2: "short-acting-insulin",
                     3: "intermediate-acting-insulin", 4: "long-acting-insulin",
                     5: "pre-mixed-insulin"}


def parse_context(value: bytes) -> tuple[int, tuple[tuple[str, str], ...], MderValue | None]:
    r = _Reader(value)
    flags = r.u8()
    seq = r.u16()
    ctx: list[tuple[str, str]] = []
    if flags & 0x80:
        r.u8()  # extended flags: all RFU in GLS 1.0
    if flags & 0x01:
        carb_id, carbs = r.u8(), r.sfloat()
        ctx.append(("carbohydrate", f"{CARBS.get(carb_id, 'reserved')}:{carbs.value} kg"))
    if flags & 0x02:
        ctx.append(("meal", MEALS.get(r.u8(), "reserved")))
    if flags & 0x04:
        octet = r.u8()
        ctx += [("tester", TESTERS.get(octet & 0x0F, "reserved")),
                ("health", HEALTH.get(octet >> 4, "reserved"))]
    if flags & 0x08:
        duration, intensity = r.u16(), r.u8()
        shown = "overrun" if duration == 0xFFFF else f"{duration} s"
        ctx.append(("exercise", f"{shown} at {intensity} %"))
    if flags & 0x10:
        med_id, amount = r.u8(), r.sfloat()
        unit = "L" if flags & 0x20 else "kg"
        ctx.append(("medication", f"{MEDICATION.get(med_id, 'reserved')}:{amount.value} {unit}"))
    hba1c = r.sfloat() if flags & 0x40 else None
    r.done()
    return seq, tuple(ctx), hba1c


@_guard
def decode_2a34(value: bytes) -> list[Event]:
    """Glucose Measurement Context (meal, tester, exercise, medication, HbA1c)."""
    seq, ctx, hba1c = parse_context(value)
    events: list[Event] = [DeviceInfo("glucose-context", json.dumps({"sequence": seq,
                                                                     **dict(ctx)}))]
    if hba1c is not None:
        events.append(_m("hba1c", hba1c, "%", value, context=(("sequence", str(seq)), *ctx)))
    return events


# --- Pulse oximetry 0x2A5E / 0x2A5F --------------------------------------------------------
PLX_MEASUREMENT: Final = {5: "measurement-ongoing", 6: "early-estimate", 7: "validated",
                          8: "fully-qualified", 9: "from-storage", 10: "demonstration",
                          11: "testing", 12: "calibration-ongoing", 13: "unavailable",
                          14: "questionable", 15: "invalid"}
PLX_SENSOR: Final = {0: "extended-display-update", 1: "equipment-malfunction",
                     2: "signal-processing-irregularity", 3: "inadequate-signal",
                     4: "poor-signal", 5: "low-perfusion", 6: "erratic-signal",
                     7: "non-pulsatile-signal", 8: "questionable-pulse",
                     9: "signal-analysis-ongoing", 10: "sensor-interference",
                     11: "sensor-unconnected", 12: "unknown-sensor", 13: "sensor-displaced",
                     14: "sensor-malfunctioning", 15: "sensor-disconnected"}


def _plx(value: bytes, spot: bool) -> list[Event]:
    r = _Reader(value)
    flags = r.u8()
    _rfu(flags, 5)
    spo2, pr = r.sfloat(), r.sfloat()
    stamp = None
    context: tuple[tuple[str, str], ...] = ()
    status: tuple[str, ...] = ()
    if spot:
        stamp = r.time() if flags & 0x01 else None
        has_status, has_sensor, has_pai = flags & 0x02, flags & 0x04, flags & 0x08
        if flags & 0x10:
            status += ("device-clock-not-set",)
    else:
        for bit, name in ((0x01, "fast"), (0x02, "slow")):
            if flags & bit:
                s, p = r.sfloat(), r.sfloat()
                context += ((f"spo2-{name}", str(s.value)), (f"pr-{name}", str(p.value)))
        has_status, has_sensor, has_pai = flags & 0x04, flags & 0x08, flags & 0x10
    if has_status:
        status += _bits(r.u16(), PLX_MEASUREMENT)
    if has_sensor:
        status += _bits(r.u24(), PLX_SENSOR)
    pai = r.sfloat() if has_pai else None
    r.done()
    events: list[Event] = [
        _m("spo2", spo2, "%", value, device_time=stamp, flags=status, context=context),
        _m("pulse_rate", pr, "/min", value, device_time=stamp, flags=status, context=context),
    ]
    if pai is not None:
        events.append(_m("pulse_amplitude_index", pai, "%", value, device_time=stamp,
                         flags=status, context=context))
    return events


@_guard
def decode_2a5e(value: bytes) -> list[Event]:
    """PLX Spot-check Measurement."""
    return _plx(value, spot=True)


@_guard
def decode_2a5f(value: bytes) -> list[Event]:
    """PLX Continuous Measurement (normal SpO2/PR; fast and slow kept in context)."""
    return _plx(value, spot=False)


# --- Weight 0x2A9D / body composition 0x2A9C ------------------------------------------------
def _mass(raw: int, imperial: bool) -> tuple[float, str]:
    return (round(raw * 0.01, 2), "[lb_av]") if imperial else (round(raw * 0.005, 3), "kg")


def _height(raw: int, imperial: bool) -> tuple[float, str]:
    # SI resolution 0.001 m = 0.1 cm; imperial 0.1 in.
    return (round(raw * 0.1, 1), "[in_i]") if imperial else (round(raw * 0.1, 1), "cm")


@_guard
def decode_2a9d(value: bytes) -> list[Event]:
    """Weight Measurement (0xFFFF: measurement unsuccessful)."""
    r = _Reader(value)
    flags = r.u8()
    _rfu(flags, 4)
    imperial = bool(flags & 0x01)
    weight = r.u16()
    stamp = r.time() if flags & 0x02 else None
    context: tuple[tuple[str, str], ...] = ()
    if flags & 0x04:
        user = r.u8()
        context = (("user", "unknown" if user == 255 else str(user)),)
    if weight == 0xFFFF:  # then only time stamp and user id may follow (WSS 1.0)
        r.done()
        return [DeviceInfo("weight", "measurement-unsuccessful")]
    events: list[Event] = []
    mass, unit = _mass(weight, imperial)
    events.append(measurement("body_weight", mass, unit, device_time=stamp, raw=value,
                              context=context))
    if flags & 0x08:
        bmi, height = r.u16(), r.u16()
        events.append(measurement("bmi", round(bmi * 0.1, 1), device_time=stamp, raw=value,
                                  context=context))
        h, hunit = _height(height, imperial)
        events.append(measurement("body_height", h, hunit, device_time=stamp, raw=value,
                                  context=context))
    r.done()
    return events


@_guard
def decode_2a9c(value: bytes) -> list[Event]:
    """Body Composition Measurement (16-bit flags; body fat 0xFFFF: unsuccessful)."""
    r = _Reader(value)
    flags = r.u16()
    _rfu(flags, 13)
    imperial = bool(flags & 0x0001)
    fat = r.u16()
    stamp = r.time() if flags & 0x0002 else None
    context: list[tuple[str, str]] = []
    if flags & 0x0004:
        user = r.u8()
        context.append(("user", "unknown" if user == 255 else str(user)))
    extra: list[Event] = []
    if flags & 0x0008:
        context.append(("basal-metabolism", f"{r.u16()} kJ"))
    if flags & 0x0010:
        context.append(("muscle-percentage", f"{r.u16() * 0.1:.1f} %"))
    for bit, name in ((0x0020, "muscle-mass"), (0x0040, "fat-free-mass"),
                      (0x0080, "soft-lean-mass"), (0x0100, "body-water-mass")):
        if flags & bit:
            mass, unit = _mass(r.u16(), imperial)
            context.append((name, f"{mass} {unit}"))
    if flags & 0x0200:
        context.append(("impedance", f"{r.u16() * 0.1:.1f} Ohm"))
    ctx = tuple(context)
    if flags & 0x0400:
        mass, unit = _mass(r.u16(), imperial)
        extra.append(measurement("body_weight", mass, unit, device_time=stamp, raw=value,
                                 context=ctx))
    if flags & 0x0800:
        h, unit = _height(r.u16(), imperial)
        extra.append(measurement("body_height", h, unit, device_time=stamp, raw=value,
                                 context=ctx))
    r.done()
    if flags & 0x1000:
        ctx += (("multiple-packet", "1"),)
    if fat == 0xFFFF:
        return [DeviceInfo("body-composition", "measurement-unsuccessful"), *extra]
    return [measurement("body_fat_percentage", round(fat * 0.1, 1), device_time=stamp,
                        raw=value, context=ctx), *extra]


DECODERS: Final[dict[str, Callable[[bytes], list[Event]]]] = {
    "2a35": decode_2a35, "2a36": decode_2a36, "2a37": decode_2a37, "2a1c": decode_2a1c,
    "2a18": decode_2a18, "2a34": decode_2a34, "2a5e": decode_2a5e, "2a5f": decode_2a5f,
    "2a9d": decode_2a9d, "2a9c": decode_2a9c,
}


# --- Record Access Control Point 0x2A52 ------------------------------------------------------
RACP_RESPONSES: Final = {1: "success", 2: "op-code-not-supported", 3: "invalid-operator",
                         4: "operator-not-supported", 5: "invalid-operand",
                         6: "no-records-found", 7: "abort-unsuccessful",
                         8: "procedure-not-completed", 9: "operand-not-supported"}


def racp_report_all() -> bytes:
    return b"\x01\x01"


def racp_report_from(seq: int) -> bytes:
    """Report stored records with sequence number >= ``seq``."""
    return b"\x01\x03\x01" + seq.to_bytes(2, "little")


def racp_count_all() -> bytes:
    return b"\x04\x01"


def racp_count_from(seq: int) -> bytes:
    return b"\x04\x03\x01" + seq.to_bytes(2, "little")


def racp_abort() -> bytes:
    return b"\x03\x00"


@dataclass(frozen=True)
class RacpResponse:
    kind: str  # "count" or "response"
    count: int | None = None
    request: int | None = None
    code: str | None = None


def parse_racp(value: bytes) -> RacpResponse | None:
    if len(value) == 4 and value[0] == 0x05 and value[1] == 0x00:
        return RacpResponse("count", count=int.from_bytes(value[2:4], "little"))
    if len(value) == 4 and value[0] == 0x06 and value[1] == 0x00:
        return RacpResponse("response", request=value[2],
                            code=RACP_RESPONSES.get(value[3], f"reserved-{value[3]}"))
    return None


# --- GATT decoders -------------------------------------------------------------------------
class HealthDecoder:
    """Notify/indicate profiles: each value is one complete measurement; nothing to ask."""

    def __init__(self, characteristics: tuple[str, ...]) -> None:
        unknown = [c for c in characteristics if c not in DECODERS]
        if unknown:
            raise DecoderMisuse(f"no decoder for characteristics {unknown}")
        self.subscriptions = characteristics

    def receive_value(self, characteristic: str, value: bytes) -> list[Event]:
        decode = DECODERS.get(characteristic)
        if decode is None:
            return [Rejected(bytes(value), f"unexpected-characteristic-{characteristic}")]
        return decode(value)

    def writes_to_send(self) -> list[GattWrite]:
        return []

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        raise DecoderMisuse(f"notify profiles have no messages to acknowledge: {message_id!r}")


@dataclass
class GlucoseDownload:
    """Download a glucose meter's stored records with the RACP, once each.

    First pairing (``last_seq`` None): report all records; then only records with a sequence
    number above the last one stored. The records of a procedure are emitted together, with
    ``MessageComplete``, when the meter indicates success or "no records found" (not an
    error); ``acknowledge(stored=True)`` then advances :attr:`last_seq`, never earlier, so a
    disconnect or a failed commit downloads the same records again rather than skipping any.
    """

    last_seq: int | None = None
    subscriptions: tuple[str, ...] = ("2a18", "2a34", "2a52")
    _writes: list[GattWrite] = field(default_factory=list)
    _records: dict[int, GlucoseRecord] = field(default_factory=dict)
    _contexts: dict[int, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    _hba1c: list[Event] = field(default_factory=list)
    _completed: dict[str, int | None] = field(default_factory=dict)
    _procedures: int = 0
    active: bool = False

    def start(self) -> None:
        request = racp_report_all() if self.last_seq is None else racp_report_from(
            self.last_seq + 1)
        self._writes.append(GattWrite("2a52", request))
        self._records.clear()
        self._contexts.clear()
        self._hba1c.clear()
        self.active = True

    def abort(self) -> None:
        self._writes.append(GattWrite("2a52", racp_abort()))
        self.active = False

    def writes_to_send(self) -> list[GattWrite]:
        out, self._writes = self._writes, []
        return out

    def receive_value(self, characteristic: str, value: bytes) -> list[Event]:
        if characteristic == "2a18":
            try:
                record = parse_glucose(value)
            except _Bad as bad:
                return [Rejected(bytes(value), bad.reason)]
            self._records[record.sequence] = record
            return []
        if characteristic == "2a34":
            try:
                seq, ctx, hba1c = parse_context(value)
            except _Bad as bad:
                return [Rejected(bytes(value), bad.reason)]
            self._contexts[seq] = ctx
            if hba1c is not None:
                self._hba1c.append(_m("hba1c", hba1c, "%", value,
                                      context=(("sequence", str(seq)), *ctx)))
            return []
        if characteristic == "2a52":
            return self._racp(value)
        return [Rejected(bytes(value), f"unexpected-characteristic-{characteristic}")]

    def _racp(self, value: bytes) -> list[Event]:
        response = parse_racp(value)
        if response is None:
            return [Rejected(bytes(value), "racp-malformed")]
        if response.kind == "count":
            return [DeviceInfo("racp-count", str(response.count))]
        self.active = False
        if response.code not in ("success", "no-records-found"):
            # Nothing is kept: the next procedure asks again from the same cursor.
            self._records.clear()
            self._contexts.clear()
            self._hba1c.clear()
            return [DeviceInfo("racp", response.code or "unknown")]
        events: list[Event] = []
        for seq in sorted(self._records):
            extra = self._contexts.get(seq, ())
            for event in self._records[seq].events:
                if isinstance(event, Measurement) and extra:
                    event = replace(event, context=event.context + extra)
                events.append(event)
        events += self._hba1c
        self._procedures += 1
        message_id = f"racp-{self._procedures}"
        self._completed[message_id] = max(self._records) if self._records else None
        self._records.clear()
        self._contexts.clear()
        self._hba1c = []
        return [*events, MessageComplete(message_id)]

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        if message_id not in self._completed:
            raise DecoderMisuse(f"no RACP procedure {message_id!r} is waiting")
        highest = self._completed.pop(message_id)
        if stored and highest is not None:
            self.last_seq = highest if self.last_seq is None else max(self.last_seq, highest)
