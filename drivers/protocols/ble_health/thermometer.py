"""Health Thermometer profile 0x1809: temperature 0x2A1C, intermediate 0x2A1E."""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from drivers.base import (
    Event,
)
from drivers.protocols.ble_health.common import (
    _NO_TIME,
    Context,
    _flags8,
    _mder,
    _named,
    _Reader,
    _time,
    _total,
)
from edge_agent.models import Measurement

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
