"""Nonin DF2/7/8/13: golden captures, split-anywhere, garbage, round trip, select command."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DecoderMisuse, DeviceInfo, Event, Rejected, StreamDecoder
from drivers.protocols.nonin import FLAG_ORDER, NoninDecoder, select_format_command
from drivers.simulators.nonin import (
    NoninModel,
    encode_df2_packet,
    encode_df7_packet,
    encode_df8_frame,
    encode_df13_packet,
)
from edge_agent.models import Measurement, measurement

CAPTURES = Path(__file__).resolve().parents[1] / "captures" / "nonin"
GOLDEN = {"df2-spec-tables": 2, "df7-spec-tables": 7, "df8-spec-tables": 8, "df13-spec-tables": 13}
WHEN = (2026, 11, 23, 8, 15, 0)

# Flags each format can carry (the encoders refuse the others).
PACKET_FLAGS = tuple(f for f in FLAG_ORDER if f != "from-memory")  # DF2/DF7
DF8_FLAGS = tuple(f for f in PACKET_FLAGS if f != "sensor-disconnect")
DF13_FLAGS = ("smartpoint", "low-battery", "from-memory")


def read_hex(path: Path) -> bytes:
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    return bytes.fromhex(" ".join(lines))


def event_json(event: Event) -> dict[str, Any]:
    data = asdict(event)
    if data.get("source_key", 0) is None:  # no record identity in this stream: no key
        del data["source_key"]
    if data.get("status", 0) is None:  # no result status in this protocol
        del data["status"]
    if "raw" in data:
        data["raw"] = data["raw"].hex()
    if "flags" in data:
        data["flags"] = list(data["flags"])
    if "context" in data:
        data["context"] = [list(pair) for pair in data["context"]]
    return {"type": type(event).__name__, **data}


def decode(fmt: int, data: bytes, cuts: Sequence[int] = ()) -> list[Event]:
    """Feed ``data`` split at ``cuts`` (positions), then end the stream."""
    decoder = NoninDecoder(fmt)
    events: list[Event] = []
    pos = 0
    for cut in [*sorted(cuts), len(data)]:
        if cut > pos:  # an empty chunk would mean end of stream
            events += decoder.receive_data(data[pos:cut])
        pos = cut
    return events + decoder.receive_data(b"")


def values(events: list[Event]) -> list[tuple[str, float | None]]:
    return [(e.quantity, e.value) for e in events if isinstance(e, Measurement)]


def unit_raws(events: list[Event]) -> list[bytes]:
    """The raw bytes of every reject and decoded unit, in order (a unit's measurements share)."""
    raws: list[bytes] = []
    last_unit = b""
    for e in events:
        if isinstance(e, Rejected):
            raws.append(e.raw)
            last_unit = b""
        elif isinstance(e, Measurement) and e.raw != last_unit:
            raws.append(e.raw)
            last_unit = e.raw
    return raws


def good_unit(fmt: int, spo2: int, hr: int) -> bytes:
    encoders: dict[int, Callable[[], bytes]] = {
        2: lambda: encode_df2_packet(spo2, hr),
        7: lambda: encode_df7_packet(spo2, hr),
        8: lambda: encode_df8_frame(spo2, hr),
        13: lambda: encode_df13_packet(spo2, hr, WHEN),
    }
    return encoders[fmt]()


# --- golden ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_capture_gives_exactly_the_expected_events(name: str) -> None:
    expected = json.loads((CAPTURES / f"{name}.expected.json").read_text())
    events = decode(GOLDEN[name], read_hex(CAPTURES / f"{name}.hex"))
    assert [event_json(e) for e in events] == expected["events"]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_capture_accounts_for_every_octet(name: str) -> None:
    data = read_hex(CAPTURES / f"{name}.hex")
    raws = unit_raws(decode(GOLDEN[name], data))
    # Units with only missing data or no measurement give no raw: remove them by content.
    rest = data
    for raw in raws:
        head, sep, rest = rest.partition(raw)
        assert sep, f"{raw.hex()} not found in order"
        assert len(head) in (0, 22, 125), "only a whole unit may be unaccounted for"


def test_capture_files_say_where_they_come_from() -> None:
    names = sorted(p.name.removesuffix(".hex") for p in CAPTURES.glob("*.hex"))
    assert names == sorted(GOLDEN)
    for name in names:
        assert (CAPTURES / f"{name}.hex").read_text().startswith("# Nonin Data Format")
        assert (
            "not a device capture"
            in json.loads((CAPTURES / f"{name}.expected.json").read_text())["source"]
        )


# --- split anywhere --------------------------------------------------------------------------
@given(st.sampled_from(sorted(GOLDEN)), st.data())
def test_any_split_gives_the_same_events(name: str, data: st.DataObject) -> None:
    raw = read_hex(CAPTURES / f"{name}.hex")
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=40))
    assert decode(GOLDEN[name], raw, cuts) == decode(GOLDEN[name], raw)


