"""ASCII scales: golden lines per grammar, one reading per weighing, split-anywhere, garbage,
round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DecoderMisuse, DeviceInfo, Event, Rejected
from drivers.protocols.scale import ScaleDecoder
from drivers.simulators.scale import ScaleModel, encode_balance, encode_indicator, encode_overload
from edge_agent.models import Measurement, measurement
from tests.drivers import streams
from tests.drivers.streams import feed

CAPTURES = Path(__file__).resolve().parents[1] / "captures" / "scale"
GOLDEN = {
    "indicator": CAPTURES / "indicator-manual-examples.txt",
    "balance": CAPTURES / "ad-balance-manual-examples.txt",
    "auto": CAPTURES / "mixed-auto-examples.txt",
}
UCUM = {"kg": "kg", "g": "g", "lb": "[lb_av]"}


def capture(path: Path) -> bytes:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    return "".join(ln + "\r\n" for ln in lines).encode("ascii")


def decode(data: bytes, chunks: list[int] | None = None, grammar: str = "indicator") -> list[Event]:
    return feed(ScaleDecoder(grammar), data, chunks or [])


def event_json(event: Event) -> dict[str, Any]:
    return streams.event_json(event, "latin-1")


def weights(events: list[Event]) -> list[tuple[float | None, str, str]]:
    return [
        (e.value, e.unit, dict(e.context)["mode"]) for e in events if isinstance(e, Measurement)
    ]


@pytest.mark.parametrize("grammar", sorted(GOLDEN))
def test_golden_lines_give_the_expected_events(grammar: str) -> None:
    path = GOLDEN[grammar]
    assert path.read_text(encoding="utf-8").startswith("# ")
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    assert "source" in expected
    events = decode(capture(path), grammar=grammar)
    assert [event_json(e) for e in events] == expected["events"]


@given(st.sampled_from(sorted(GOLDEN)), st.lists(st.integers(1, 30), max_size=40))
def test_split_anywhere_gives_the_same_events(grammar: str, chunks: list[int]) -> None:
    data = capture(GOLDEN[grammar])
    assert decode(data, chunks, grammar) == decode(data, grammar=grammar)


@given(st.binary(max_size=300), st.floats(0.5, 300).map(lambda w: round(w, 2)))
def test_garbage_never_raises_keeps_its_bytes_and_the_next_weighing_decodes(
    junk: bytes, weight: float
) -> None:
    good = encode_indicator(weight)
    data = junk + b"\r\n" + encode_indicator(0.0) + good
    events = decode(data)
    assert events[-1] == measurement(
        "body_weight", weight, "kg", raw=good, context=(("mode", "gross"),)
    )
    for e in events:
        if isinstance(e, Rejected):
            assert e.raw and e.raw in data and e.reason


@given(
    st.integers(1, 999_999).map(lambda w: w / 100),
    st.sampled_from(["kg", "lb", "g"]),
    st.sampled_from(["GS", "NT"]),
    st.sampled_from(["\r\n", "\r", "\n"]),
)
def test_round_trip_indicator(weight: float, unit: str, mode: str, end: str) -> None:
    line = encode_indicator(weight, unit=unit, mode=mode)[:-2] + end.encode()
    events = decode(line)
    context = (("mode", "net" if mode == "NT" else "gross"),)
    assert events == [
        DeviceInfo("scale", "stable"),
        measurement("body_weight", weight, UCUM[unit], raw=line, context=context),
    ]


@given(st.integers(1, 99_999_99).map(lambda w: w / 100), st.sampled_from(["g", "kg", "lb"]))
def test_round_trip_balance(weight: float, unit: str) -> None:
    line = encode_balance(weight, unit=unit)
    assert line[3:4] == b"+" and len(line) == len("ST,+00123.45  g\r\n")
    events = decode(line, grammar="balance")
    assert events == [
        DeviceInfo("scale", "stable"),
        measurement("body_weight", weight, UCUM[unit], raw=line, context=(("mode", "gross"),)),
    ]


def test_a_10_hz_stream_of_one_stable_weight_is_one_reading() -> None:
    stream = encode_indicator(72.4, header="US") * 5 + encode_indicator(72.45) * 100
    events = decode(stream)
    assert weights(events) == [(72.45, "kg", "gross")]
    assert [e.value for e in events if isinstance(e, DeviceInfo)] == ["unstable", "stable"]


@pytest.mark.parametrize(
    ("between", "readings"),
    [
        (b"", 1),  # the same stable weight streaming on
        (encode_indicator(40.0, header="US"), 2),  # moved: weighed again
        (encode_indicator(0.0), 2),  # stepped off: the next person
        (encode_indicator(-0.05), 2),  # below zero (zero drift) is empty too
        (encode_overload(), 2),  # out of range in between
        (encode_indicator(0.8, mode="TR"), 1),  # a tare frame is not a weighing
    ],
)
def test_the_same_weight_is_a_new_reading_only_after_unstable_zero_or_overload(
    between: bytes, readings: int
) -> None:
    same = encode_indicator(72.45) * 3
    assert len(weights(decode(same + between + same))) == readings


def test_a_settled_different_weight_is_a_new_reading() -> None:
    stream = encode_indicator(72.45) * 3 + encode_indicator(72.5) * 3 + encode_indicator(72.45)
    assert [w for w, _, _ in weights(decode(stream))] == [72.45, 72.5, 72.45]


def test_unstable_and_overload_are_reported_on_change_only() -> None:
    stream = encode_indicator(5.0, header="US") * 4 + encode_overload() * 4
    assert decode(stream) == [DeviceInfo("scale", "unstable"), DeviceInfo("scale", "overload")]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"ST,GS,+  72.45st\r\n", "unknown-unit"),
        (b"ST,XX,+  72.45kg\r\n", "malformed"),
        (b"ST,GS,+  7a.45kg\r\n", "malformed"),
        (b"ST,GS,+  72.45\r\n", "malformed"),
        (b"ST,GS,+  72.45kg\xb0\r\n", "not-ascii"),
        (b"ST,GS,+  72.45kg", "truncated"),  # end of stream before the terminator
    ],
)
def test_unparseable_lines_are_rejected_with_their_bytes(line: bytes, reason: str) -> None:
    assert decode(line) == [Rejected(line, reason)]


def test_an_overlong_line_is_rejected_whole_and_the_next_line_decodes() -> None:
    long = b"ST,GS," + b"9" * 150 + b"\r\n"
    good = encode_indicator(60.0)
    events = decode(long + good)
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert {e.reason for e in rejected} == {"too-long"}
    assert b"".join(e.raw for e in rejected) == long
    assert weights(events) == [(60.0, "kg", "gross")]


def test_grammars_are_strict_and_unknown_grammars_are_caller_bugs() -> None:
    assert weights(decode(encode_balance(12.5), grammar="indicator")) == []
    assert weights(decode(encode_indicator(12.5), grammar="balance")) == []
    with pytest.raises(DecoderMisuse):
        ScaleDecoder("seca")


@given(st.integers(1, 99_999).map(lambda w: w / 100), st.booleans())
def test_the_default_grammar_reads_both_formats_line_by_line(weight: float, first: bool) -> None:
    other = round(weight + 1, 2)
    lines = [encode_indicator(weight), encode_balance(other, unit="kg")]
    data = b"".join(lines if first else lines[::-1])
    got = weights(ScaleDecoder().receive_data(data))
    assert sorted(got) == sorted([(weight, "kg", "gross"), (other, "kg", "gross")])


def test_decode_scale_accepts_both_formats_and_can_force_one() -> None:
    from drivers.decode import decode as run_decode

    data = encode_indicator(72.45) + encode_balance(3412.5)
    assert [m["value"] for m in run_decode("scale", data)["measurements"]] == [72.45, 3412.5]
    forced = run_decode("scale:indicator", data)
    assert [m["value"] for m in forced["measurements"]] == [72.45]
    assert [r["reason"] for r in forced["rejected"]] == ["malformed"]
    assert [m["value"] for m in run_decode("scale:balance", data)["measurements"]] == [3412.5]


def test_simulated_people_give_one_reading_each() -> None:
    model = ScaleModel(seed=5)
    stream = b"".join(model.output() for _ in range(60 * 5))
    events = decode(stream)
    got = [w for w, _, _ in weights(events)]
    assert len(got) >= 4
    assert got == model.weights[: len(got)]
    assert all(isinstance(e, DeviceInfo | Measurement) for e in events)
