"""IEEE 11073-20601 numbers (SFLOAT, FLOAT) and the Bluetooth Date Time, sans-I/O.

Facts: ``docs/protocols.md`` §1. The special values (NaN, NRes, +INF, -INF, reserved) are
defined with exponent 0 only and are never numbers: they decode to ``MderValue(value=None,
special=...)`` (NaN read as 2047 and stored as a blood pressure is the classic bug). A number
keeps its exponent as a :class:`~decimal.Decimal` because the exponent is the device's
resolution: 0xF014 is ``Decimal("2.0")``, 0xE0C8 ``Decimal("2.00")`` (the PHD IG keeps it).

Encoders are here for tests and device models; decoders never raise for any 16/32-bit input.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum
from typing import Final


class Special(StrEnum):
    NAN = "nan"  # invalid result
    NRES = "nres"  # not at this resolution
    POSITIVE_INFINITY = "+inf"
    NEGATIVE_INFINITY = "-inf"
    RESERVED = "reserved"


# FHIR dataAbsentReason per the PHD IG (MderFLOATsandSFLOATs.md); reserved is treated as NRes.
ABSENT_REASON: Final[dict[Special, str]] = {
    Special.NAN: "not-a-number",
    Special.NRES: "error",
    Special.POSITIVE_INFINITY: "positive-infinity",
    Special.NEGATIVE_INFINITY: "negative-infinity",
    Special.RESERVED: "error",
}
# Special values as mantissas with exponent 0 (same mantissa meaning in SFLOAT and FLOAT).
_SFLOAT_SPECIAL: Final = {
    0x07FF: Special.NAN,
    0x0800: Special.NRES,
    0x07FE: Special.POSITIVE_INFINITY,
    0x0802: Special.NEGATIVE_INFINITY,
    0x0801: Special.RESERVED,
}
_FLOAT_SPECIAL: Final = {
    0x007FFFFF: Special.NAN,
    0x00800000: Special.NRES,
    0x007FFFFE: Special.POSITIVE_INFINITY,
    0x00800002: Special.NEGATIVE_INFINITY,
    0x00800001: Special.RESERVED,
}
_SFLOAT_CODE: Final = {special: raw for raw, special in _SFLOAT_SPECIAL.items()}
_FLOAT_CODE: Final = {special: raw for raw, special in _FLOAT_SPECIAL.items()}

Number = Decimal | int | float | str


@dataclass(frozen=True, slots=True)
class MderValue:
    """A decoded SFLOAT/FLOAT: a number (``value``) or a special value, never both."""

    value: Decimal | None
    special: Special | None = None
    exponent: int = 0

    @property
    def absent_reason(self) -> str | None:
        return None if self.special is None else ABSENT_REASON[self.special]

    def scaled(self, power: int) -> Decimal | None:
        """The value times 10**power, exactly (kg/L -> mg/dL is ``scaled(5)``)."""
        return None if self.value is None else self.value.scaleb(power)


@dataclass(frozen=True, slots=True)
class _Layout:
    bits: int
    mantissa_bits: int
    specials: dict[int, Special]
    codes: dict[Special, int]


_SFLOAT: Final = _Layout(16, 12, _SFLOAT_SPECIAL, _SFLOAT_CODE)
_FLOAT: Final = _Layout(32, 24, _FLOAT_SPECIAL, _FLOAT_CODE)


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def _decode(raw: int, layout: _Layout) -> MderValue:
    if not 0 <= raw < (1 << layout.bits):
        raise ValueError(f"not a {layout.bits}-bit value: {raw}")
    special = layout.specials.get(raw)
    if special is not None:
        return MderValue(None, special)
    exponent = _signed(raw >> layout.mantissa_bits, layout.bits - layout.mantissa_bits)
    mantissa = _signed(raw & ((1 << layout.mantissa_bits) - 1), layout.mantissa_bits)
    return MderValue(Decimal(mantissa).scaleb(exponent), None, exponent)


def decode_sfloat(raw: int) -> MderValue:
    """SFLOAT (16 bit as an unsigned int, already assembled little-endian)."""
    return _decode(raw, _SFLOAT)


def decode_float(raw: int) -> MderValue:
    """FLOAT (32 bit as an unsigned int, already assembled little-endian)."""
    return _decode(raw, _FLOAT)


def _encode(value: Number | Special, exponent: int | None, layout: _Layout) -> int:
    if isinstance(value, Special):
        return layout.codes[value]
    try:
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError("use Special for NaN and infinities")
    exponent_bits = layout.bits - layout.mantissa_bits
    if exponent is None:
        # The written precision is the resolution ("2.0" -> 20e-1); exact or ValueError.
        written = number.as_tuple().exponent
        assert isinstance(written, int)  # finite, checked above
        exponent = written
        mantissa = int(number.scaleb(-exponent))
    else:
        # A fixed resolution, as a device has: round to it.
        mantissa = int(number.scaleb(-exponent).quantize(Decimal(1), ROUND_HALF_EVEN))
    half = 1 << (layout.mantissa_bits - 1)
    low, high = -half, half - 1
    while not low <= mantissa <= high and mantissa % 10 == 0:  # drop trailing zeros if needed
        mantissa //= 10
        exponent += 1
    if exponent == 0:
        low, high = low + 3, high - 2  # the top and bottom codes at exponent 0 are specials
    exp_half = 1 << (exponent_bits - 1)
    if not (low <= mantissa <= high and -exp_half <= exponent < exp_half):
        raise ValueError(f"{value!r} does not fit a {layout.bits}-bit MDER float")
    exp_mask = (1 << exponent_bits) - 1
    mantissa_mask = (1 << layout.mantissa_bits) - 1
    return ((exponent & exp_mask) << layout.mantissa_bits) | (mantissa & mantissa_mask)


def encode_sfloat(value: Number | Special, exponent: int | None = None) -> int:
    """SFLOAT bits for ``value``. Without ``exponent`` the written precision is kept
    (``"2.0"`` -> 0xF014) and an inexact fit raises ValueError; with it, rounds half-even."""
    return _encode(value, exponent, _SFLOAT)


def encode_float(value: Number | Special, exponent: int | None = None) -> int:
    """FLOAT bits for ``value``; same rules as :func:`encode_sfloat`."""
    return _encode(value, exponent, _FLOAT)


def decode_date_time(octets: bytes) -> str | None:
    """Date Time (0x2A08, 7 octets) -> ``YYYY-MM-DDTHH:MM:SS``, the device's local wall clock
    without zone. None when year, month or day is 0 ("not known"). ValueError when the octets
    are not 7 or name an impossible instant (month 13, 31 April, hour 24, year 1200)."""
    if len(octets) != 7:
        raise ValueError(f"Date Time is 7 octets, got {len(octets)}")
    year = int.from_bytes(octets[0:2], "little")
    month, day, hour, minute, second = octets[2:7]
    if year == 0 or month == 0 or day == 0:
        return None
    if year < 1582:
        raise ValueError(f"Date Time year {year} is before 1582")
    return datetime(year, month, day, hour, minute, second).isoformat()


def encode_date_time(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> bytes:
    """Date Time octets; zeros in year/month/day encode "not known" as devices send it."""
    fields = (month, day, hour, minute, second)
    if not 0 <= year <= 0xFFFF or not all(0 <= f <= 0xFF for f in fields):
        raise ValueError("Date Time field out of range")
    return year.to_bytes(2, "little") + bytes(fields)
