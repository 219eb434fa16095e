"""Glucose profile 0x1808: measurement 0x2A18 and its context 0x2A34."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from drivers.base import (
    DeviceInfo,
    Event,
)
from drivers.protocols.ble_health.common import (
    Context,
    _Bad,
    _bits,
    _flags8,
    _mder,
    _mder_text,
    _named,
    _Reader,
    _Time,
    _time,
    _total,
)
from drivers.protocols.ieee11073 import MderValue
from drivers.protocols.policy import withheld
from edge_agent.catalogue import loinc_for
from edge_agent.models import Measurement

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
