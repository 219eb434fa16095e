"""Bluetooth SIG health characteristics (docs/protocols.md §2): golden values with
provenance, special values never numbers, every flag combination round-tripped through the
encoders, truncated/over-long/garbage values always ``Rejected``, never an exception."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DecoderMisuse, DeviceInfo, Event, MessageComplete, Rejected
from drivers.protocols.ble_health import DECODERS, HealthDecoder
from drivers.protocols.ieee11073 import Special
from drivers.simulators import ble_values as enc
from edge_agent.catalogue import quantity
from edge_agent.models import Measurement

CAPTURES = Path(__file__).resolve().parents[1] / "captures" / "ble"
WHEN = (2026, 11, 23, 8, 15, 0)
ISO = "2026-11-23T08:15:00"
ABSENT = {
    Special.NAN: "not-a-number",
    Special.NRES: "error",
    Special.POSITIVE_INFINITY: "positive-infinity",
    Special.NEGATIVE_INFINITY: "negative-infinity",
    Special.RESERVED: "error",
}


# --- captures ------------------------------------------------------------------------------
def read_capture(path: Path) -> list[tuple[str, str, bytes]]:
    """``(direction, characteristic, value)`` per line; direction ">" is a write we send,
    "<" a value the device sent. Lines starting with # are provenance."""
    out: list[tuple[str, str, bytes]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        direction, words = (
            ("<", line.split()) if not line.startswith(">") else (">", line[1:].split())
        )
        out.append((direction, words[0], bytes.fromhex("".join(words[1:]))))
    return out


def event_json(event: Event) -> dict[str, Any]:
    if isinstance(event, Measurement):
        return {
            "type": "Measurement",
            "quantity": event.quantity,
            "value": event.value,
            "unit": event.unit,
            "loinc": event.loinc,
            "mdc": event.mdc,
            "device_time": event.device_time,
            "flags": list(event.flags),
            "absent_reason": event.absent_reason,
            "raw": event.raw.hex(" "),
            "context": [list(c) for c in event.context],
        }
    if isinstance(event, Rejected):
        return {"type": "Rejected", "raw": event.raw.hex(" "), "reason": event.reason}
    if isinstance(event, DeviceInfo):
        return {"type": "DeviceInfo", "key": event.key, "value": event.value}
    assert isinstance(event, MessageComplete)
    return {"type": "MessageComplete", "message_id": event.message_id}


GOLDEN = sorted(p for p in CAPTURES.glob("*.hex") if "racp" not in p.name)


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_capture_gives_the_whole_expected_events(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    events = [e for _, char, value in read_capture(path) for e in DECODERS[char](value)]
    assert [event_json(e) for e in events] == expected["events"]


def test_cuff_err_from_issue_80_is_never_a_number() -> None:
    """derdilla/blood-pressure-monitor-fl#80: flags 0x16, all SFLOATs 0x07FF ("Err")."""
    for _, char, value in read_capture(CAPTURES / "cuff-err-issue80.hex"):
        events = DECODERS[char](value)
        assert [e.quantity for e in events if isinstance(e, Measurement)] == [
            "systolic_bp",
            "diastolic_bp",
            "mean_arterial_pressure",
            "pulse_rate",
        ]
        for event in events:
            assert isinstance(event, Measurement)
            assert event.value is None and event.absent_reason == "not-a-number"
            assert event.device_time is not None and event.device_time.startswith("2024-06-23")


# --- helpers for the round trips -------------------------------------------------------------
def measurements(events: list[Event]) -> list[Measurement]:
    assert not [e for e in events if isinstance(e, Rejected)], events
    return [e for e in events if isinstance(e, Measurement)]


def by_quantity(events: list[Event]) -> dict[str, Measurement]:
    return {m.quantity: m for m in measurements(events)}


def expect_value(m: Measurement, value: object) -> None:
    if isinstance(value, Special):
        assert (m.value, m.absent_reason) == (None, ABSENT[value])
    else:
        assert m.value == pytest.approx(float(str(value)), rel=0, abs=1e-9)
        assert m.absent_reason is None


specials = st.sampled_from(list(Special))
times = st.none() | st.just(WHEN)
users = st.none() | st.integers(0, 255)


def sfloats(low: int, high: int, places: int = 0) -> st.SearchStrategy[object]:
    """Numbers a device sends at ``places`` decimals, or a special value."""
    scale = 10**places
    numbers = st.integers(low * scale, high * scale).map(lambda n: n / scale)
    return st.one_of(numbers, specials)


# --- blood pressure --------------------------------------------------------------------------
@given(
    sfloats(40, 250),
    sfloats(30, 150),
    sfloats(30, 200),
    st.sampled_from(["mmHg", "kPa"]),
    times,
    st.none() | sfloats(30, 200),
    users,
    st.none() | st.integers(0, 0xFFFF),
)
def test_blood_pressure_every_flag_combination(
    sys_: Any,
    dia: Any,
    mean: Any,
    unit: Any,
    time: Any,
    pulse: Any,
    user: int | None,
    status: int | None,
) -> None:
    value = enc.encode_2a35(sys_, dia, mean, unit, time, pulse, user, status)
    got = by_quantity(DECODERS["2a35"](value))
    assert list(got) == [
        "systolic_bp",
        "diastolic_bp",
        "mean_arterial_pressure",
        *(["pulse_rate"] if pulse is not None else []),
    ]
    for key, sent in (
        ("systolic_bp", sys_),
        ("diastolic_bp", dia),
        ("mean_arterial_pressure", mean),
        ("pulse_rate", pulse),
    ):
        if key in got:
            expect_value(got[key], sent)
    bits = status or 0
    flags = [
        name
        for bit, name in (
            (0, "body-movement"),
            (1, "cuff-too-loose"),
            (2, "irregular-pulse"),
            (5, "improper-position"),
        )
        if bits >> bit & 1
    ]
    flags += {1: ["pulse-rate-above-range"], 2: ["pulse-rate-below-range"]}.get(bits >> 3 & 3, [])
    for m in got.values():
        assert m.unit == (
            "/min" if m.quantity == "pulse_rate" else "kPa" if unit == "kPa" else "mm[Hg]"
        )
        assert m.device_time == (ISO if time else None)
        assert sorted(m.flags) == sorted(flags)
        assert m.context == (
            (("user", "unknown" if user == 255 else str(user)),) if user is not None else ()
        )
        assert m.raw == value and m.loinc == quantity(m.quantity).loinc


@given(sfloats(0, 300), st.sampled_from(["mmHg", "kPa"]))
def test_intermediate_cuff_pressure_is_flagged_never_a_reading(cuff: Any, unit: Any) -> None:
    (m,) = measurements(DECODERS["2a36"](enc.encode_2a36(cuff, unit)))
    assert m.quantity == "cuff_pressure" and m.flags == ("intermediate",)
    expect_value(m, cuff)


# --- heart rate ------------------------------------------------------------------------------
@given(
    st.integers(0, 0xFFFF),
    st.booleans(),
    st.integers(0, 3),
    st.none() | st.integers(0, 0xFFFF),
    st.lists(st.integers(0, 0xFFFF), max_size=8),
)
def test_heart_rate_every_flag_combination(
    hr: int, wide: bool, contact: int, energy: int | None, rr: list[int]
) -> None:
    wide = wide or hr > 0xFF
    value = enc.encode_2a37(hr, wide=wide, contact=contact, energy=energy, rr=tuple(rr))
    got = measurements(DECODERS["2a37"](value))
    # No skin contact (2), or 0 with contact detection unsupported: not a measurement.
    no_contact = contact == 2 or (hr == 0 and contact in (0, 1))
    assert [(m.quantity, m.value, m.unit) for m in got] == [
        ("heart_rate", None if no_contact else float(hr), "/min"),
        *([("energy_expended", float(energy), "kJ")] if energy is not None else []),
        *[("rr_interval", r / 1024, "s") for r in rr],
    ]
    assert got[0].flags == (("no-sensor-contact",) if no_contact else ())
    if energy is not None:
        assert got[1].flags == (("saturated",) if energy == 0xFFFF else ())


# --- temperature -----------------------------------------------------------------------------
@given(
    st.one_of(st.integers(-5000, 50000).map(lambda n: n / 100), specials),
    st.sampled_from(["Cel", "[degF]"]),
    times,
    st.none() | st.integers(0, 255),
)
def test_temperature_every_flag_combination(
    temp: Any, unit: Any, time: Any, site: int | None
) -> None:
    value = enc.encode_2a1c(temp, unit, time, site)
    (m,) = measurements(DECODERS["2a1c"](value))
    assert (m.quantity, m.unit, m.device_time) == ("body_temperature", unit, ISO if time else None)
    expect_value(m, temp)
    names = {
        1: "armpit",
        2: "body",
        3: "ear",
        4: "finger",
        5: "gastro-intestinal-tract",
        6: "mouth",
        7: "rectum",
        8: "toe",
        9: "tympanum",
    }
    assert m.context == (
        (("site", names.get(site, f"reserved-{site}")),) if site is not None else ()
    )


# --- glucose ---------------------------------------------------------------------------------
@given(
    st.integers(0, 0xFFFF),
    times,
    st.none() | st.integers(-0x8000, 0x7FFF),
    st.none() | st.one_of(st.integers(10, 600), specials),
    st.integers(0, 15),
    st.integers(0, 15),
    st.none() | st.integers(0, 0xFFFF),
    st.booleans(),
)
def test_glucose_mass_every_flag_combination(
    seq: int,
    time: Any,
    offset: int | None,
    mg: Any,
    sample: int,
    location: int,
    status: int | None,
    follows: bool,
) -> None:
    value = enc.encode_2a18(seq, time, mg, "mg/dL", sample, location, offset, status, follows)
    (event,) = DECODERS["2a18"](value)
    if mg is None:
        assert isinstance(event, DeviceInfo) and event.key == "glucose-record"
        assert event.value.startswith(f"sequence={seq} no-concentration")
        return
    assert isinstance(event, Measurement)
    control = sample == 10 or location == 4
    by_sample = {
        1: "41653-7",
        2: "41653-7",
        3: "41652-9",
        4: "2345-7",
        5: "41651-1",
        6: "2345-7",
        7: "2339-0",
        8: "2345-7",
        9: "99504-3",
    }  # mass/volume
    loinc = None if control else by_sample.get(sample, "2339-0")  # reserved: blood
    assert (event.quantity, event.unit, event.loinc) == ("glucose", "mg/dL", loinc)
    reserved = sample not in range(1, 11) or location not in (1, 2, 3, 4, 15)
    if reserved and not isinstance(mg, Special):
        # A reserved type or location may mean control solution: withheld (policy.py).
        assert (event.value, event.absent_reason) == (None, "error")
        assert "reserved-value" in event.flags
    else:
        expect_value(event, mg)
    ctx = dict(event.context)
    assert ctx["sequence"] == str(seq)
    assert ctx["type-sample-location"] == f"0x{location << 4 | sample:02x}"  # device's coding
    assert ("control" in event.flags) == control
    if time is None:
        assert event.device_time is None
    else:
        shifted = datetime(*time) + timedelta(minutes=offset or 0)
        assert event.device_time == shifted.isoformat()
    ssa = [
        "low-battery",
        "sensor-malfunction",
        "sample-size-insufficient",
        "strip-insertion-error",
        "strip-type-incorrect",
        "above-measuring-range",
        "below-measuring-range",
        "temperature-too-high",
        "temperature-too-low",
        "strip-pulled-too-soon",
        "device-fault",
        "time-fault",
    ]
    assert [f for f in event.flags if f not in ("control", "reserved-value")] == [
        name for bit, name in enumerate(ssa) if (status or 0) >> bit & 1
    ]


@given(st.integers(20, 330).map(lambda n: n / 10))
def test_glucose_molar_keeps_its_dimension_and_molar_loinc(mmol: float) -> None:
    (m,) = measurements(DECODERS["2a18"](enc.encode_2a18(1, WHEN, mmol, "mmol/L")))
    assert (m.value, m.unit, m.loinc) == (mmol, "mmol/L", "14743-9")


def test_glucose_time_offset_crosses_midnight_and_unknown_base_time_stays_unknown() -> None:
    late = enc.encode_2a18(1, (2026, 12, 31, 23, 50, 0), 100, offset=20)
    (m,) = measurements(DECODERS["2a18"](late))
    assert m.device_time == "2027-01-01T00:10:00"
    (m,) = measurements(DECODERS["2a18"](enc.encode_2a18(1, None, 100, offset=20)))
    assert m.device_time is None and m.flags == ()


@given(
    st.integers(0, 0xFFFF),
    st.none() | st.tuples(st.integers(0, 255), st.integers(0, 500)),
    st.none() | st.integers(0, 255),
    st.none() | st.integers(0, 15),
    st.none() | st.integers(0, 15),
    st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255)),
    st.none() | st.tuples(st.integers(0, 255), st.integers(0, 200)),
    st.sampled_from(["mg", "mL"]),
    st.none() | sfloats(3, 20, 1),
)
def test_glucose_context_every_flag_combination(
    seq: int,
    carbs: Any,
    meal: int | None,
    tester: int | None,
    health: int | None,
    exercise: Any,
    medication: Any,
    med_unit: Any,
    hba1c: Any,
) -> None:
    value = enc.encode_2a34(
        seq,
        carbohydrate=carbs,
        meal=meal,
        tester=tester,
        health=health,
        exercise=exercise,
        medication=medication,
        medication_unit=med_unit,
        hba1c=hba1c,
    )
    events = DECODERS["2a34"](value)
    info = events[0]
    assert isinstance(info, DeviceInfo) and info.value.startswith(f"sequence={seq}")
    assert ("meal=" in info.value) == (meal is not None)
    assert ("exercise-duration=" in info.value) == (exercise is not None)
    if carbs is not None:
        assert f"carbohydrate={carbs[1]} g" in info.value
    if medication is not None:
        assert f"medication={medication[1]} {med_unit}" in info.value
    if hba1c is None:
        assert len(events) == 1
    else:
        (m,) = measurements(events[1:])
        assert m.quantity == "hba1c" and dict(m.context)["sequence"] == str(seq)
        expect_value(m, hba1c)


