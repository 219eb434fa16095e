"""IEEE 11073-20601 SFLOAT/FLOAT and the Bluetooth Date Time (docs/protocols.md §1):
special values are never numbers, the exponent keeps the precision, every 16-bit pattern
round-trips, impossible dates are refused."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.protocols.ieee11073 import (
    MderValue,
    Special,
    decode_date_time,
    decode_float,
    decode_sfloat,
    encode_date_time,
    encode_float,
    encode_sfloat,
)

SFLOAT_SPECIALS = [
    (0x07FF, Special.NAN, "not-a-number"),
    (0x0800, Special.NRES, "error"),
    (0x07FE, Special.POSITIVE_INFINITY, "positive-infinity"),
    (0x0802, Special.NEGATIVE_INFINITY, "negative-infinity"),
    (0x0801, Special.RESERVED, "error"),
]
FLOAT_SPECIALS = [
    (0x007FFFFF, Special.NAN),
    (0x00800000, Special.NRES),
    (0x007FFFFE, Special.POSITIVE_INFINITY),
    (0x00800002, Special.NEGATIVE_INFINITY),
    (0x00800001, Special.RESERVED),
]


@pytest.mark.parametrize(("raw", "special", "reason"), SFLOAT_SPECIALS)
def test_sfloat_special_values_are_never_numbers(raw: int, special: Special, reason: str) -> None:
    assert decode_sfloat(raw) == MderValue(None, special, 0)
    assert decode_sfloat(raw).absent_reason == reason
    assert decode_sfloat(raw).scaled(5) is None
    assert encode_sfloat(special) == raw


@pytest.mark.parametrize(("raw", "special"), FLOAT_SPECIALS)
def test_float_special_values_are_never_numbers(raw: int, special: Special) -> None:
    assert decode_float(raw) == MderValue(None, special, 0)
    assert encode_float(special) == raw


@pytest.mark.parametrize(
    ("raw", "text", "exponent"),
    [
        (0xF014, "2.0", -1),  # PROTOCOLS.md §1: the exponent is the precision
        (0xE0C8, "2.00", -2),
        (0xF7FF, "204.7", -1),  # exponent -1: a number, not NaN
        (0x07FD, "2045", 0),  # largest exponent-0 number
        (0x0803, "-2045", 0),
        (0x0FFF, "-1", 0),
        (0x8001, "1E-8", -8),  # exponent sign-extended: 0x8 is -8, not +8
        (0x7001, "1E+7", 7),
        (0xB078, "0.00120", -5),  # 120 mg/dL as kg/L
    ],
)
def test_sfloat_numbers_keep_their_exponent(raw: int, text: str, exponent: int) -> None:
    got = decode_sfloat(raw)
    assert (str(got.value), got.exponent, got.special) == (text, exponent, None)
    assert got.absent_reason is None


def test_float_numbers_and_scaling() -> None:
    assert decode_float(0xFE000E72) == MderValue(Decimal("36.98"), None, -2)
    assert decode_float(0x00FFFFFF).value == Decimal(-1)
    assert decode_float(0xFF0003DA).scaled(0) == Decimal("98.6")
    assert decode_sfloat(0xB078).scaled(5) == Decimal("120")  # kg/L -> mg/dL, exactly


def test_every_sfloat_pattern_round_trips() -> None:
    for raw in range(1 << 16):
        got = decode_sfloat(raw)
        if got.special is not None:
            assert got.value is None and encode_sfloat(got.special) == raw
        else:
            assert got.value is not None
            assert encode_sfloat(got.value, got.exponent) == raw


@given(st.integers(0, 0xFFFFFFFF))
def test_any_float_pattern_round_trips(raw: int) -> None:
    got = decode_float(raw)
    if got.special is not None:
        assert got.value is None and encode_float(got.special) == raw
    else:
        assert got.value is not None and encode_float(got.value, got.exponent) == raw


@pytest.mark.parametrize(
    ("value", "raw"),
    [
        ("2.0", 0xF014),
        (Decimal("2.00"), 0xE0C8),
        (120, 0x0078),
        (-1, 0x0FFF),
        (36.8, 0xF170),
        ("0.00120", 0xB078),
        (20450, 0x17FD),
        (Decimal("1E+7"), 0x7001),
    ],
)
def test_encode_keeps_the_written_precision(value: Decimal | int | float | str, raw: int) -> None:
    assert encode_sfloat(value) == raw


def test_encode_with_a_resolution_rounds_like_a_device() -> None:
    assert encode_sfloat(36.85, -1) == encode_sfloat("36.8")  # half-even
    assert encode_sfloat(36.75, -1) == encode_sfloat("36.8")
    assert encode_float(36.987, -2) == 0xFE000E73


@pytest.mark.parametrize(
    "value", [2046, 2047, -2046, -2048, "12345", 0.123456789, "nan", "inf", "x", Decimal("1E+8")]
)
def test_encode_refuses_what_the_format_cannot_hold(value: int | float | str) -> None:
    with pytest.raises(ValueError):
        encode_sfloat(value)


@pytest.mark.parametrize("raw", [-1, 1 << 16])
def test_decode_refuses_out_of_range_integers(raw: int) -> None:
    with pytest.raises(ValueError):
        decode_sfloat(raw)


# --- Date Time -------------------------------------------------------------------------------
def test_date_time_is_iso_without_zone() -> None:
    assert decode_date_time(bytes.fromhex("ea070b17080f00")) == "2026-11-23T08:15:00"
    assert decode_date_time(encode_date_time(2024, 6, 23, 14, 35, 10)) == "2024-06-23T14:35:10"


@pytest.mark.parametrize(
    "octets", ["00000b17080f00", "ea07001708 0f00", "ea070b00080f00", "00000000000000"]
)
def test_unknown_date_is_none(octets: str) -> None:
    assert decode_date_time(bytes.fromhex(octets)) is None


@pytest.mark.parametrize(
    "octets",
    [
        "ea070d01000000",
        "ea07041f000000",
        "ea070b17180000",
        "ea070b17003c00",
        "b0040101000000",
        "ea070b17080f",
        "ea070b17080f0000",
    ],
)
def test_impossible_or_misframed_date_raises_value_error(octets: str) -> None:
    with pytest.raises(ValueError):
        decode_date_time(bytes.fromhex(octets))


@given(st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)))
def test_date_time_round_trips(when: datetime) -> None:
    when = when.replace(microsecond=0)
    octets = encode_date_time(when.year, when.month, when.day, when.hour, when.minute, when.second)
    assert decode_date_time(octets) == when.isoformat()


@given(st.binary(min_size=7, max_size=7))
def test_any_seven_octets_give_a_time_none_or_value_error(octets: bytes) -> None:
    try:
        got = decode_date_time(octets)
    except ValueError:
        return
    assert got is None or datetime.fromisoformat(got).tzinfo is None