def test_byte_by_byte_gives_the_same_events() -> None:
    for name, fmt in GOLDEN.items():
        raw = read_hex(CAPTURES / f"{name}.hex")
        assert decode(fmt, raw, range(len(raw))) == decode(fmt, raw), name


# --- garbage ---------------------------------------------------------------------------------
@given(
    st.sampled_from([2, 7, 8, 13]),
    st.binary(max_size=300),
    st.integers(0, 100),
    st.integers(0, 510),
)
def test_garbage_before_a_unit_never_raises_and_the_unit_still_decodes(
    fmt: int, junk: bytes, spo2: int, hr: int
) -> None:
    good = good_unit(fmt, spo2, hr)
    events = decode(fmt, junk + good)
    assert values(events)[-2:] == [("spo2", spo2), ("pulse_rate", hr)]
    assert all(e.raw and e.reason for e in events if isinstance(e, Rejected))
    if fmt != 8:  # DF8 has no checksum: noise may decode as a frame with missing data
        assert b"".join(unit_raws(events)) == junk + good


@given(st.sampled_from([2, 7, 13]), st.binary(min_size=1, max_size=40), st.data())
def test_insertion_inside_a_unit_rejects_its_bytes_and_keeps_the_neighbours(
    fmt: int, insert: bytes, data: st.DataObject
) -> None:
    first, middle, last = good_unit(fmt, 95, 70), good_unit(fmt, 96, 71), good_unit(fmt, 97, 72)
    at = data.draw(st.integers(1, len(middle) - 1))
    stream = first + middle[:at] + insert + middle[at:] + last
    events = decode(fmt, stream)
    assert values(events)[:2] == [("spo2", 95), ("pulse_rate", 70)]
    assert values(events)[-2:] == [("spo2", 97), ("pulse_rate", 72)]
    assert any(isinstance(e, Rejected) for e in events)
    assert b"".join(unit_raws(events)) == stream


def test_checksum_error_rejects_the_whole_packet_and_the_next_one_decodes() -> None:
    bad = bytearray(encode_df2_packet(97, 80))
    bad[5 * 10 + 4] ^= 0xFF  # frame 11's CHK
    good = encode_df2_packet(96, 81)
    events = decode(2, bytes(bad) + good)
    assert events == [
        Rejected(bytes(bad), "checksum"),
        measurement("spo2", 96.0, raw=good),
        measurement("pulse_rate", 81.0, raw=good),
    ]


def test_truncated_packet_at_end_of_stream_is_rejected_and_the_decoder_starts_afresh() -> None:
    decoder = NoninDecoder(7)
    packet = encode_df7_packet(95, 66)
    assert decoder.receive_data(packet[:60]) == []
    assert decoder.receive_data(b"") == [Rejected(packet[:60], "truncated")]
    assert values(decoder.receive_data(packet)) == [("spo2", 95), ("pulse_rate", 66)]


def test_end_of_stream_resets_the_signal_state() -> None:
    decoder = NoninDecoder(8)
    gone = encode_df8_frame(127, 511)
    assert decoder.receive_data(gone) == [DeviceInfo("signal", "missing")]
    assert decoder.receive_data(b"") == []
    assert decoder.receive_data(gone) == [DeviceInfo("signal", "missing")]  # a new connection


def test_df13_packet_without_its_03_trailer_is_rejected() -> None:
    bad = encode_df13_packet(96, 70, WHEN)[:-1] + b"\x04"
    good = encode_df13_packet(97, 71, WHEN)
    events = decode(13, bad + good)
    assert events[0] == Rejected(bad, "sync")
    assert values(events) == [("spo2", 97), ("pulse_rate", 71)]


def test_noise_is_reported_in_bounded_pieces() -> None:
    events = NoninDecoder(2).receive_data(b"\x00" * 1000)
    assert events and all(isinstance(e, Rejected) and len(e.raw) <= 250 for e in events)


def test_df2_frame_without_the_01_start_octet_breaks_sync() -> None:
    packet = bytearray(encode_df2_packet(95, 70))
    packet[5 * 4] = 0x00  # frame 5 starts 00, its CHK made to match: only the 01 rule catches it
    packet[5 * 4 + 4] = (packet[5 * 4 + 4] - 1) & 0xFF
    good = encode_df2_packet(96, 71)
    events = decode(2, bytes(packet) + good)
    assert events[0] == Rejected(bytes(packet), "sync")
    assert values(events) == [("spo2", 96), ("pulse_rate", 71)]