# --- pulse oximetry --------------------------------------------------------------------------
PLX_STATUS = [
    "measurement-ongoing",
    "early-estimate",
    "validated",
    "fully-qualified",
    "from-storage",
    "demonstration",
    "testing",
    "calibration-ongoing",
    "measurement-unavailable",
    "questionable",
    "invalid",
]
PLX_SENSOR = [
    "extended-display-update",
    "equipment-malfunction",
    "signal-processing-irregularity",
    "inadequate-signal",
    "poor-signal",
    "low-perfusion",
    "erratic-signal",
    "non-pulsatile-signal",
    "questionable-pulse",
    "signal-analysis-ongoing",
    "sensor-interference",
    "sensor-unconnected",
    "unknown-sensor",
    "sensor-displaced",
    "sensor-malfunctioning",
    "sensor-disconnected",
]


def plx_flags(status: int | None, sensor: int | None) -> list[str]:
    return [n for b, n in enumerate(PLX_STATUS, start=5) if (status or 0) >> b & 1] + [
        n for b, n in enumerate(PLX_SENSOR) if (sensor or 0) >> b & 1
    ]


@given(
    sfloats(50, 100),
    sfloats(20, 250),
    times,
    st.none() | st.integers(0, 0xFFFF),
    st.none() | st.integers(0, 0xFFFFFF),
    st.none() | sfloats(0, 20, 1),
    st.booleans(),
)
def test_plx_spot_check_every_flag_combination(
    spo2: Any,
    pr: Any,
    time: Any,
    status: int | None,
    sensor: int | None,
    pai: Any,
    clock_not_set: bool,
) -> None:
    value = enc.encode_2a5e(spo2, pr, time, status, sensor, pai, clock_not_set)
    got = by_quantity(DECODERS["2a5e"](value))
    assert list(got) == [
        "spo2",
        "pulse_rate",
        *(["pulse_amplitude_index"] if pai is not None else []),
    ]
    expect_value(got["spo2"], spo2)
    expect_value(got["pulse_rate"], pr)
    flags = (["device-clock-not-set"] if clock_not_set else []) + plx_flags(status, sensor)
    for m in got.values():
        assert list(m.flags) == flags
        assert m.device_time == (ISO if time and not clock_not_set else None)


