"""IEEE 11073-20601 numbers (SFLOAT, FLOAT) and the Bluetooth Date Time, sans-I/O.

Facts: ``shared/PROTOCOLS.md`` §1. Special values are defined with exponent 0 only and are
never numbers: they come back as ``special`` with ``value = None`` (NaN decoded as 2047 and
stored as a blood pressure is the classic bug). The exponent is kept: it carries precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

SFLOAT_SPECIAL: Final = {0x07FF: "nan", 0x0800: "nres", 0x07FE: "+inf", 0x0802: "-inf",
                         0x0801: "reserved"}
FLOAT_SPECIAL: Final = {0x007FFFFF: "nan", 0x00800000: "nres", 0x007FFFFE: "+inf",
                        0x00800002: "-inf", 0x00800001: "reserved"}
# FHIR dataAbsentReason per the PHD IG (MderFLOATsandSFLOATs.md)
ABSENT_REASON: Final = {"nan": "not-a-number", "nres": "error", "+inf": "positive-infinity",
                        "-inf": "negative-infinity", "reserved": "error"}


@dataclass(frozen=True, slots=True)
class MderValue:
    value: float | None
    special: str | None = None
    exponent: int = 0

    @property
    def absent_reason(self) -> str | None:
        return None if self.special is None else ABSENT_REASON[self.special]


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _number(mantissa: int, exponent: int) -> float:
    return float(Decimal(mantissa).scaleb(exponent))


def sfloat(raw: int) -> MderValue:
    if raw in SFLOAT_SPECIAL:
        return MderValue(None, SFLOAT_SPECIAL[raw])
    exponent = _signed(raw >> 12, 4)
    return MderValue(_number(_signed(raw & 0x0FFF, 12), exponent), None, exponent)


def float32(raw: int) -> MderValue:
    if raw in FLOAT_SPECIAL:
        return MderValue(None, FLOAT_SPECIAL[raw])
    exponent = _signed(raw >> 24, 8)
    return MderValue(_number(_signed(raw & 0xFFFFFF, 24), exponent), None, exponent)


def encode_sfloat(mantissa: int, exponent: int = 0) -> int:
    if not -2048 <= mantissa <= 2047 or not -8 <= exponent <= 7:
        raise ValueError("SFLOAT mantissa is 12-bit signed, exponent 4-bit signed")
    return ((exponent & 0x0F) << 12) | (mantissa & 0x0FFF)


def encode_float32(mantissa: int, exponent: int = 0) -> int:
    if not -(1 << 23) <= mantissa < (1 << 23) or not -128 <= exponent <= 127:
        raise ValueError("FLOAT mantissa is 24-bit signed, exponent 8-bit signed")
    return ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF)


def date_time(octets: bytes) -> str | None:
    """Date Time (0x2A08): 7 octets, device-local wall clock, no zone. None when unknown or
    impossible (year/month/day 0 mean "not known")."""
    year = int.from_bytes(octets[0:2], "little")
    month, day, hour, minute, second = octets[2:7]
    if year == 0 or month == 0 or day == 0:
        return None
    if not (1582 <= year <= 9999 and month <= 12 and day <= 31 and hour < 24 and minute < 60
            and second < 60):
        return None
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"


def encode_date_time(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
                     second: int = 0) -> bytes:
    return year.to_bytes(2, "little") + bytes([month, day, hour, minute, second])
