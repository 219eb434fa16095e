"""Heart Rate profile 0x180D: measurement 0x2A37."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from drivers.base import (
    Event,
)
from drivers.protocols.ble_health.common import (
    Context,
    _Bad,
    _flags8,
    _Reader,
    _total,
)
from drivers.protocols.policy import checked, withheld
from edge_agent.models import measurement

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