@given(
    sfloats(50, 100),
    sfloats(20, 250),
    st.none() | st.tuples(sfloats(50, 100), sfloats(20, 250)),
    st.none() | st.tuples(sfloats(50, 100), sfloats(20, 250)),
    st.none() | st.integers(0, 0xFFFF),
    st.none() | st.integers(0, 0xFFFFFF),
    st.none() | sfloats(0, 20, 1),
)
def test_plx_continuous_every_flag_combination(
    spo2: Any, pr: Any, fast: Any, slow: Any, status: int | None, sensor: int | None, pai: Any
) -> None:
    value = enc.encode_2a5f(spo2, pr, fast, slow, status, sensor, pai)
    got = by_quantity(DECODERS["2a5f"](value))
    expect_value(got["spo2"], spo2)
    expect_value(got["pulse_rate"], pr)
    keys = [
        k
        for name, pair in (("fast", fast), ("slow", slow))
        if pair is not None
        for k in (f"spo2-{name}", f"pulse-rate-{name}")
    ]
    assert [k for k, _ in got["spo2"].context] == keys
    assert list(got["spo2"].flags) == plx_flags(status, sensor)
    assert ("pulse_amplitude_index" in got) == (pai is not None)


# --- weight and body composition ------------------------------------------------------------
@given(
    st.none() | st.integers(0, 0xFFFE),
    st.sampled_from(["kg", "[lb_av]"]),
    times,
    users,
    st.none() | st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
)
def test_weight_every_flag_combination(
    count: int | None, unit: Any, time: Any, user: int | None, bmi_height: Any
) -> None:
    step = 0.01 if unit == "[lb_av]" else 0.005
    weight = None if count is None else round(count * step, 3)
    bmi, height = (
        (round(bmi_height[0] / 10, 1), round(bmi_height[1] / 10, 1))
        if (bmi_height)
        else (None, None)
    )
    value = enc.encode_2a9d(weight, unit, time, user, bmi, height)
    got = by_quantity(DECODERS["2a9d"](value))
    if weight is None:
        assert list(got) == ["body_weight"]
        m = got["body_weight"]
        assert (m.value, m.absent_reason, m.flags) == (None, "error", ("measurement-unsuccessful",))
        return
    assert got["body_weight"].value == pytest.approx(weight) and got["body_weight"].unit == unit
    if bmi is not None:
        assert got["bmi"].value == pytest.approx(bmi)
        assert got["body_height"].value == pytest.approx(height)
        assert got["body_height"].unit == ("[in_i]" if unit == "[lb_av]" else "cm")
    assert all(m.device_time == (ISO if time else None) for m in got.values())