def test_df8_frame_with_impossible_spo2_is_noise() -> None:
    # No checksum in DF8: SpO2 101-126 cannot come from the device, so it is not a frame.
    good = encode_df8_frame(97, 70)
    events = decode(8, bytes([0x80, 70, 110, 0x00]) + good)
    assert events == [
        Rejected(bytes([0x80, 70, 110, 0x00]), "no-sync"),
        measurement("spo2", 97.0, raw=good),
        measurement("pulse_rate", 70.0, raw=good),
    ]


# --- round trip ------------------------------------------------------------------------------
@given(
    st.sampled_from([2, 7]),
    st.integers(0, 100),
    st.integers(0, 510),
    st.sets(st.sampled_from(PACKET_FLAGS)),
    st.lists(st.integers(0, 255), min_size=1),
)
def test_round_trip_df2_df7(
    fmt: int, spo2: int, hr: int, flags: set[str], pleth: list[int]
) -> None:
    if fmt == 2:
        packet = encode_df2_packet(spo2, hr, flags, pleth=pleth)
    else:
        packet = encode_df7_packet(spo2, hr, flags, pleth=[p * 257 for p in pleth])
    expected_flags = set(flags)
    if {"low-perfusion", "marginal-perfusion"} <= flags:
        expected_flags.discard("marginal-perfusion")  # one colour per packet: the worst
    flag_tuple = tuple(f for f in FLAG_ORDER if f in expected_flags)
    assert decode(fmt, packet) == [
        measurement("spo2", spo2, flags=flag_tuple, raw=packet),
        measurement("pulse_rate", hr, flags=flag_tuple, raw=packet),
    ]


@given(st.integers(0, 100), st.integers(0, 510), st.sets(st.sampled_from(DF8_FLAGS)))
def test_round_trip_df8(spo2: int, hr: int, flags: set[str]) -> None:
    frame = encode_df8_frame(spo2, hr, flags)
    expected_flags = set(flags)
    if {"low-perfusion", "marginal-perfusion"} <= flags:
        expected_flags.discard("marginal-perfusion")
    events = decode(8, frame)
    assert values(events) == [("spo2", spo2), ("pulse_rate", hr)]
    assert all(set(e.flags) == expected_flags for e in events if isinstance(e, Measurement))


@given(
    st.integers(0, 100),
    st.integers(0, 510),
    st.sets(st.sampled_from(DF13_FLAGS)),
    st.datetimes(),
    st.binary(max_size=20),
)
def test_round_trip_df13(spo2: int, hr: int, flags: set[str], when: Any, extra: bytes) -> None:
    stamp = (when.year, when.month, when.day, when.hour, when.minute, when.second)
    packet = encode_df13_packet(spo2, hr, stamp, flags, extra=extra)
    iso = when.replace(microsecond=0).isoformat()
    flag_tuple = tuple(f for f in FLAG_ORDER if f in flags)
    assert decode(13, packet) == [
        measurement("spo2", spo2, flags=flag_tuple, raw=packet, device_time=iso),
        measurement("pulse_rate", hr, flags=flag_tuple, raw=packet, device_time=iso),
    ]


# --- missing data and 9-bit HR ---------------------------------------------------------------
@pytest.mark.parametrize("fmt", [2, 7, 8, 13])
def test_missing_data_gives_no_value_and_signal_changes(fmt: int) -> None:
    gone, partial, back = good_unit(fmt, 127, 511), good_unit(fmt, 127, 80), good_unit(fmt, 96, 70)
    events = decode(fmt, gone + gone + partial + back + back)
    assert [e for e in events if isinstance(e, DeviceInfo)] == [
        DeviceInfo("signal", "missing"),
        DeviceInfo("signal", "ok"),
    ]
    assert events[0] == DeviceInfo("signal", "missing")
    assert values(events) == [
        ("pulse_rate", 80),
        ("spo2", 96),
        ("pulse_rate", 70),
        ("spo2", 96),
        ("pulse_rate", 70),
    ]
    assert events[2] == DeviceInfo("signal", "ok")


