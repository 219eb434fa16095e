"""NMEA 0183 GGA/RMC: golden captures, split-anywhere, garbage, round trip, fix and time rules."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DeviceInfo, Event, Rejected
from drivers.protocols.nmea import NmeaDecoder, checksum, degrees, utc_stamp
from drivers.simulators.nmea import GpsModel, encode_gga, encode_rmc, sentence
from edge_agent.models import Measurement, measurement
from tests.drivers.streams import feed

CAPTURES = Path(__file__).resolve().parents[1] / "captures" / "nmea"
GOLDEN = sorted(CAPTURES.glob("*.nmea"))
TALKERS = ["GP", "GN", "GL", "GA", "GB", "BD", "GI", "GQ", "QZ"]
CLASSIC_GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"


def capture(path: Path) -> bytes:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    return "".join(ln + "\r\n" for ln in lines).encode("ascii")


def decode(data: bytes, chunks: list[int] | None = None) -> list[Event]:
    return feed(NmeaDecoder(), data, chunks or [])


def event_json(event: Event) -> dict[str, Any]:
    data = asdict(event)
    if data.get("source_key", 0) is None:  # no record identity in this stream: no key
        del data["source_key"]
    if data.get("status", 0) is None:  # no result status in this protocol
        del data["status"]
    if "raw" in data:
        data["raw"] = data["raw"].decode("latin-1")
    if isinstance(data.get("value"), float):
        data["value"] = round(data["value"], 7)  # 1e-7 degree is about 1 cm
    for key in ("flags", "context"):
        if key in data:
            data[key] = [list(x) if isinstance(x, tuple) else x for x in data[key]]
    return {"type": type(event).__name__, **data}


def positions(events: list[Event]) -> list[Measurement]:
    return [e for e in events if isinstance(e, Measurement)]


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_capture_gives_the_expected_events(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    assert [event_json(e) for e in decode(capture(path))] == expected["events"]


def test_golden_files_start_with_their_provenance() -> None:
    assert GOLDEN
    for path in GOLDEN:
        assert path.read_text(encoding="utf-8").startswith("# "), path
        assert "source" in json.loads(path.with_suffix(".expected.json").read_text())


@given(st.sampled_from(GOLDEN), st.lists(st.integers(1, 50), max_size=40))
def test_split_anywhere_gives_the_same_events(path: Path, chunks: list[int]) -> None:
    data = capture(path)
    assert decode(data, chunks) == decode(data)


@given(st.binary(max_size=400), st.floats(-89.9, 89.9), st.floats(-179.9, 179.9))
def test_garbage_never_raises_keeps_its_bytes_and_the_next_sentence_decodes(
    junk: bytes, lat: float, lon: float
) -> None:
    when = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    data = junk + b"\r\n" + encode_rmc(lat, lon, when)
    events = decode(data)
    last = positions(events)[-2:]
    assert [m.quantity for m in last] == ["latitude", "longitude"]
    assert last[0].value == pytest.approx(lat, abs=1e-7)
    assert last[1].value == pytest.approx(lon, abs=1e-7)
    assert last[0].device_time == "2026-05-06T07:08:09.00Z"
    for e in events:
        if isinstance(e, Rejected):
            assert e.raw and e.raw in data and e.reason


@given(
    st.floats(-90, 90),
    st.floats(-180, 180),
    st.floats(-400, 9000).map(lambda a: round(a, 1)),
    st.datetimes(datetime(2000, 1, 1), datetime(2079, 12, 31)).map(
        lambda d: d.replace(microsecond=d.microsecond // 10_000 * 10_000, tzinfo=UTC)
    ),
    st.sampled_from(TALKERS),
    st.booleans(),
    st.sampled_from([("A", 1, ()), ("D", 2, ()), ("E", 6, ("estimated",))]),
)
def test_round_trip(
    lat: float,
    lon: float,
    alt: float,
    when: datetime,
    talker: str,
    nmea41: bool,
    fix: tuple[str, int, tuple[str, ...]],
) -> None:
    mode, quality, flags = fix
    gga = encode_gga(lat, lon, alt, when, quality=quality, talker=talker)
    rmc = encode_rmc(lat, lon, when, mode=mode, talker=talker, nmea41=nmea41)
    events = decode(gga + rmc)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 10_000:02d}Z"
    context = (
        ("fix_quality", str(quality)),
        ("utc_time", stamp[11:-1]),
        ("satellites", "8"),
    )
    got = positions(events)
    assert [m.value for m in got] == pytest.approx([lat, lon, alt, lat, lon], abs=1e-7)
    # Whole values, with the decoded floats (checked just above) put in.
    assert got == [
        measurement("latitude", got[0].value, flags=flags, raw=gga, context=context),
        measurement("longitude", got[1].value, flags=flags, raw=gga, context=context),
        measurement("altitude", alt, flags=flags, raw=gga, context=context),
        measurement("latitude", got[3].value, device_time=stamp, flags=flags, raw=rmc),
        measurement("longitude", got[4].value, device_time=stamp, flags=flags, raw=rmc),
    ]
    assert [e for e in events if isinstance(e, DeviceInfo)] == [
        DeviceInfo("gps-fix", "ok"),
        DeviceInfo("gps-time", stamp),
    ]
    assert datetime.fromisoformat(stamp) == when  # the agent can use it as a clock


def test_invalid_fixes_give_no_position_and_one_fix_event_per_change() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    lost = encode_rmc(0, 0, t, valid=False) + encode_gga(0, 0, 0, t, quality=0)
    good = encode_gga(31.5, -7.25, 900.0, t) + encode_rmc(31.5, -7.25, t)
    events = decode(lost * 3 + good * 2 + lost * 2)
    infos = [e for e in events if isinstance(e, DeviceInfo) and e.key == "gps-fix"]
    assert infos == [
        DeviceInfo("gps-fix", "none"),
        DeviceInfo("gps-fix", "ok"),
        DeviceInfo("gps-fix", "none"),
    ]
    assert len(positions(events)) == 2 * 5
    assert all(m.raw in good for m in positions(events))


def test_rmc_status_a_with_mode_n_is_not_a_fix() -> None:
    data = sentence("GPRMC,120000.00,A,3130.00000,N,00715.00000,W,0.0,0.0,010126,,,N")
    assert decode(data) == [DeviceInfo("gps-fix", "none")]


def test_other_sentences_are_ignored_and_counted_not_rejected() -> None:
    decoder = NmeaDecoder()
    gsv = sentence("GPGSV,1,1,00")
    events = decoder.receive_data(gsv * 2 + sentence("PUBX,00") + sentence("INGGA,1,2"))
    assert events == []
    assert decoder.ignored == {"GPGSV": 2, "PUBX": 1, "INGGA": 1}


def test_gga_time_without_a_date_is_context_never_device_time() -> None:
    (lat, _lon, _alt) = positions(decode(CLASSIC_GGA))
    assert lat.device_time is None
    assert dict(lat.context) == {"fix_quality": "1", "utc_time": "12:35:19", "satellites": "8"}


def test_rmc_without_a_date_gives_positions_without_device_time_or_gps_time() -> None:
    data = sentence("GPRMC,101010,A,3130.000,N,00715.000,W,0.0,0.0,,,,A")
    events = decode(data)
    assert [e.key for e in events if isinstance(e, DeviceInfo)] == ["gps-fix"]
    assert [(m.value, m.device_time, m.context) for m in positions(events)] == [
        (31.5, None, (("utc_time", "10:10:10"),)),
        (-7.25, None, (("utc_time", "10:10:10"),)),
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*00", "checksum"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", "no-checksum"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*4", "no-checksum"),
        ("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*ZZ", "malformed"),
    ],
)
def test_checksum_problems_are_rejected_with_their_bytes(body: str, reason: str) -> None:
    raw = f"${body}\r\n".encode()
    assert decode(raw) == [Rejected(raw, reason)]


@pytest.mark.parametrize(
    "fields",
    [
        "GPGGA,123519,4807.038,S,01131.000,X,1,08,0.9,545.4,M,,,,",  # hemisphere X
        "GPGGA,123519,4860.000,N,01131.000,E,1,08,0.9,545.4,M,,,,",  # 60 minutes
        "GPGGA,123519,9107.038,N,01131.000,E,1,08,0.9,545.4,M,,,,",  # 91 degrees north
        "GPGGA,123519,48nan,N,01131.000,E,1,08,0.9,545.4,M,,,,",
        "GPGGA,123519,,,,,1,08,0.9,545.4,M,,,,",  # a fix without a position
        "GPRMC,123519,A,4807.038,N,01131.000,E,0,0,310294,,,A",  # 31 February
        "GPRMC,126019,A,4807.038,N,01131.000,E,0,0,230394,,,A",  # minute 60
    ],
)
def test_malformed_fields_are_rejected_never_guessed(fields: str) -> None:
    raw = sentence(fields)
    assert decode(raw) == [Rejected(raw, "malformed")]


def test_leap_second_keeps_the_position_without_a_device_time() -> None:
    events = decode(sentence("GPRMC,235960,A,4807.038,N,01131.000,E,0,0,311216,,,A"))
    assert [(m.device_time, m.context) for m in positions(events)] == [
        (None, (("utc_time", "23:59:60"),)),
        (None, (("utc_time", "23:59:60"),)),
    ]
    assert not [e for e in events if isinstance(e, DeviceInfo) and e.key == "gps-time"]


def test_overlong_and_cut_sentences_are_each_one_reject_and_decoding_resumes() -> None:
    long = b"$GPGGA," + b"1" * 300 + b"\r\n"
    cut = b"$GPRMC,1235"
    events = decode(long + cut + CLASSIC_GGA + b"$GPGGA,12")
    assert [e for e in events if isinstance(e, Rejected)] == [
        Rejected(long, "too-long"),
        Rejected(cut, "truncated"),
        Rejected(b"$GPGGA,12", "truncated"),  # end of stream inside a sentence
    ]
    assert positions(events)[0].value == pytest.approx(48.1173)


@given(st.floats(-90, 90), st.sampled_from(["N", "S"]))
def test_degrees_are_signed_decimal_not_ddmm(value: float, hemi: str) -> None:
    whole = int(abs(value))
    text = f"{whole:02d}{(abs(value) - whole) * 60:09.6f}"
    got = degrees(text, hemi, longitude=False)
    if float(text[2:]) >= 60 or abs(value) > 90:
        return
    assert got == pytest.approx(abs(value) * (-1 if hemi == "S" else 1), abs=1e-6)


def test_two_digit_years_pivot_at_80() -> None:
    assert utc_stamp("010179", "00:00:00") == "2079-01-01T00:00:00Z"
    assert utc_stamp("010180", "00:00:00") == "1980-01-01T00:00:00Z"
    assert checksum(b"GPGSV,1,1,00") == 0x79


def test_simulated_van_decodes_to_what_it_sent() -> None:
    model = GpsModel(seed=3, cold_start=2)
    events = decode(b"".join(model.output() for _ in range(12)))
    rmc = [m for m in positions(events) if m.device_time is not None]
    got = [
        (lat.value, lon.value, lat.device_time)
        for lat, lon in zip(rmc[::2], rmc[1::2], strict=True)
    ]
    assert len(got) == len(model.sent) == 10
    for (lat, lon, stamp), fix in zip(got, model.sent, strict=True):
        assert (lat, lon) == pytest.approx((fix.latitude, fix.longitude), abs=1e-7)
        assert stamp == fix.time
    altitudes = [m.value for m in positions(events) if m.quantity == "altitude"]
    assert altitudes == [fix.altitude for fix in model.sent]
    fixes = [e.value for e in events if isinstance(e, DeviceInfo) and e.key == "gps-fix"]
    assert fixes == ["none", "ok"]
    # A van on rural roads: under 15 m/s, so under ~0.00015 degree of latitude a second.
    lats = [fix.latitude for fix in model.sent]
    assert max(abs(a - b) for a, b in itertools.pairwise(lats)) < 0.00015


@pytest.mark.parametrize(
    ("address", "length", "accepted"),
    [
        ("GNGGA", 90, True),
        ("GNGGA", 120, True),
        ("GNGGA", 121, False),
        ("GNRMC", 120, True),
        ("GNTXT", 82, True),
        ("GNTXT", 83, False),
    ],
)
def test_only_position_sentences_may_exceed_82_characters_up_to_120(
    address: str, length: int, accepted: bool
) -> None:
    if address == "GNGGA":
        body = "GNGGA,080010.000,3157.6960012,N,00634.3080034,W,4,31,0.45,1361.412,M,-1.214,M,1.0,"
    elif address == "GNRMC":
        body = "GNRMC,080010.000,A,3157.6960012,N,00634.3080034,W,0.012,71.45,231126,,,R,V,"
    else:
        body = "GNTXT,01,01,02,"
    body += "0" * (length - len(body) - 4)  # "$" + body + "*hh" is `length` characters
    line = sentence(body)
    assert len(line.rstrip(b"\r\n")) == length
    rejects = [e for e in decode(line) if isinstance(e, Rejected)]
    assert rejects == ([] if accepted else [Rejected(line, "too-long")])