BODY_FIELDS = (
    "basal_metabolism",
    "muscle_percentage",
    "muscle_mass",
    "fat_free_mass",
    "soft_lean_mass",
    "body_water_mass",
    "impedance",
    "weight",
    "height",
)


@given(
    st.none() | st.integers(0, 0xFFFE),
    st.sampled_from(["kg", "[lb_av]"]),
    times,
    users,
    st.lists(st.none() | st.integers(0, 0xFFFF), min_size=9, max_size=9),
    st.booleans(),
)
def test_body_composition_every_flag_combination(
    fat: int | None,
    unit: Any,
    time: Any,
    user: int | None,
    counts: list[int | None],
    multiple: bool,
) -> None:
    mass = 0.01 if unit == "[lb_av]" else 0.005
    steps = (1, 0.1, mass, mass, mass, mass, 0.1, mass, 0.1)
    values = {
        k: None if c is None else round(c * s, 3)
        for k, c, s in zip(BODY_FIELDS, counts, steps, strict=True)
    }
    value = enc.encode_2a9c(
        None if fat is None else fat / 10,
        unit,
        time,
        user,
        multiple_packet=multiple,
        **values,  # type: ignore[arg-type]
    )
    got = measurements(DECODERS["2a9c"](value))
    names = {"impedance": "body_impedance", "weight": "body_weight", "height": "body_height"}
    assert [m.quantity for m in got] == [
        "body_fat_percentage",
        *[names.get(k, k) for k, v in values.items() if v is not None],
    ]
    for m in got[1:]:
        key = (
            next(k for k, n in names.items() if n == m.quantity)
            if (m.quantity in names.values())
            else m.quantity
        )
        expected = values[key]
        if key == "muscle_percentage" and expected is not None and expected > 100:
            expected = None  # more than 100 %: withheld (drivers.protocols.policy)
        assert m.value == (None if expected is None else pytest.approx(expected))
    possible = fat is not None and fat <= 1000
    assert got[0].value == (pytest.approx(fat / 10) if possible and fat is not None else None)
    if fat is not None and fat > 1000:
        assert "impossible-value" in got[0].flags and got[0].absent_reason == "error"
    assert all(("multiple-packet" in m.flags) == multiple for m in got)


