"""Shared by every GATT profile: the byte reader, SFLOAT/FLOAT and time helpers, totality."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import wraps
from typing import Final

from drivers.base import (
    Event,
    Rejected,
)
from drivers.protocols.ieee11073 import MderValue, decode_date_time, decode_float, decode_sfloat
from drivers.protocols.policy import checked
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
