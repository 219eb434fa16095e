"""Weight Scale 0x181D (0x2A9D) and Body Composition 0x181B (0x2A9C, multiple packets)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from drivers.base import (
    Event,
    Rejected,
)
from drivers.protocols.ble_health.common import (
    _NO_TIME,
    Context,
    _Bad,
    _fixed,
    _flags8,
    _Reader,
    _Time,
    _time,
    _total,
    _unsuccessful,
    _user,
)


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