# --- every flag value, exhaustively ----------------------------------------------------------
def _bp_for(flags: int) -> bytes:
    return enc.encode_2a35(
        120,
        80,
        93,
        "kPa" if flags & 1 else "mmHg",
        WHEN if flags & 2 else None,
        70 if flags & 4 else None,
        1 if flags & 8 else None,
        0 if flags & 16 else None,
    )


BUILDERS: dict[str, tuple[int, Callable[[int], bytes]]] = {
    # characteristic: (number of defined flag bits, value with exactly those flags)
    "2a35": (5, _bp_for),
    "2a36": (5, _bp_for),
    "2a37": (
        5,
        lambda f: enc.encode_2a37(
            72,
            wide=bool(f & 1),
            contact=f >> 1 & 3,
            energy=10 if f & 8 else None,
            rr=(800,) if f & 16 else (),
        ),
    ),
    "2a1c": (
        3,
        lambda f: enc.encode_2a1c(
            37, "[degF]" if f & 1 else "Cel", WHEN if f & 2 else None, 2 if f & 4 else None
        ),
    ),
    "2a18": (
        5,
        lambda f: enc.encode_2a18(
            3,
            WHEN,
            (5 if f & 4 else 100) if f & 2 else None,
            "mmol/L" if f & 4 else "mg/dL",
            offset=5 if f & 1 else None,
            status=1 if f & 8 else None,
            context_follows=bool(f & 16),
        ),
    ),
    "2a34": (
        8,
        lambda f: enc.encode_2a34(
            3,
            carbohydrate=(1, 30) if f & 1 else None,
            meal=1 if f & 2 else None,
            tester=1 if f & 4 else None,
            exercise=(60, 10) if f & 8 else None,
            medication=(1, 2) if f & 16 else None,
            medication_unit="mL" if f & 32 else "mg",
            hba1c=6 if f & 64 else None,
            extended=0 if f & 128 else None,
        ),
    ),
    "2a5e": (
        5,
        lambda f: enc.encode_2a5e(
            97,
            70,
            WHEN if f & 1 else None,
            1 if f & 2 else None,
            1 if f & 4 else None,
            1 if f & 8 else None,
            bool(f & 16),
        ),
    ),
    "2a5f": (
        5,
        lambda f: enc.encode_2a5f(
            97,
            70,
            (96, 71) if f & 1 else None,
            (95, 72) if f & 2 else None,
            1 if f & 4 else None,
            1 if f & 8 else None,
            1 if f & 16 else None,
        ),
    ),
    "2a9d": (
        4,
        lambda f: enc.encode_2a9d(
            70,
            "[lb_av]" if f & 1 else "kg",
            WHEN if f & 2 else None,
            1 if f & 4 else None,
            24 if f & 8 else None,
            170 if f & 8 else None,
        ),
    ),
}


