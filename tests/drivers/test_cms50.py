"""CMS50 legacy stream: golden, one reading per second of data, split-anywhere, garbage, round
trip."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DeviceInfo, Event, Rejected
from drivers.protocols.cms50 import Cms50Decoder, Packet, parse_packet
from drivers.simulators.cms50 import Cms50Model, encode
from edge_agent.models import Measurement, measurement
from tests.drivers.streams import event_json, feed

CAPTURE = Path(__file__).resolve().parents[1] / "captures" / "cms50" / "legacy-stream-spec.hex"
OK = encode(Packet(97, 72))


def capture() -> bytes:
    lines = [
        ln for ln in CAPTURE.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")
    ]
    return bytes.fromhex(" ".join(lines))


def decode(data: bytes, chunks: list[int] | None = None) -> list[Event]:
    return feed(Cms50Decoder(), data, chunks or [])


def values(events: list[Event]) -> list[tuple[str, float | None, tuple[str, ...]]]:
    return [(e.quantity, e.value, e.flags) for e in events if isinstance(e, Measurement)]


def test_golden_stream_gives_the_expected_events() -> None:
    assert CAPTURE.read_text(encoding="utf-8").startswith("# ")
    expected = json.loads(CAPTURE.with_suffix(".expected.json").read_text(encoding="utf-8"))
    assert "source" in expected
    assert [event_json(e) for e in decode(capture())] == expected["events"]


@given(st.lists(st.integers(1, 64), max_size=40))
def test_split_anywhere_gives_the_same_events(chunks: list[int]) -> None:
    assert decode(capture(), chunks) == decode(capture())


@given(st.binary(max_size=400), st.integers(1, 100), st.integers(30, 250))
def test_garbage_never_raises_keeps_its_bytes_and_the_next_second_decodes(
    junk: bytes, spo2: int, pr: int
) -> None:
    good = encode(Packet(spo2, pr))
    data = junk + good * 120
    events = decode(data)
    assert values(events)[-2:] == [("spo2", spo2, ()), ("pulse_rate", pr, ())]
    last = [e for e in events if isinstance(e, Measurement)][-1]
    # No checksum: junk that looks like packets may shift the second, never the latest values.
    assert last.raw.endswith(good)
    for e in events:
        if isinstance(e, Rejected):
            assert e.raw and e.raw in data and e.reason in ("no-sync", "truncated")


packets = st.builds(
    Packet,
    spo2=st.integers(0, 127),
    pr=st.integers(0, 255),
    pleth=st.integers(0, 127),
    strength=st.integers(0, 15),
    bar=st.integers(0, 15),
    searching=st.booleans(),
    finger_out=st.booleans(),
    probe_error=st.booleans(),
    spo2_dropping=st.booleans(),
    beep=st.booleans(),
)


@given(packets)
def test_round_trip(packet: Packet) -> None:
    raw = encode(packet)
    assert raw[0] & 0x80 and not any(b & 0x80 for b in raw[1:])
    assert parse_packet(raw) == packet
    events = decode(raw * 60)
    flags = tuple(
        flag
        for flag, on in (
            ("searching", packet.searching),
            ("finger-out", packet.finger_out),
            ("probe-error", packet.probe_error),
            ("spo2-dropping", packet.spo2_dropping),
        )
        if on
    )
    signal = "finger-out" if packet.finger_out else "searching" if packet.searching else "ok"
    expected: list[Event] = [DeviceInfo("signal", signal)]
    if 0 < packet.spo2 < 127 and 0 < packet.pr < 255:
        context = (("signal_strength", str(packet.strength)),)
        for key, value in (("spo2", packet.spo2), ("pulse_rate", packet.pr)):
            m = measurement(key, float(value), flags=flags, raw=raw * 60, context=context)
            if key == "spo2" and value > 100:  # not a saturation: withheld (policy.py)
                m = replace(
                    m,
                    value=None,
                    absent_reason="error",
                    flags=(*flags, "impossible-value"),
                    context=(*context, ("reported-value", str(value))),
                )
            expected.append(m)
    assert events == expected


def test_at_most_one_reading_per_60_packets_with_the_latest_values() -> None:
    second = encode(Packet(96, 80)) * 59 + encode(Packet(95, 81))
    events = decode(second * 10)
    assert values(events) == [("spo2", 95.0, ()), ("pulse_rate", 81.0, ())] * 10


def test_zero_values_are_no_reading_and_the_probe_state_is_reported_on_change() -> None:
    out = encode(Packet(0, 0, strength=0, finger_out=True, searching=True))
    searching = encode(Packet(0, 0, searching=True))
    events = decode(out * 120 + searching * 60 + OK * 60)
    assert [e for e in events if isinstance(e, DeviceInfo)] == [
        DeviceInfo("signal", "finger-out"),
        DeviceInfo("signal", "searching"),
        DeviceInfo("signal", "ok"),
    ]
    assert values(events) == [("spo2", 97.0, ()), ("pulse_rate", 72.0, ())]


def test_a_partial_second_at_end_of_stream_still_gives_its_reading() -> None:
    assert values(decode(OK * 90)) == [("spo2", 97.0, ()), ("pulse_rate", 72.0, ())] * 2


def test_a_cut_packet_is_rejected_and_the_stream_resyncs_on_the_next_sync_octet() -> None:
    data = OK * 10 + OK[:3] + OK * 50
    events = decode(data)
    assert [e for e in events if isinstance(e, Rejected)] == [Rejected(OK[:3], "truncated")]
    assert values(events) == [("spo2", 97.0, ()), ("pulse_rate", 72.0, ())]


def test_stray_octets_become_one_reject_each_run() -> None:
    data = b"\x00\x01" + OK * 60 + b"\x7f" * 700
    events = decode(data)
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert [(e.reason, len(e.raw)) for e in rejected] == [
        ("no-sync", 2),
        ("no-sync", 300),
        ("no-sync", 300),
        ("no-sync", 100),
    ]


def test_simulated_oximeter_decodes_to_what_it_sent() -> None:
    model = Cms50Model(seed=2, searching=1)
    events = decode(b"".join(model.output() for _ in range(40)))  # 4 s of data
    got = [
        (int(s or 0), int(p or 0))
        for (_, s, _), (_, p, _) in zip(values(events)[::2], values(events)[1::2], strict=True)
    ]
    assert len(got) == 3 and got == model.sent_values
    assert [e.value for e in events if isinstance(e, DeviceInfo)] == ["searching", "ok"]
