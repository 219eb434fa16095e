"""CMS50 legacy stream: golden, one reading per second, split-anywhere, garbage, round trip."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DeviceInfo, Event, Rejected
from drivers.protocols.cms50 import Cms50Decoder
from drivers.simulators.cms50 import Cms50Model, encode_packet
from edge_agent.models import Measurement

CAPTURE = Path(__file__).resolve().parents[1] / "captures" / "cms50" / "legacy-stream-spec.hex"


def capture() -> bytes:
    lines = [ln for ln in CAPTURE.read_text().splitlines() if not ln.startswith("#")]
    return bytes.fromhex(" ".join(lines))


def decode(data: bytes, chunks: list[int] | None = None) -> list[Event]:
    decoder = Cms50Decoder()
    events: list[Event] = []
    pos = 0
    for size in chunks or []:
        events += decoder.receive_data(data[pos : pos + size])
        pos += size
    return events + decoder.receive_data(data[pos:]) + decoder.receive_data(b"")


def values(events: list[Event]) -> list[tuple[str, float | None, tuple[str, ...]]]:
    return [(e.quantity, e.value, e.flags) for e in events if isinstance(e, Measurement)]


def test_golden_stream() -> None:
    events = decode(capture())
    assert values(events) == [
        ("spo2", 97.0, ()), ("pulse_rate", 72.0, ()),
        ("spo2", 96.0, ()), ("pulse_rate", 140.0, ()),
    ]
    assert [(e.reason, len(e.raw)) for e in events if isinstance(e, Rejected)] == [
        ("no-sync", 2), ("truncated", 3)]
    assert [e for e in events if isinstance(e, DeviceInfo)] == [
        DeviceInfo("finger", "in"), DeviceInfo("finger", "out"), DeviceInfo("finger", "in")]


@given(st.lists(st.integers(1, 64), max_size=40))
def test_split_anywhere_gives_the_same_events(chunks: list[int]) -> None:
    assert decode(capture(), chunks) == decode(capture())


@given(st.binary(max_size=400), st.integers(50, 100), st.integers(30, 250))
def test_garbage_never_raises_and_the_next_second_decodes(junk: bytes, spo2: int, pr: int) -> None:
    events = decode(junk + encode_packet(spo2, pr) * 120)
    assert values(events)[-2:] == [("spo2", spo2, ()), ("pulse_rate", pr, ())]
    assert all(e.raw for e in events if isinstance(e, Rejected))


@given(st.integers(1, 126), st.integers(1, 254), st.booleans(), st.booleans())
def test_round_trip(spo2: int, pr: int, probe_error: bool, dropping: bool) -> None:
    packet = encode_packet(spo2, pr, probe_error=probe_error, dropping=dropping)
    flags = tuple(f for f, on in (("probe-error", probe_error), ("spo2-dropping", dropping)) if on)
    assert values(decode(packet * 60)) == [("spo2", spo2, flags), ("pulse_rate", pr, flags)]


def test_simulator_seconds_decode_back() -> None:
    model = Cms50Model(seed=2)
    events = decode(b"".join(model.output() for _ in range(30)))  # 3 s
    got = [v for q, v, _ in values(events) if q == "spo2"]
    assert got == [float(s) for s, _ in model.sent_values]
