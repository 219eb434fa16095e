"""NMEA 0183 GGA/RMC: golden capture, split-anywhere, garbage, round trip."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DeviceInfo, Event, Rejected
from drivers.protocols.nmea import NmeaDecoder
from drivers.simulators.nmea import GpsModel, encode_gga, encode_rmc, sentence
from edge_agent.models import Measurement

CAPTURE = Path(__file__).resolve().parents[1] / "captures" / "nmea" / "gpsinformation-classic.nmea"


def capture() -> bytes:
    lines = [ln for ln in CAPTURE.read_text().splitlines() if not ln.startswith("#")]
    return "".join(ln + "\r\n" for ln in lines).encode()


def decode(data: bytes, chunks: list[int] | None = None) -> list[Event]:
    decoder = NmeaDecoder()
    events: list[Event] = []
    pos = 0
    for size in chunks or []:
        events += decoder.receive_data(data[pos : pos + size])
        pos += size
    events += decoder.receive_data(data[pos:])
    return events + decoder.receive_data(b"")


def values(events: list[Event]) -> list[tuple[str, float, str | None]]:
    return [(e.quantity, round(e.value or 0, 6), e.device_time) for e in events
            if isinstance(e, Measurement)]


def test_golden_capture() -> None:
    events = decode(capture())
    stamp = "1994-03-23T12:35:19Z"
    assert values(events) == [
        ("latitude", 48.1173, None), ("longitude", 11.516667, None), ("altitude", 545.4, None),
        ("latitude", 48.1173, stamp), ("longitude", 11.516667, stamp),
    ]
    infos = [e for e in events if isinstance(e, DeviceInfo)]
    assert infos == [DeviceInfo("gps-fix", "ok"), DeviceInfo("gps-time", stamp),
                     DeviceInfo("gps-fix", "none")]
    rejected = [(e.reason, e.raw) for e in events if isinstance(e, Rejected)]
    assert rejected == [
        ("checksum", b"$GPRMC,123521,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*62\r\n"),
        ("no-sentence", b"~~noise~~\r\n"),
    ]
    gga = next(e for e in events if isinstance(e, Measurement))
    assert dict(gga.context) == {"fix_quality": "1", "utc_time": "12:35:19", "satellites": "8"}


@given(st.lists(st.integers(1, 50), max_size=40))
def test_split_anywhere_gives_the_same_events(chunks: list[int]) -> None:
    assert decode(capture(), chunks) == decode(capture())


@given(st.binary(max_size=400), st.floats(-89.9, 89.9), st.floats(-179.9, 179.9))
def test_garbage_never_raises_and_the_next_sentence_decodes(
    junk: bytes, lat: float, lon: float
) -> None:
    when = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    events = decode(junk + b"\r\n" + encode_rmc(lat, lon, when))
    got = values(events)[-2:]
    assert [q for q, _, _ in got] == ["latitude", "longitude"]
    assert abs(got[0][1] - lat) < 1e-5 and abs(got[1][1] - lon) < 1e-5
    assert all(e.raw for e in events if isinstance(e, Rejected))


@given(st.floats(-89.9, 89.9), st.floats(-179.9, 179.9), st.floats(-400, 8000),
       st.sampled_from(["GP", "GN", "GL", "GA", "GB", "BD"]))
def test_round_trip(lat: float, lon: float, alt: float, talker: str) -> None:
    when = datetime(2031, 12, 31, 23, 59, 58, tzinfo=UTC)
    events = decode(encode_gga(lat, lon, alt, when, talker=talker)
                    + encode_rmc(lat, lon, when, talker=talker))
    got = values(events)
    assert abs(got[0][1] - lat) < 1e-5 and abs(got[1][1] - lon) < 1e-5
    assert abs(got[2][1] - alt) < 0.051
    assert got[3][2] == "2031-12-31T23:59:58.00Z"
    assert DeviceInfo("gps-time", "2031-12-31T23:59:58.00Z") in events


def test_no_position_from_an_invalid_fix() -> None:
    when = datetime(2026, 1, 1, tzinfo=UTC)
    events = decode(encode_rmc(31.0, -7.0, when, valid=False))
    assert values(events) == [] and events == [DeviceInfo("gps-fix", "none")]


def test_overlong_and_cut_sentences_are_rejected_with_their_bytes() -> None:
    long = b"$GPGGA," + b"1" * 100 + b"\r\n"
    cut = b"$GPRMC,1235"
    good = sentence("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
    events = decode(long + cut + good)
    reasons = [e.reason for e in events if isinstance(e, Rejected)]
    assert reasons[0] == "too-long" and "truncated" in reasons
    assert values(events)[0][:2] == ("latitude", 48.1173)
    rejected = b"".join(e.raw for e in events if isinstance(e, Rejected))
    assert rejected == long + cut


def test_simulator_positions_decode_back() -> None:
    model = GpsModel(seed=3)
    events = decode(b"".join(model.output() for _ in range(3)))
    rmc = [e for e in events if isinstance(e, Measurement) and e.device_time]
    assert [round(e.value or 0, 5) for e in rmc if e.quantity == "latitude"] == [
        round(lat, 5) for lat, _, _ in model.sent]