@pytest.mark.parametrize("char", sorted(BUILDERS))
def test_every_flag_value_is_handled(char: str) -> None:
    """All 256 flag octets: the defined combinations decode with no reject (encoders set
    exactly those bits), RFU bits are ``rfu-flags``; never an exception."""
    bits, build = BUILDERS[char]
    for flags in range(256):
        if flags >> bits:
            value = bytes([flags]) + build(flags & ((1 << bits) - 1))[1:]
            assert DECODERS[char](value) == [Rejected(value, "rfu-flags")]
            continue
        value = build(flags)
        assert value[0] == flags
        events = DECODERS[char](value)
        assert events and not [e for e in events if isinstance(e, Rejected)], (flags, events)


def test_every_body_composition_flag_word_is_handled() -> None:
    """All 65536 flag words (BCS has 16-bit flags), with the fields they announce."""
    longest = bytes(2 + 7 + 1 + 2 * 9)
    for flags in range(1 << 16):
        value = flags.to_bytes(2, "little") + longest
        if flags >> 13:
            assert DECODERS["2a9c"](value) == [Rejected(value, "rfu-flags")]
            continue
        fields = bin(flags >> 3 & 0x1FF).count("1")
        length = 4 + 7 * (flags >> 1 & 1) + (flags >> 2 & 1) + 2 * fields
        events = DECODERS["2a9c"](value[:length])
        assert len(measurements(events)) == 1 + fields
        if length < len(value):
            assert DECODERS["2a9c"](value) == [Rejected(value, "too-long")]


