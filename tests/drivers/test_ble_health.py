"""Bluetooth SIG health characteristics: golden vectors, special values, every flag
combination round-tripped, garbage never raises; RACP glucose download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DecoderMisuse, DeviceInfo, Event, GattWrite, MessageComplete, Rejected
from drivers.protocols.ble_health import DECODERS, GlucoseDownload, HealthDecoder, parse_racp
from drivers.protocols.ieee11073 import date_time, encode_sfloat, float32, sfloat
from drivers.simulators import ble_values as enc
from edge_agent.models import Measurement

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "captures" / "ble" /
                      "vectors.json").read_text())
WHEN = (2026, 11, 23, 8, 15, 0)


def ms(events: list[Event]) -> list[tuple[str, float | None, str, str | None]]:
    return [(e.quantity, e.value, e.unit, e.device_time) for e in events
            if isinstance(e, Measurement)]


@pytest.mark.parametrize("name", sorted(k for k in VECTORS if not k.startswith("_")))
def test_golden_vectors(name: str) -> None:
    vector = VECTORS[name]
    events = DECODERS[vector["uuid"]](bytes.fromhex(vector["hex"]))
    assert [list(m) for m in ms(events)] == vector["expect"]
    assert not [e for e in events if isinstance(e, Rejected)]


def test_cuff_err_is_never_a_number() -> None:
    events = DECODERS["2a35"](bytes.fromhex(VECTORS["cuff-err"]["hex"]))
    assert all(isinstance(e, Measurement) and e.value is None
               and e.absent_reason == "not-a-number" for e in events)


@pytest.mark.parametrize(("raw", "reason"), [(0x07FF, "not-a-number"), (0x0800, "error"),
                                             (0x07FE, "positive-infinity"),
                                             (0x0802, "negative-infinity"), (0x0801, "error")])
def test_sfloat_special_values(raw: int, reason: str) -> None:
    value = sfloat(raw)
    assert value.value is None and value.absent_reason == reason


def test_sfloat_precision_and_sign() -> None:
    assert sfloat(0xF014).value == 2.0 and sfloat(0xF014).exponent == -1
    assert sfloat(0xE0C8).exponent == -2
    assert sfloat(0xF7FF).value == 204.7  # exponent -1, not NaN
    assert sfloat(encode_sfloat(-5, 1)).value == -50.0
    assert float32(0x007FFFFF).special == "nan" and float32(0xFE000E72).value == 36.98


def test_date_time_unknown_and_impossible() -> None:
    assert date_time(bytes(7)) is None
    assert date_time(bytes.fromhex("ea070d01000000")) is None  # month 13
    assert date_time(bytes.fromhex("ea070b17080f00")) == "2026-11-23T08:15:00"


@given(st.integers(40, 250), st.integers(30, 150), st.booleans(), st.booleans(),
       st.none() | st.integers(0, 255), st.none() | st.integers(0, 0x3F), st.booleans())
def test_blood_pressure_every_flag_combination(sys_: int, dia: int, kpa: bool, stamp: bool,
                                               user: int | None, status: int | None,
                                               pulse: bool) -> None:
    s, d = (round(sys_ / 7.5, 1), round(dia / 7.5, 1)) if kpa else (float(sys_), float(dia))
    value = enc.encode_2a35(s, d, d, kpa=kpa, when=WHEN if stamp else None,
                            pulse=70 if pulse else None, user=user, status=status)
    events = DECODERS["2a35"](value)
    got = ms(events)
    unit = "kPa" if kpa else "mm[Hg]"
    assert got[0][:3] == ("systolic_bp", s, unit)
    assert got[1][:3] == ("diastolic_bp", d, unit)
    assert len(got) == (4 if pulse else 3)
    assert all(g[3] == ("2026-11-23T08:15:00" if stamp else None) for g in got)


@given(st.integers(0, 0x1FF), st.booleans(), st.integers(0, 3), st.none() | st.integers(0, 65535),
       st.lists(st.integers(1, 4000), max_size=5))
def test_heart_rate_round_trip(hr: int, wide: bool, contact: int, energy: int | None,
                               rr: list[int]) -> None:
    if hr > 255:
        wide = True
    events = DECODERS["2a37"](enc.encode_2a37(hr, wide=wide, contact=contact, energy=energy,
                                              rr=tuple(rr)))
    got = ms(events)
    assert got[0][:2] == ("heart_rate", float(hr))
    assert [v for q, v, _, _ in got if q == "rr_interval"] == [round(r / 1024, 6) for r in rr]


@given(st.floats(30, 45).map(lambda t: round(t, 2)), st.booleans(),
       st.none() | st.integers(1, 9))
def test_temperature_round_trip(temp: float, fahrenheit: bool, site: int | None) -> None:
    events = DECODERS["2a1c"](enc.encode_2a1c(temp, fahrenheit=fahrenheit, site=site))
    got = ms(events)
    assert got == [("body_temperature", temp, "[degF]" if fahrenheit else "Cel", None)]


@given(st.integers(0, 65535), st.integers(20, 600), st.none() | st.integers(-600, 600),
       st.integers(1, 10), st.integers(1, 4))
def test_glucose_round_trip(seq: int, mg: int, offset: int | None, sample: int,
                            location: int) -> None:
    events = DECODERS["2a18"](enc.encode_2a18(seq, WHEN, mg_dl=mg, offset_min=offset,
                                              sample=sample, location=location))
    (m,) = [e for e in events if isinstance(e, Measurement)]
    assert (m.quantity, m.value, m.unit) == ("glucose", float(mg), "mg/dL")
    assert dict(m.context)["sequence"] == str(seq)
    assert ("control-solution" in m.flags) == (sample == 10 or location == 4)


def test_glucose_molar_units_and_loinc() -> None:
    (m,) = DECODERS["2a18"](enc.encode_2a18(1, WHEN, mmol_l=6.5))
    assert isinstance(m, Measurement)
    assert (m.value, m.unit, m.loinc) == (6.5, "mmol/L", "14743-9")


@given(st.floats(70, 100).map(lambda v: round(v)), st.floats(30, 200).map(lambda v: round(v)),
       st.booleans(), st.none() | st.integers(0, 0xFFFF), st.none() | st.integers(0, 0xFFFFFF),
       st.none() | st.floats(0, 20).map(lambda v: round(v, 1)))
def test_plx_spot_check_every_flag(spo2: int, pr: int, stamp: bool, status: int | None,
                                   sensor: int | None, pai: float | None) -> None:
    events = DECODERS["2a5e"](enc.encode_2a5e(spo2, pr, when=WHEN if stamp else None,
                                              status=status, sensor=sensor, pai=pai))
    got = ms(events)
    assert got[:2] == [("spo2", float(spo2), "%", got[0][3]), ("pulse_rate", float(pr), "/min",
                                                             got[0][3])]
    assert (len(got) == 3) == (pai is not None)


@given(st.floats(2, 300).map(lambda w: round(w / 0.005) * 0.005), st.booleans())
def test_weight_round_trip(kg: float, with_bmi: bool) -> None:
    value = enc.encode_2a9d(kg, bmi=24.5 if with_bmi else None,
                            height_cm=172.0 if with_bmi else None)
    got = ms(DECODERS["2a9d"](value))
    assert got[0][:3] == ("body_weight", round(kg, 3), "kg")
    if with_bmi:
        assert got[1][:2] == ("bmi", 24.5) and got[2][:3] == ("body_height", 172.0, "cm")


def test_unsuccessful_weighings_are_not_numbers() -> None:
    assert DECODERS["2a9d"](b"\x00\xff\xff") == [DeviceInfo("weight",
                                                            "measurement-unsuccessful")]
    assert DECODERS["2a9c"](b"\x00\x00\xff\xff") == [
        DeviceInfo("body-composition", "measurement-unsuccessful")]


def test_body_composition_with_weight_and_height() -> None:
    got = ms(DECODERS["2a9c"](enc.encode_2a9c(23.4, kg=70.0, height_cm=175.0)))
    assert got == [("body_fat_percentage", 23.4, "%", None), ("body_weight", 70.0, "kg", None),
                   ("body_height", 175.0, "cm", None)]


@pytest.mark.parametrize("uuid", sorted(DECODERS))
@given(data=st.binary(max_size=40))
def test_any_value_is_events_or_a_reject(uuid: str, data: bytes) -> None:
    for event in DECODERS[uuid](data):
        if isinstance(event, Rejected):
            assert event.raw == data and event.reason
        if isinstance(event, Measurement) and event.value is None:
            assert event.absent_reason


def test_rfu_flags_and_lengths_are_rejected() -> None:
    assert DECODERS["2a35"](b"\x80" + bytes(6))[0] == Rejected(b"\x80" + bytes(6), "rfu-flags")
    assert DECODERS["2a35"](b"\x00" + bytes(4))[0].reason == "truncated"  # type: ignore[union-attr]
    assert DECODERS["2a35"](b"\x00" + bytes(7))[0].reason == "too-long"  # type: ignore[union-attr]


# --- RACP glucose download -----------------------------------------------------------------
def run_procedure(meter: enc.GlucoseMeterRecords, dl: GlucoseDownload,
                  stored: bool = True) -> list[Event]:
    dl.start()
    events: list[Event] = []
    for write in dl.writes_to_send():
        assert write == GattWrite("2a52", write.value)
        for char, value in meter.handle_racp(write.value):
            events += dl.receive_value(char, value)
    for event in events:
        if isinstance(event, MessageComplete):
            dl.acknowledge(event.message_id, stored=stored)
    return events


def test_fifty_records_downloaded_once_then_only_new_ones() -> None:
    meter = enc.GlucoseMeterRecords(with_context=True)
    for i in range(50):
        meter.add(90 + i)
    dl = GlucoseDownload()
    first = [e for e in run_procedure(meter, dl) if isinstance(e, Measurement)]
    assert [e.value for e in first] == [90.0 + i for i in range(50)]
    assert all(dict(e.context)["meal"] for e in first)  # context matched by sequence number
    assert dl.last_seq == 50
    for mg in (200, 201, 202):
        meter.add(mg)
    second = [e for e in run_procedure(meter, dl) if isinstance(e, Measurement)]
    assert [e.value for e in second] == [200.0, 201.0, 202.0] and dl.last_seq == 53
    third = run_procedure(meter, dl)
    assert [type(e) for e in third] == [MessageComplete]  # no records found: not an error


def test_cursor_moves_only_after_a_successful_commit() -> None:
    meter = enc.GlucoseMeterRecords()
    for i in range(5):
        meter.add(100 + i)
    dl = GlucoseDownload(last_seq=2)
    run_procedure(meter, dl, stored=False)
    assert dl.last_seq == 2  # commit failed: same records next time
    got = [e for e in run_procedure(meter, dl) if isinstance(e, Measurement)]
    assert [e.value for e in got] == [102.0, 103.0, 104.0] and dl.last_seq == 5


def test_failed_procedure_keeps_nothing_and_reports() -> None:
    dl = GlucoseDownload(last_seq=3)
    dl.start()
    dl.receive_value("2a18", enc.encode_2a18(4, WHEN, mg_dl=120))
    events = dl.receive_value("2a52", bytes([0x06, 0x00, 0x01, 0x08]))
    assert events == [DeviceInfo("racp", "procedure-not-completed")] and dl.last_seq == 3
    with pytest.raises(DecoderMisuse):
        dl.acknowledge("racp-9", stored=True)


def test_racp_parsing_and_health_decoder() -> None:
    count = parse_racp(b"\x05\x00\x32\x00")
    assert count is not None and count.count == 50
    assert parse_racp(b"\x07") is None
    decoder = HealthDecoder(("2a35",))
    assert decoder.writes_to_send() == []
    assert decoder.receive_value("2a99", b"\x00")[0] == Rejected(
        b"\x00", "unexpected-characteristic-2a99")
    with pytest.raises(DecoderMisuse):
        HealthDecoder(("2a99",))