def test_heart_rate_above_255_uses_all_nine_bits_in_every_format() -> None:
    # Hand-built octets, not the encoder: HR 421 = 0b1_1010_0101 -> HR8,HR7 = 11, HR6..0 = 0x25.
    df8 = bytes([0x80 | 0x03, 0x25, 95, 0x00])
    assert values(decode(8, df8))[1] == ("pulse_rate", 421)
    frames = []
    for i in range(25):
        fl = {0: 0x03, 1: 0x25, 2: 95}.get(i, 0)
        f = [0x01, 0x82 | (i == 0), 0x40, fl]
        frames.append(bytes([*f, sum(f) & 0xFF]))
    assert values(decode(2, b"".join(frames)))[1] == ("pulse_rate", 421)
    data = bytes([0x20, 0x26, 0x11, 0x23, 0x08, 0x15, 0, 0, 0, 0, 0x01, 0xA5, 0, 95])
    spot = b"\x00\x02\x00\x0d\x00\x0e" + data + bytes([sum(data) & 0xFF, 0x03])
    assert values(decode(13, spot))[1] == ("pulse_rate", 421)


def test_heart_rate_ignores_reserved_high_bits_of_the_msb_octet() -> None:
    frames = []
    for i in range(25):
        fl = {0: 0x7D, 1: 0x7F, 2: 95}.get(i, 0)  # HR MSB 0x7D: only bits 1-0 (01) count
        f = [0x01, 0x82 | (i == 0), 0x40, fl]
        frames.append(bytes([*f, sum(f) & 0xFF]))
    assert values(decode(2, b"".join(frames)))[1] == ("pulse_rate", 255)


def test_df13_without_measurement_and_with_a_bad_stamp() -> None:
    noms = encode_df13_packet(127, 511, WHEN, no_measurement=True)
    bad_day = encode_df13_packet(96, 70, (2026, 2, 30, 8, 0, 0))
    # An impossible date keeps the spot check without its time (drivers.protocols.policy rule 4).
    events = decode(13, noms + bad_day)
    assert events[0] == DeviceInfo("spot-check", "no-measurement")
    got = [
        (e.quantity, e.value, e.device_time, e.flags) for e in events if isinstance(e, Measurement)
    ]
    assert got == [
        ("spo2", 96.0, None, ("bad-device-time",)),
        ("pulse_rate", 70.0, None, ("bad-device-time",)),
    ]
    assert not [e for e in events if isinstance(e, Rejected)]


# --- select format ---------------------------------------------------------------------------
def test_select_format_command_bytes() -> None:
    assert select_format_command(2) == bytes.fromhex("02 70 02 02 02 03")
    assert select_format_command(7) == bytes.fromhex("02 70 02 02 07 03")
    assert select_format_command(8) == bytes.fromhex("02 70 02 02 08 03")
    assert select_format_command(13) == bytes.fromhex("02 70 02 02 0d 03")
    for wrong in (0, 5, 14, 256):
        with pytest.raises(DecoderMisuse):
            select_format_command(wrong)


def test_request_queues_the_command_once() -> None:
    decoder = NoninDecoder(2)
    assert decoder.data_to_send() == b""
    decoder.request_format(8)
    assert decoder.data_to_send() == bytes.fromhex("02 70 02 02 08 03")
    assert decoder.data_to_send() == b""


def test_ack_switches_the_format() -> None:
    decoder = NoninDecoder(2)
    decoder.request_format(8)
    before, after = encode_df2_packet(97, 80), encode_df8_frame(99, 61)
    events = decoder.receive_data(before + b"\x06" + after)
    assert events[2:] == [
        DeviceInfo("format-select", "ack"),
        measurement("spo2", 99.0, raw=after),
        measurement("pulse_rate", 61.0, raw=after),
    ]
    assert decoder.data_format == 8
    # The reply is taken once: a later 06 is noise.
    assert decoder.receive_data(b"\x06" + after)[0] == Rejected(b"\x06", "no-sync")


def test_nak_keeps_the_format() -> None:
    decoder = NoninDecoder(7)
    decoder.request_format(13)
    packet = encode_df7_packet(95, 70)
    events = decoder.receive_data(b"\x15" + packet)
    assert events[0] == DeviceInfo("format-select", "nak")
    assert values(events) == [("spo2", 95), ("pulse_rate", 70)]
    assert decoder.data_format == 7


def test_reply_between_frames_cuts_the_packet_off() -> None:
    decoder = NoninDecoder(2)
    decoder.request_format(13)
    packet, spot = encode_df2_packet(95, 70), encode_df13_packet(96, 71, WHEN)
    events = decoder.receive_data(packet[:40] + b"\x06" + spot)
    assert events[:2] == [Rejected(packet[:40], "truncated"), DeviceInfo("format-select", "ack")]
    assert values(events) == [("spo2", 96), ("pulse_rate", 71)]