# --- truncated, over-long, garbage -----------------------------------------------------------
def valid_values() -> st.SearchStrategy[tuple[str, bytes]]:
    return st.sampled_from(sorted(BUILDERS)).flatmap(
        lambda c: st.integers(0, (1 << BUILDERS[c][0]) - 1).map(lambda f: (c, BUILDERS[c][1](f)))
    )


@given(valid_values(), st.data())
def test_any_strict_prefix_is_rejected_and_extra_octets_are_too_long(
    pair: tuple[str, bytes],
    data: st.DataObject,
) -> None:
    char, value = pair
    cut = data.draw(st.integers(0, len(value) - 1))
    prefix = value[:cut]
    events = DECODERS[char](prefix)
    rr_list = char == "2a37" and value[0] & 0x10 and cut > len(value) - 2
    if not rr_list:
        assert len(events) == 1 and isinstance(events[0], Rejected) and events[0].raw == prefix
        assert events[0].reason == "truncated"
    extra = data.draw(st.binary(min_size=1, max_size=4))
    longer = DECODERS[char](value + extra)
    if not (char == "2a37" and value[0] & 0x10):
        assert longer == [Rejected(value + extra, "too-long")]


@pytest.mark.parametrize("char", sorted(DECODERS))
@given(data=st.binary(max_size=48))
def test_any_bytes_give_events_or_a_reject_never_an_exception(char: str, data: bytes) -> None:
    events = DECODERS[char](data)
    assert events
    for event in events:
        assert isinstance(event, Measurement | DeviceInfo | Rejected)
        if isinstance(event, Rejected):
            assert event == Rejected(data, event.reason) and event.reason
            assert len(events) == 1
        if isinstance(event, Measurement):
            assert event.raw == data
            assert (event.value is None) == (event.absent_reason is not None)
            assert event.value is None or math.isfinite(event.value)
            quantity(event.quantity)  # a catalogue key


def test_bytearray_from_bleak_is_accepted() -> None:
    value = enc.encode_2a35(120, 80, 93)
    # bleak's callbacks hand bytearray; raw must still be bytes (hashable, comparable).
    assert DECODERS["2a35"](bytearray(value)) == DECODERS["2a35"](value)  # type: ignore[arg-type]
    got = DECODERS["2a35"](bytearray(b"\x00"))  # type: ignore[arg-type]
    assert got == [Rejected(b"\x00", "truncated")]
    assert isinstance(got[0], Rejected) and type(got[0].raw) is bytes


def test_impossible_device_time_keeps_the_reading_and_flags_it() -> None:
    value = enc.encode_2a35(120, 80, 93, time=(2026, 2, 30, 8, 0, 0))
    for m in measurements(DECODERS["2a35"](value)):
        assert m.device_time is None and m.flags == ("bad-device-time",) and m.value


# --- HealthDecoder -------------------------------------------------------------------------
def test_health_decoder_decodes_its_subscriptions_and_has_nothing_to_send() -> None:
    decoder = HealthDecoder(("2a35", "2a36"))
    assert decoder.subscriptions == ("2a35", "2a36")
    assert decoder.writes_to_send() == []
    value = enc.encode_2a35(120, 80, 93)
    assert decoder.receive_value("2a35", value) == DECODERS["2a35"](value)
    assert decoder.receive_value("2a1c", b"\x00") == [
        Rejected(b"\x00", "unexpected-characteristic")
    ]
    with pytest.raises(DecoderMisuse):
        decoder.acknowledge("anything", stored=True)
    with pytest.raises(DecoderMisuse):
        HealthDecoder(("2a99",))
    with pytest.raises(DecoderMisuse):
        HealthDecoder(())
