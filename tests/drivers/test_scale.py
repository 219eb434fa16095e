"""ASCII scales: golden lines, one reading per stable weighing, split-anywhere, garbage."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DeviceInfo, Event, Rejected
from drivers.protocols.scale import ScaleDecoder
from drivers.simulators.scale import ScaleModel, encode_balance, encode_indicator
from edge_agent.models import Measurement

CAPTURE = Path(__file__).resolve().parents[1] / "captures" / "scale" / \
    "indicator-manual-examples.txt"


def capture() -> bytes:
    lines = [ln for ln in CAPTURE.read_text().splitlines() if not ln.startswith("#")]
    return "".join(ln + "\r\n" for ln in lines).encode()


def decode(data: bytes, chunks: list[int] | None = None) -> list[Event]:
    decoder = ScaleDecoder()
    events: list[Event] = []
    pos = 0
    for size in chunks or []:
        events += decoder.receive_data(data[pos : pos + size])
        pos += size
    return events + decoder.receive_data(data[pos:]) + decoder.receive_data(b"")


def weights(events: list[Event]) -> list[tuple[float | None, str, str]]:
    return [(e.value, e.unit, dict(e.context)["mode"]) for e in events
            if isinstance(e, Measurement)]


def test_golden_lines() -> None:
    events = decode(capture())
    assert weights(events) == [(72.45, "kg", "gross"), (12.3, "kg", "net"), (123.45, "g", "gross")]
    assert [e for e in events if isinstance(e, DeviceInfo)] == [
        DeviceInfo("scale", "unstable"), DeviceInfo("scale", "stable"),
        DeviceInfo("scale", "overload"), DeviceInfo("scale", "stable"),
    ]
    assert [(e.reason, e.raw) for e in events if isinstance(e, Rejected)] == [
        ("malformed", b"HELLO WORLD\r\n")]
    first = next(e for e in events if isinstance(e, Measurement))
    assert first.raw == b"ST,GS,+  72.45kg\r\n" and first.loinc == "29463-7"


@given(st.lists(st.integers(1, 30), max_size=40))
def test_split_anywhere_gives_the_same_events(chunks: list[int]) -> None:
    assert decode(capture(), chunks) == decode(capture())


@given(st.binary(max_size=300), st.floats(0.5, 300).map(lambda w: round(w, 2)))
def test_garbage_never_raises_and_the_next_weighing_decodes(junk: bytes, weight: float) -> None:
    events = decode(junk + b"\r\n" + encode_indicator(0.0) + encode_indicator(weight))
    assert weights(events)[-1] == (weight, "kg", "gross")
    assert all(e.raw for e in events if isinstance(e, Rejected))


@given(st.floats(0.01, 9999).map(lambda w: round(w, 2)), st.sampled_from(["kg", "lb"]),
       st.booleans())
def test_round_trip(weight: float, unit: str, net: bool) -> None:
    events = decode(encode_indicator(weight, unit=unit, net=net))
    ucum = {"kg": "kg", "lb": "[lb_av]"}[unit]
    assert weights(events) == [(weight, ucum, "net" if net else "gross")]


def test_balance_format_round_trip() -> None:
    assert weights(decode(encode_balance(0.5) + encode_balance(2.25))) == [
        (0.5, "g", "gross"), (2.25, "g", "gross")]


def test_ten_hertz_stream_of_one_person_is_one_reading_per_person() -> None:
    model = ScaleModel(seed=5)
    stream = b"".join(model.output() for _ in range(33 * 4))  # four people, 33 lines each
    assert [w for w, _, _ in weights(decode(stream))] == model.weights
