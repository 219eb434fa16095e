"""Nonin DF2/7/8/13: golden captures, split-anywhere, garbage, round trip, select command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DecoderMisuse, DeviceInfo, Event, Rejected
from drivers.protocols.nonin import NoninDecoder, select_format_command
from drivers.simulators.nonin import (
    NoninModel,
    encode_df2_packet,
    encode_df7_packet,
    encode_df8_frame,
    encode_df13_packet,
)
from edge_agent.models import Measurement

CAPTURES = Path(__file__).resolve().parents[1] / "captures" / "nonin"
ENCODERS = {2: encode_df2_packet, 7: encode_df7_packet}


def read_hex(path: Path) -> bytes:
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    return bytes.fromhex(" ".join(lines))


def summary(events: list[Event]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for e in events:
        if isinstance(e, Measurement):
            out.append({"quantity": e.quantity, "value": e.value, "unit": e.unit,
                        "loinc": e.loinc, "device_time": e.device_time, "flags": list(e.flags)})
        elif isinstance(e, Rejected):
            out.append({"rejected": e.reason, "raw_len": len(e.raw)})
        elif isinstance(e, DeviceInfo):
            out.append({"info": e.key, "value": e.value})
    return out


def decode_all(fmt: int, data: bytes, chunks: list[int] | None = None) -> list[Event]:
    decoder = NoninDecoder(fmt)
    events: list[Event] = []
    pos = 0
    for size in chunks or []:
        events += decoder.receive_data(data[pos : pos + size])
        pos += size
    events += decoder.receive_data(data[pos:])
    events += decoder.receive_data(b"")
    return events


GOLDEN = {
    "df2-spec-tables": (2, [
        {"quantity": "spo2", "value": 97.0, "unit": "%", "loinc": "59408-5", "device_time": None,
         "flags": ["artifact", "low-battery"]},
        {"quantity": "pulse_rate", "value": 300.0, "unit": "/min", "loinc": "8867-4",
         "device_time": None, "flags": ["artifact", "low-battery"]},
        {"rejected": "no-sync", "raw_len": 1},
        {"info": "signal", "value": "missing"},
    ]),
    "df7-spec-tables": (7, [
        {"rejected": "no-sync", "raw_len": 12},
        {"quantity": "spo2", "value": 94.0, "unit": "%", "loinc": "59408-5", "device_time": None,
         "flags": ["low-perfusion"]},
        {"quantity": "pulse_rate", "value": 131.0, "unit": "/min", "loinc": "8867-4",
         "device_time": None, "flags": ["low-perfusion"]},
    ]),
    "df8-spec-tables": (8, [
        {"quantity": "spo2", "value": 98.0, "unit": "%", "loinc": "59408-5", "device_time": None,
         "flags": []},
        {"quantity": "pulse_rate", "value": 64.0, "unit": "/min", "loinc": "8867-4",
         "device_time": None, "flags": []},
        {"rejected": "no-sync", "raw_len": 4},
        {"quantity": "spo2", "value": 97.0, "unit": "%", "loinc": "59408-5", "device_time": None,
         "flags": ["low-battery"]},
        {"quantity": "pulse_rate", "value": 257.0, "unit": "/min", "loinc": "8867-4",
         "device_time": None, "flags": ["low-battery"]},
    ]),
    "df13-spec-tables": (13, [
        {"quantity": "spo2", "value": 96.0, "unit": "%", "loinc": "59408-5",
         "device_time": "2026-11-23T08:15:00", "flags": ["from-memory"]},
        {"quantity": "pulse_rate", "value": 80.0, "unit": "/min", "loinc": "8867-4",
         "device_time": "2026-11-23T08:15:00", "flags": ["from-memory"]},
        {"rejected": "checksum", "raw_len": 22},
    ]),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_capture(name: str) -> None:
    fmt, expected = GOLDEN[name]
    assert summary(decode_all(fmt, read_hex(CAPTURES / f"{name}.hex"))) == expected


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_every_octet_is_in_a_reading_or_a_reject(name: str) -> None:
    fmt, _ = GOLDEN[name]
    data = read_hex(CAPTURES / f"{name}.hex")
    events = decode_all(fmt, data)
    # A packet's two measurements share its raw bytes; a missing-data packet (finger out)
    # gives no measurement, only the signal state change.
    raws = [e.raw for e in events if isinstance(e, Rejected)]
    raws += [e.raw for e in events if isinstance(e, Measurement) and e.quantity == "spo2"]
    missing = sum(1 for e in events if e == DeviceInfo("signal", "missing"))
    assert sum(len(r) for r in raws) + missing * 125 == len(data)


@given(st.sampled_from(sorted(GOLDEN)), st.lists(st.integers(1, 40), max_size=30))
def test_split_anywhere_gives_the_same_events(name: str, chunks: list[int]) -> None:
    fmt, _ = GOLDEN[name]
    data = read_hex(CAPTURES / f"{name}.hex")
    assert decode_all(fmt, data, chunks) == decode_all(fmt, data)


@given(st.sampled_from([2, 7, 8, 13]), st.binary(max_size=300), st.integers(88, 100),
       st.integers(30, 250))
def test_garbage_never_raises_and_the_next_packet_still_decodes(
    fmt: int, junk: bytes, spo2: int, hr: int
) -> None:
    if fmt in ENCODERS:
        good = ENCODERS[fmt](spo2, hr)
    elif fmt == 8:
        good = encode_df8_frame(spo2, hr)
    else:
        good = encode_df13_packet(spo2, hr, (2026, 1, 2, 3, 4, 5))
    # Garbage, then two good units: the first may be eaten by a garbage frame that happened
    # to look valid, the second cannot.
    events = decode_all(fmt, junk + good + good)
    values = [(e.quantity, e.value) for e in events if isinstance(e, Measurement)]
    assert values[-2:] == [("spo2", float(spo2)), ("pulse_rate", float(hr))]
    for e in events:
        if isinstance(e, Rejected):
            assert e.raw and e.reason in {"no-sync", "sync", "checksum", "truncated",
                                          "bad-time-stamp"}


@given(st.sampled_from([2, 7]), st.integers(0, 100), st.integers(0, 510),
       st.sampled_from([(), ("artifact",), ("low-perfusion", "out-of-track")]), st.booleans())
def test_round_trip_df2_df7(
    fmt: int, spo2: int, hr: int, flags: tuple[str, ...], low_battery: bool
) -> None:
    events = decode_all(fmt, ENCODERS[fmt](spo2, hr, flags, low_battery=low_battery))
    ms = [e for e in events if isinstance(e, Measurement)]
    assert [(m.quantity, m.value) for m in ms] == [("spo2", spo2), ("pulse_rate", hr)]
    expected = set(flags) | ({"low-battery"} if low_battery else set())
    assert all(set(m.flags) == expected for m in ms)


@given(st.integers(0, 100), st.integers(0, 510), st.tuples(
    st.integers(2000, 2099), st.integers(1, 12), st.integers(1, 28), st.integers(0, 23),
    st.integers(0, 59), st.integers(0, 59)))
def test_round_trip_df13(spo2: int, hr: int, when: tuple[int, int, int, int, int, int]) -> None:
    ms = [e for e in decode_all(13, encode_df13_packet(spo2, hr, when))
          if isinstance(e, Measurement)]
    y, mo, d, h, mi, s = when
    stamp = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    assert [(m.quantity, m.value, m.device_time) for m in ms] == [
        ("spo2", spo2, stamp), ("pulse_rate", hr, stamp)]


def test_missing_data_gives_no_value_and_a_signal_change() -> None:
    events = decode_all(7, encode_df7_packet(127, 511) + encode_df7_packet(96, 70))
    assert summary(events)[0] == {"info": "signal", "value": "missing"}
    assert {"info": "signal", "value": "ok"} in summary(events)
    assert [e.value for e in events if isinstance(e, Measurement)] == [96.0, 70.0]


def test_heart_rate_uses_all_nine_bits() -> None:
    ms = [e for e in decode_all(2, encode_df2_packet(95, 0x1A5)) if isinstance(e, Measurement)]
    assert ms[1].value == 0x1A5  # 421: HR8 and HR7 come from the MSB octet


def test_checksum_error_mid_packet_rejects_the_packet_and_resyncs() -> None:
    bad = bytearray(encode_df2_packet(97, 80))
    bad[5 * 10 + 4] ^= 0xFF  # frame 11's checksum
    events = decode_all(2, bytes(bad) + encode_df2_packet(96, 81))
    rejected = [e for e in events if isinstance(e, Rejected)]
    assert rejected[0].reason == "checksum"
    assert rejected[0].raw == bytes(bad[:51])
    assert [e.value for e in events if isinstance(e, Measurement)] == [96.0, 81.0]


def test_select_format_command_and_ack_switch_format() -> None:
    assert select_format_command(7) == bytes.fromhex("027002020703")
    with pytest.raises(DecoderMisuse):
        select_format_command(5)
    decoder = NoninDecoder(2)
    decoder.request_format(8)
    assert decoder.data_to_send() == bytes.fromhex("027002020803")
    events = decoder.receive_data(b"\x06" + encode_df8_frame(99, 61))
    assert events[0] == DeviceInfo("format-select", "ack")
    assert decoder.data_format == 8
    assert [e.value for e in events if isinstance(e, Measurement)] == [99.0, 61.0]


def test_nak_keeps_the_format() -> None:
    decoder = NoninDecoder(7)
    decoder.request_format(13)
    events = decoder.receive_data(b"\x15")
    assert events == [DeviceInfo("format-select", "nak")] and decoder.data_format == 7


def test_simulator_answers_select_and_switches() -> None:
    model = NoninModel(2, seed=1)
    model.receive(select_format_command(8))
    assert model.output() == b"\x06"
    decoder = NoninDecoder(8)
    ms = [e for e in decoder.receive_data(model.output()) if isinstance(e, Measurement)]
    assert [m.value for m in ms] == [float(v) for v in model.sent_values[-1]]


def test_acknowledge_is_misuse_for_a_passive_protocol() -> None:
    with pytest.raises(DecoderMisuse):
        NoninDecoder(2).acknowledge("x", stored=True)
    with pytest.raises(DecoderMisuse):
        NoninDecoder(3)


def test_capture_files_say_where_they_come_from() -> None:
    for path in CAPTURES.glob("*.hex"):
        assert path.read_text().startswith("#"), path
    assert json.dumps(sorted(p.stem for p in CAPTURES.glob("*.hex"))) == json.dumps(sorted(GOLDEN))
