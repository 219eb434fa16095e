"""Pulse Oximeter profile 0x1822: spot-check 0x2A5E, continuous 0x2A5F."""

from __future__ import annotations

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
    _mder_text,
    _Reader,
    _Time,
    _time,
    _total,
)
from drivers.protocols.ieee11073 import MderValue

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
