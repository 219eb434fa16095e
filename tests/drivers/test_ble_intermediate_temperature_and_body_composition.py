"""Intermediate Temperature 0x2A1E and multiple-packet Body Composition reassembly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Rejected
from drivers.decode import decode
from drivers.protocols.ble_health import DECODERS, BodyCompositionAssembler, HealthDecoder
from drivers.simulators import ble_values as enc
from edge_agent.models import Measurement
from tests.drivers.test_ble_health import CAPTURES, read_capture

WHEN = (2026, 11, 23, 9, 30, 0)


def first_half() -> bytes:
    return enc.encode_2a9c(
        23.4,
        "kg",
        WHEN,
        2,
        multiple_packet=True,
        basal_metabolism=6500,
        muscle_percentage=38.5,
        muscle_mass=28.1,
        fat_free_mass=54.2,
    )


def second_half(fat: float = 23.4) -> bytes:
    return enc.encode_2a9c(
        fat,
        "kg",
        multiple_packet=True,
        soft_lean_mass=50.3,
        body_water_mass=39.8,
        impedance=512.3,
        weight=70.8,
        height=172.0,
    )


def values(events: Sequence[object]) -> dict[str, float | None]:
    return {e.quantity: e.value for e in events if isinstance(e, Measurement)}


@given(st.integers(300, 430).map(lambda t: t / 10), st.sampled_from(["Cel", "[degF]"]))
def test_intermediate_temperature_is_flagged_never_a_reading(
    t: float, unit: Literal["Cel", "[degF]"]
) -> None:
    (m,) = DECODERS["2a1e"](enc.encode_2a1c(t, unit))
    assert isinstance(m, Measurement) and m.flags[0] == "intermediate" and m.value == t
    final = DECODERS["2a1c"](enc.encode_2a1c(t, unit))
    assert next(e for e in final if isinstance(e, Measurement)).flags == ()


def test_decode_cli_knows_2a1e() -> None:
    out = decode("ble:2a1e", enc.encode_2a1c(36.4, "Cel", site=6))
    assert out["measurements"][0]["flags"] == ["intermediate"]


def test_two_packets_join_into_one_set_in_either_order() -> None:
    a, b = first_half(), second_half()
    assert len(a) <= 20 and len(b) <= 20  # each fits the default ATT payload
    for order in ((a, b), (b, a)):
        assembler = BodyCompositionAssembler()
        assert assembler.receive(order[0]) == []  # held until its partner comes
        events = assembler.receive(order[1])
        got = values(events)
        assert got == {
            "body_fat_percentage": 23.4,
            "basal_metabolism": 6500.0,
            "muscle_percentage": 38.5,
            "muscle_mass": 28.1,
            "fat_free_mass": 54.2,
            "soft_lean_mass": 50.3,
            "body_water_mass": 39.8,
            "body_impedance": 512.3,
            "body_weight": 70.8,
            "body_height": 172.0,
        }
        ms = [e for e in events if isinstance(e, Measurement)]
        assert all(m.flags == ("reassembled",) for m in ms)
        assert all(m.device_time == "2026-11-23T09:30:00" for m in ms)
        assert all(dict(m.context)["user"] == "2" for m in ms)
        assert all(m.raw == order[0] + order[1] for m in ms)
        assert assembler.flush() == []


@pytest.mark.parametrize(
    "second",
    [
        second_half(23.5),  # another body fat %
        enc.encode_2a9c(23.4, "kg", multiple_packet=True, muscle_mass=30.0),  # a field twice
        enc.encode_2a9c(23.4, "kg", WHEN, 3, multiple_packet=True, weight=70.8),  # another user
        enc.encode_2a9c(23.4, "[lb_av]", multiple_packet=True, weight=150.0),  # another unit
    ],
)
def test_packets_that_cannot_belong_together_are_never_merged(second: bytes) -> None:
    first = first_half()
    assembler = BodyCompositionAssembler()
    assembler.receive(first)
    events = assembler.receive(second)  # the first half goes out alone, flagged
    assert {m.flags for m in events if isinstance(m, Measurement)} == {
        ("incomplete-multiple-packet",)
    }
    assert all(m.raw == first for m in events if isinstance(m, Measurement))
    rest = assembler.flush()
    assert rest and all(isinstance(m, Measurement) and m.raw == second for m in rest)


def test_health_decoder_reassembles_the_golden_capture_and_flushes_a_lone_half() -> None:
    decoder = HealthDecoder(("2a9c",))
    events = [
        e
        for _, ch, v in read_capture(CAPTURES / "body-composition-multipacket-gss.hex")
        for e in decoder.receive_value(ch, v)
    ]
    ms = [e for e in events if isinstance(e, Measurement)]
    assert [m.flags for m in ms].count(("reassembled",)) == 10
    assert [(m.quantity, m.value) for m in ms if m.flags == ("incomplete-multiple-packet",)] == [
        ("body_fat_percentage", 24.0),
        ("body_weight", 60.2),
    ]
    assert [(m.quantity, m.value) for m in ms if m.flags == ()] == [
        ("body_fat_percentage", 19.9),
        ("body_weight", 81.0),
    ]
    assert decoder.flush() == []


def test_a_bad_packet_flushes_the_held_half_and_is_rejected() -> None:
    assembler = BodyCompositionAssembler()
    assembler.receive(first_half())
    events = assembler.receive(b"\x00\x10\x01")
    assert isinstance(events[-1], Rejected) and events[-1].reason == "truncated"
    assert len([e for e in events if isinstance(e, Measurement)]) == 5


@given(st.lists(st.binary(max_size=24), max_size=8))
def test_any_packets_never_raise_and_keep_every_value_once(packets: list[bytes]) -> None:
    assembler = BodyCompositionAssembler()
    events = [e for p in packets for e in assembler.receive(p)] + assembler.flush()
    raws = [e.raw for e in events if isinstance(e, Rejected)]
    assert all(r in packets for r in raws)
