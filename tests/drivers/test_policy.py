"""drivers/protocols/policy.py, applied in every decoder: an impossible number is never a
reading (it is withheld, flagged, and kept in the context), a reserved value that decides what
the number is withholds it, an impossible date keeps the reading without its time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from drivers.base import Event, Rejected
from drivers.decode import decode as run_decode
from drivers.protocols.ble_health import DECODERS
from drivers.protocols.cms50 import Cms50Decoder, Cms50V7Decoder, Packet
from drivers.protocols.hl7v2 import decode_oru, parse_message
from drivers.protocols.nmea import NmeaDecoder
from drivers.protocols.nonin import NoninDecoder
from drivers.protocols.sitecodes import load_code_map, mapped_measurement
from drivers.simulators import ble_values as enc
from drivers.simulators.cms50 import encode, encode_v7
from drivers.simulators.nmea import sentence
from drivers.simulators.nonin import encode_df7_packet, encode_df8_frame, encode_df13_packet
from edge_agent.models import Measurement
from tests.drivers.streams import feed

ROOT = Path(__file__).resolve().parents[2]


def spo2_of(events: list[Event]) -> Measurement:
    return next(e for e in events if isinstance(e, Measurement) and e.quantity == "spo2")


def withheld(m: Measurement, flag: str, reported: str) -> None:
    assert (m.value, m.absent_reason) == (None, "error")
    assert flag in m.flags and ("reported-value", reported) in m.context


def oru(obx: str) -> bytes:
    return (
        "MSH|^~\\&|MON||EDGE||20261123101500+0100||ORU^R01|P1|P|2.6\r"
        f"OBR|1|||X|||20261123101000+0100\r{obx}\r"
    ).encode()


IMPOSSIBLE_SPO2: dict[str, Callable[[], list[Event]]] = {
    "nonin-df7": lambda: feed(NoninDecoder(7), encode_df7_packet(110, 80)),
    "nonin-df13": lambda: feed(
        NoninDecoder(13), encode_df13_packet(110, 80, (2026, 11, 23, 8, 0, 0))
    ),
    "cms50": lambda: feed(Cms50Decoder(), encode(Packet(110, 80)) * 60),
    "cms50-v7": lambda: feed(Cms50V7Decoder(), encode_v7(Packet(110, 80)) * 60),
    "ble-plx": lambda: DECODERS["2a5e"](enc.encode_2a5e(101, 80)),
    "hl7": lambda: decode_oru(parse_message(oru("OBX|1|NM|59408-5^SpO2^LN||101|%^^UCUM|||||F"))),
}


@pytest.mark.parametrize("source", sorted(IMPOSSIBLE_SPO2))
def test_an_spo2_above_100_is_never_a_reading_in_any_decoder(source: str) -> None:
    m = spo2_of(IMPOSSIBLE_SPO2[source]())
    withheld(m, "impossible-value", "101" if source in ("ble-plx", "hl7") else "110")


def test_nonin_df8_has_no_checksum_so_an_spo2_above_100_is_not_even_a_frame() -> None:
    data = encode_df8_frame(110, 80) * 2
    events = feed(NoninDecoder(8), data)
    assert not [e for e in events if isinstance(e, Measurement)]
    assert b"".join(e.raw for e in events if isinstance(e, Rejected)) == data


def test_astm_and_site_mapped_results_follow_the_policy() -> None:
    mapping = load_code_map({"A1C": {"quantity": "hba1c"}, "CHOL": {"quantity": "cholesterol"}})
    withheld(mapped_measurement(mapping["A1C"], 130.0, "%"), "impossible-value", "130")
    withheld(mapped_measurement(mapping["CHOL"], -2.0, "mmol/L"), "impossible-value", "-2")
    kept = mapped_measurement(mapping["CHOL"], 900.0, "mg/dL")  # unlikely, not impossible
    assert kept.value == 900.0 and kept.flags == ()


def test_values_outside_plausible_but_possible_keep_their_number() -> None:
    pr = next(
        e
        for e in DECODERS["2a5e"](enc.encode_2a5e(100, 400))
        if isinstance(e, Measurement) and e.quantity == "pulse_rate"
    )
    assert pr.value == 400.0 and "impossible-value" not in pr.flags
    assert spo2_of(DECODERS["2a5e"](enc.encode_2a5e(100, 80))).value == 100.0


@pytest.mark.parametrize(
    ("contact", "hr", "kept"),
    [(2, 300, False), (0, 0, False), (1, 0, False), (3, 0, True), (0, 72, True)],
)
def test_a_heart_rate_without_skin_contact_is_not_a_reading(
    contact: int, hr: int, kept: bool
) -> None:
    (m,) = [
        e
        for e in DECODERS["2a37"](enc.encode_2a37(hr, contact=contact))
        if isinstance(e, Measurement)
    ]
    if kept:
        assert m.value == float(hr)
    else:
        withheld(m, "no-sensor-contact", str(hr))


@pytest.mark.parametrize(
    ("sample", "location"), [(0, 1), (11, 1), (15, 1), (1, 0), (1, 5), (1, 14)]
)
def test_a_reserved_glucose_sample_or_location_withholds_the_number(
    sample: int, location: int
) -> None:
    (m,) = DECODERS["2a18"](enc.encode_2a18(1, None, 95, "mg/dL", sample, location))
    assert isinstance(m, Measurement)
    withheld(m, "reserved-value", "95")


def test_a_reserved_temperature_site_keeps_the_reading() -> None:
    (m,) = DECODERS["2a1c"](enc.encode_2a1c(37.0, "Cel", site=12))
    assert isinstance(m, Measurement) and m.value == 37.0 and ("site", "reserved-12") in m.context


@pytest.mark.parametrize(
    "when",
    [
        (2026, 2, 30, 8, 0, 0),
        (2026, 13, 1, 8, 0, 0),
        (2026, 1, 32, 8, 0, 0),
        (2026, 1, 1, 24, 0, 0),
    ],
)
def test_impossible_dates_keep_the_reading_without_its_time(
    when: tuple[int, int, int, int, int, int],
) -> None:
    ble = DECODERS["2a1c"](enc.encode_2a1c(37.0, "Cel", when))
    nonin = feed(NoninDecoder(13), encode_df13_packet(96, 70, when))
    for events in (ble, nonin):
        ms = [e for e in events if isinstance(e, Measurement)]
        assert ms and all(m.device_time is None and "bad-device-time" in m.flags for m in ms)
        assert all(m.value is not None for m in ms)
    hl7 = decode_oru(
        parse_message(oru("OBX|1|NM|8310-5^Temp^LN||37.0|Cel^^UCUM|||||F|||20260230080000+0100"))
    )
    (m,) = [e for e in hl7 if isinstance(e, Measurement)]
    assert m.device_time is None and "bad-device-time" in m.flags


def test_gps_is_the_exception_an_impossible_date_rejects_the_sentence() -> None:
    line = sentence("GPRMC,120000.00,A,3157.699,N,00634.302,W,0.0,0.0,300226,,,A")
    assert [e.reason for e in feed(NmeaDecoder(), line) if isinstance(e, Rejected)] == ["malformed"]


def test_rfu_flag_bits_reject_the_record() -> None:
    value = bytes([0x80]) + enc.encode_2a1c(37.0, "Cel")[1:]
    assert DECODERS["2a1c"](value) == [Rejected(value, "rfu-flags")]


def test_the_decode_cli_shows_withheld_values_as_absent() -> None:
    out = run_decode("nonin:7", encode_df7_packet(110, 80))
    spo2 = next(m for m in out["measurements"] if m["quantity"] == "spo2")
    assert spo2["value"] is None and "impossible-value" in spo2["flags"]
    assert json.dumps(out)  # serialisable
