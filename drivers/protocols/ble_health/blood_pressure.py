"""Blood Pressure profile 0x1810: measurement 0x2A35, intermediate cuff pressure 0x2A36."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from drivers.base import (
    Event,
)
from drivers.protocols.ble_health.common import (
    _NO_TIME,
    Context,
    _bits,
    _flags8,
    _mder,
    _Reader,
    _Time,
    _time,
    _total,
    _user,
)
from drivers.protocols.ieee11073 import MderValue

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