def test_reply_after_noise_is_recognised_by_the_data_after_it() -> None:
    decoder = NoninDecoder(2)
    decoder.request_format(8)
    frame = encode_df8_frame(98, 64)
    events = decoder.receive_data(b"\x13\x06\x15\x37" + b"\x06" + frame)
    assert events == [
        Rejected(b"\x13\x06\x15\x37", "no-sync"),
        DeviceInfo("format-select", "ack"),
        measurement("spo2", 98.0, raw=frame),
        measurement("pulse_rate", 64.0, raw=frame),
    ]


def test_reply_octets_without_a_request_are_noise() -> None:
    packet = encode_df2_packet(95, 70)
    events = decode(2, b"\x06\x15" + packet)
    assert events[0] == Rejected(b"\x06\x15", "no-sync")
    assert not any(isinstance(e, DeviceInfo) for e in events)


@given(st.binary(max_size=30), st.data())
def test_reply_split_anywhere(junk: bytes, data: st.DataObject) -> None:
    stream = encode_df2_packet(95, 70) + junk + b"\x06" + encode_df8_frame(98, 64) * 2

    def run(cuts: list[int]) -> list[Event]:
        decoder = NoninDecoder(2)
        decoder.request_format(8)
        events: list[Event] = []
        pos = 0
        for cut in [*sorted(cuts), len(stream)]:
            if cut > pos:
                events += decoder.receive_data(stream[pos:cut])
            pos = cut
        return events + decoder.receive_data(b"")

    whole = run([])
    assert run(data.draw(st.lists(st.integers(0, len(stream)), max_size=10))) == whole
    assert values(whole)[-2:] == [("spo2", 98), ("pulse_rate", 64)]


def test_acknowledge_and_bad_format_are_misuse() -> None:
    decoder: StreamDecoder = NoninDecoder(2)
    with pytest.raises(DecoderMisuse):
        decoder.acknowledge("x", stored=True)
    with pytest.raises(DecoderMisuse):
        NoninDecoder(3)
    with pytest.raises(DecoderMisuse):
        NoninDecoder(2).request_format(9)


# --- simulator -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [2, 7, 8, 13])
def test_simulator_output_decodes_to_the_values_it_sent(fmt: int) -> None:
    model, decoder = NoninModel(fmt, seed=7), NoninDecoder(fmt)
    events: list[Event] = []
    for _ in range(30):
        events += decoder.receive_data(model.output())
    assert not any(isinstance(e, Rejected) for e in events)
    sent = [(float(s), float(h)) for s, h in model.sent_values]
    assert len(sent) == 30
    got = [e.value for e in events if isinstance(e, Measurement)]
    assert list(zip(got[::2], got[1::2], strict=True)) == sent
    if fmt == 13:
        times = [e.device_time for e in events if isinstance(e, Measurement)][::2]
        assert times[:2] == ["2026-11-23T08:00:05", "2026-11-23T08:00:10"]


def test_simulator_is_deterministic_plausible_and_slow_varying() -> None:
    def run(seed: int) -> list[tuple[int, int]]:
        model = NoninModel(2, seed=seed)
        for _ in range(300):
            model.output()
        return model.sent_values

    assert run(3) == run(3) and run(3) != run(4)
    sent = run(3)
    assert all(88 <= s <= 100 and 45 <= h <= 180 for s, h in sent)
    steps = itertools.pairwise(sent)
    assert all(abs(a[0] - b[0]) <= 1 and abs(a[1] - b[1]) <= 2 for a, b in steps)
    assert len({h for _, h in sent}) > 3  # it does vary


def test_simulator_intervals() -> None:
    assert [NoninModel(f).interval for f in (2, 7, 8, 13)] == [1 / 3, 1 / 3, 1.0, 5.0]


def test_simulator_answers_select_with_ack_then_the_new_format() -> None:
    model, decoder = NoninModel(2, seed=1), NoninDecoder(2)
    assert values(decoder.receive_data(model.output()))  # DF2 data first
    decoder.request_format(8)
    model.receive(decoder.data_to_send()[:3])  # the command may arrive in pieces
    model.receive(b"")
    assert values(decoder.receive_data(model.output()))  # not complete yet: still DF2
    model.receive(select_format_command(8)[3:])
    events = decoder.receive_data(model.output())
    assert events == [DeviceInfo("format-select", "ack")]
    events = decoder.receive_data(model.output())
    assert len(events) == 2 and all(len(e.raw) == 4 for e in events if isinstance(e, Measurement))
    assert model.data_format == decoder.data_format == 8


def test_simulator_naks_an_unknown_format() -> None:
    model = NoninModel(7)
    model.receive(bytes.fromhex("02 70 02 02 05 03"))
    assert model.output() == b"\x15" and model.data_format == 7
