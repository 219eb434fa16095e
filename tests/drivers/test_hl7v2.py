"""HL7 v2 parsing and ORU^R01 decoding: golden messages, separators, escapes, time, units, ACKs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DeviceFacts, DeviceInfo, Event, MessageComplete, Rejected
from drivers.protocols import hl7v2
from drivers.protocols.hl7v2 import Hl7Error, Separators, parse_message
from drivers.protocols.mllp import MllpDecoder, frame
from drivers.simulators.hl7_monitor import encode_oru, format_nm
from edge_agent.catalogue import catalogue
from edge_agent.models import Measurement, measurement
from tests.drivers import streams
from tests.drivers.streams import play

CAPTURES = Path(__file__).parent.parent / "captures" / "hl7"
GOLDEN = sorted(CAPTURES.glob("*.hl7"))
CLOCK = "20240611100000+0100"


def load_capture(path: Path) -> list[bytes]:
    """The capture's messages (segments joined with CR), unframed; see the files' header."""
    messages: list[bytes] = []
    current: list[str] = []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("#"):
            continue
        if line.strip():
            current.append(line)
        elif current:
            messages.append("".join(s + "\r" for s in current).encode("utf-8"))
            current = []
    return messages


def stream(path: Path) -> bytes:
    return b"".join(frame(m) for m in load_capture(path))


def decoder() -> MllpDecoder:
    return MllpDecoder(clock=lambda: CLOCK, control_id_prefix="T")


def event_json(event: Event) -> dict[str, Any]:
    return streams.event_json(event, "utf-8")


def measurements(events: Sequence[Event]) -> list[Measurement]:
    return [e for e in events if isinstance(e, Measurement)]


def oru(*obx: str, msh: str = "", extra: Sequence[str] = ()) -> bytes:
    header = msh or "MSH|^~\\&|MON||EDGE||20240611093512+0100||ORU^R01|C1|P|2.6"
    segments = [header, *extra, "OBR|1|||X|||20240611093500+0100", *obx]
    return "".join(s + "\r" for s in segments).encode()


def one(*obx: str, **kwargs: Any) -> Event:
    """The one non-DeviceInfo/DeviceFacts event of a message built by :func:`oru`."""
    events = [e for e in hl7v2.decode_oru(parse_message(oru(*obx, **kwargs)))
              if not isinstance(e, DeviceInfo | DeviceFacts)]  # fmt: skip
    assert len(events) == 1, events
    return events[0]


# -- golden -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_message_gives_the_expected_events_and_acks(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    events, replies = play(decoder(), [stream(path)])
    assert [event_json(e) for e in events] == expected["events"]
    assert replies.decode("utf-8") == expected["replies"]


def test_golden_files_start_with_their_provenance() -> None:
    assert len(GOLDEN) >= 2
    for path in GOLDEN:
        first = path.read_text(encoding="utf-8").splitlines()[:3]
        assert first[0].startswith("# ") and "Provenance" in "".join(first[1:] + first[:1])


# -- separators, segments, escapes ------------------------------------------------------------


def test_separators_and_field_numbers_come_from_msh() -> None:
    message = parse_message(b"MSH!@#$%!APP@X!FAC!!!20240611!!ORU@R01!ID$F$9!P!2.5\rPID!!!A@B")
    msh = message.header.segment
    assert message.header.separators == Separators("!", "@", "#", "$", "%")
    assert msh.field(1) == "!" and msh.field(2) == "@#$%"  # MSH-1 is the separator itself
    assert msh.get(3, 2) == "X" and msh.get(9, 2) == "R01" and message.control_id == "ID!9"
    assert message.segments[1].get(3, 2) == "B"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PID|||1\rMSH|^~\\&|A", "no-msh"),
        (b"MSH|^^\\&|A||||||ORU^R01|1", "bad-separators"),
        (b"MSHA^~\\&|x", "bad-separators"),
        (b"MSH|^~\\&|A||||||ORU^R01||P|2.5", "no-control-id"),
        (b"\r\n\r", "empty"),
    ],
)
def test_unreadable_headers_raise_hl7error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(Hl7Error) as info:
        parse_message(data)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "data",
    [
        b"MSH|^~\\&|A||||||ORU^R01|1\rPID|||7\rOBR|1\r",
        b"MSH|^~\\&|A||||||ORU^R01|1\r\nPID|||7\r\nOBR|1\r\n",
        b"MSH|^~\\&|A||||||ORU^R01|1\nPID|||7\nOBR|1\n",  # pitfall: LF terminators
        b"MSH|^~\\&|A||||||ORU^R01|1\r\rPID|||7\r\n\r\nOBR|1",
    ],
)
def test_segments_split_on_cr_tolerating_crlf_and_lf_only(data: bytes) -> None:
    assert [s.name for s in parse_message(data).segments] == ["MSH", "PID", "OBR"]


def test_lf_inside_data_stays_data_when_the_message_uses_cr() -> None:
    message = parse_message(b"MSH|^~\\&|A||||||ORU^R01|1\rNTE|1||line one\nline two\r")
    assert [s.name for s in message.segments] == ["MSH", "NTE"]
    assert message.segments[1].text(3) == "line one\nline two"


@pytest.mark.parametrize(
    ("escaped", "plain"),
    [
        ("a\\F\\b", "a|b"),
        ("\\S\\\\T\\\\R\\\\E\\", "^&~\\"),
        ("x\\.br\\y\\.sp\\z", "x\ny\nz"),
        ("\\X41\\\\XC3A9\\", "A\u00e9"),  # \Xhh..\ bytes in the message charset (UTF-8)
        ("\\H\\bold\\N\\", "bold"),
        ("\\Zvendor\\ kept", "\\Zvendor\\ kept"),  # unknown: kept verbatim, not lost
        ("\\X4\\ odd", "\\X4\\ odd"),
        ("dangling \\", "dangling \\"),
    ],
)
def test_escape_sequences(escaped: str, plain: str) -> None:
    assert Separators().unescape(escaped) == plain


separator_sets = st.permutations(list("|^~\\&!@#$%*")).map(
    lambda p: Separators(p[0], p[1], p[2], p[3], p[4])
)


@given(separator_sets, st.text(max_size=40))
def test_escape_then_unescape_is_identity_for_any_separators(seps: Separators, text: str) -> None:
    assert seps.unescape(seps.escape_text(text)) == text
    escaped = seps.escape_text(text)
    assert not set(escaped) & {seps.field, seps.component, seps.repetition, seps.subcomponent}


def test_charset_from_msh18_and_lenient_fallback() -> None:
    latin = "MSH|^~\\&|A||||||ORU^R01|1|P|2.5||||||8859/1\rNTE|||caf\u00e9".encode("latin-1")
    assert parse_message(latin).segments[1].text(3) == "caf\u00e9"
    undeclared = "MSH|^~\\&|A||||||ORU^R01|1\rNTE|||na\u00efve".encode("latin-1")
    assert parse_message(undeclared).segments[1].text(3) == "na\u00efve"  # not UTF-8: Latin-1
    utf8 = "MSH|^~\\&|A||||||ORU^R01|1\rNTE|||\u0627\u0644\u0646\u0628\u0636".encode()
    assert parse_message(utf8).segments[1].text(3) == "\u0627\u0644\u0646\u0628\u0636"


# -- time -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "iso"),
    [
        ("20240611093512+0100", "2024-06-11T09:35:12+01:00"),
        ("20240611093512+0000", "2024-06-11T09:35:12+00:00"),  # Ramadan: UTC+0, kept as sent
        ("20240611093512-0330", "2024-06-11T09:35:12-03:30"),
        ("20240611093512", "2024-06-11T09:35:12"),  # no zone: no zone (never UTC)
        ("20240611093512.25+0100", "2024-06-11T09:35:12.25+01:00"),
        ("202406110935", "2024-06-11T09:35"),
        ("2024061109", "2024-06-11T09:00"),
        ("20240611", "2024-06-11"),
        ("20240611+0100", "2024-06-11"),
        ("202406", "2024-06"),
        ("2024", "2024"),
        ("20241399", None),
        ("20240611253000", None),
        ("2024061109351", None),
        ("202406110935.5", None),
        ("20240611093512+0175", None),
        ("yesterday", None),
    ],
)
def test_hl7_time_to_iso(ts: str, iso: str | None) -> None:
    assert hl7v2.hl7_time_to_iso(ts) == iso


@given(
    st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1)),
    st.integers(-12 * 60, 14 * 60).map(lambda m: m - m % 15),
    st.booleans(),
)
def test_iso_to_hl7_time_inverts_hl7_time_to_iso(
    moment: datetime, offset: int, zoned: bool
) -> None:
    if zoned:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    ts = hl7v2.format_hl7_time(moment.replace(microsecond=0))
    iso = hl7v2.hl7_time_to_iso(ts)
    assert iso is not None and hl7v2.iso_to_hl7_time(iso) == ts


# -- observations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obx3", "quantity", "site"),
    [
        ("150456^MDC_PULS_OXIM_SAT_O2^MDC", "spo2", None),
        ("^MDC_PULS_OXIM_SAT_O2^MDC", "spo2", None),
        ("MDC_PRESS_BLD_NONINV_SYS^^MDC", "systolic_bp", None),
        ("149546^MDC_PULS_RATE_NON_INV^MDC", "pulse_rate", None),
        ("147842^MDC_ECG_HEART_RATE^MDC", "heart_rate", None),
        ("188452^MDC_TEMP_AXILLA^MDC", "body_temperature", "axillary"),
        ("150344^MDC_TEMP^MDC", "body_temperature", None),
        ("8889-8^Pulse rate by oximetry^LN", "pulse_rate", None),
        ("8331-1^Oral temperature^LN", "body_temperature", "oral"),
        ("SPO2^SpO2^L^59408-5^SpO2^LN", "spo2", None),  # alternate triplet
        ("9279-1^^LOINC", "respiratory_rate", None),
    ],
)
def test_observation_identifiers_by_loinc_and_mdc(obx3: str, quantity: str, site: str) -> None:
    m = one(f"OBX|1|NM|{obx3}||12|%^^UCUM|||||F")
    assert isinstance(m, Measurement) and m.quantity == quantity
    assert dict(m.context).get("site") == site


def test_device_codes_are_kept_and_catalogue_codes_fill_the_rest() -> None:
    by_mdc = one("OBX|1|NM|149546^MDC_PULS_RATE_NON_INV^MDC||70|264864^^MDC|||||F")
    by_loinc = one("OBX|1|NM|2708-6^SaO2^LN||97|%^^UCUM|||||F")
    assert isinstance(by_mdc, Measurement) and isinstance(by_loinc, Measurement)
    assert (by_mdc.mdc, by_mdc.loinc) == (149546, "8867-4")
    assert (by_loinc.mdc, by_loinc.loinc) == (150456, "2708-6")


@pytest.mark.parametrize(
    "obx3",
    ["SPO2^SpO2^L", "150456^MDC_PULS_OXIM_SAT_O2^LN", "59408-5^SpO2^MDC", "2160-0^Creat^LN",
     "999999^MDC_NOPE^MDC", "150456^MDC_PULS_OXIM_SAT_O2^"],
)  # fmt: skip
def test_unknown_codes_with_a_value_are_rejected_whole_never_guessed(obx3: str) -> None:
    segment = f"OBX|1|NM|{obx3}||97|%^^UCUM|||||F"
    assert one(segment) == Rejected(segment.encode(), "unknown-observation")


def test_unknown_codes_without_value_are_device_components() -> None:
    events = hl7v2.decode_oru(parse_message(oru("OBX|1||69965^MDC_DEV_MDS^MDC|1.0.0.0|||||||X")))
    assert DeviceInfo("device-component", "1.0.0.0 69965 MDC_DEV_MDS") in events


@pytest.mark.parametrize(
    ("obx6", "unit", "flags"),
    [
        ("266016^MDC_DIM_MMHG^MDC", "mm[Hg]", ()),
        ("^MDC_DIM_MMHG^MDC", "mm[Hg]", ()),
        ("265987^MDC_DIM_KILO_PASCAL^MDC", "kPa", ()),
        ("264864^MDC_DIM_BEAT_PER_MIN^MDC", "/min", ()),
        ("262688^MDC_DIM_PERCENT^MDC", "%", ()),
        ("268192^MDC_DIM_DEGC^MDC", "Cel", ()),
        ("266560^MDC_DIM_FAHR^MDC", "[degF]", ()),
        ("263875^MDC_DIM_KILO_G^MDC", "kg", ()),
        ("263904^^MDC", "[lb_av]", ()),
        ("mm[Hg]^millimetre of mercury^UCUM", "mm[Hg]", ()),
        ("{beats}/min^^UCUM", "{beats}/min", ()),  # UCUM passes through untouched
        ("mmHg", "mm[Hg]", ()),
        ("bpm^beats per minute", "/min", ()),
        ("degC", "Cel", ()),
        ("\u00b0F", "[degF]", ()),
        ("^mmHg^ISO+", "mm[Hg]", ()),
        ("furlong", "furlong", ("unit-unmapped",)),
        ("999999^MDC_DIM_NOPE^MDC", "999999", ("unit-unmapped",)),
        ("", "mm[Hg]", ("unit-missing",)),
    ],
)
def test_units_to_ucum(obx6: str, unit: str, flags: tuple[str, ...]) -> None:
    m = one(f"OBX|1|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC||120|{obx6}|||||F")
    assert isinstance(m, Measurement) and (m.unit, m.flags) == (unit, flags)


@pytest.mark.parametrize(
    ("obx2", "obx5", "status", "value", "absent", "flags", "context"),
    [
        ("NM", "97", "F", 97.0, None, (), ()),
        ("NM", " +97.50 ", "F", 97.5, None, (), ()),
        ("NM", "<85", "F", 85.0, None, ("below-measuring-range",), (("comparator", "<"),)),
        ("NM", ">=100", "F", 100.0, None, ("above-measuring-range",), (("comparator", ">="),)),
        ("SN", "^97", "F", 97.0, None, (), ()),
        ("SN", "=^97", "F", 97.0, None, (), ()),
        ("SN", "<^85", "F", 85.0, None, ("below-measuring-range",), (("comparator", "<"),)),
        ("SN", "^90^-^95", "F", None, "as-text", (),
         (("value-text", "^90^-^95"), ("value-type", "SN"))),
        ("ST", "97", "F", None, "as-text", (), (("value-text", "97"), ("value-type", "ST"))),
        ("NM", "9.7e1", "F", None, "as-text", (), (("value-text", "9.7e1"), ("value-type", "NM"))),
        ("NM", "97~98", "F", None, "as-text", (),
         (("value-text", "97~98"), ("value-type", "NM"))),
        ("NM", "", "F", None, "unknown", (), ()),
        ("NM", "", "X", None, "error", (), ()),
        ("NM", "97", "X", None, "error", (), ()),  # X: cannot be obtained, whatever OBX-5 says
        ("NM", "97", "P", 97.0, None, ("preliminary",), ()),
        ("NM", "97", "C", 97.0, None, ("corrected",), ()),
    ],
)  # fmt: skip
def test_values_nm_only_comparators_flagged_others_as_text(
    obx2: str,
    obx5: str,
    status: str,
    value: float | None,
    absent: str | None,
    flags: tuple[str, ...],
    context: tuple[tuple[str, str], ...],
) -> None:
    m = one(f"OBX|1|{obx2}|150456^MDC_PULS_OXIM_SAT_O2^MDC||{obx5}|%^^UCUM|||||{status}")
    assert isinstance(m, Measurement)
    assert (m.value, m.absent_reason, m.flags) == (value, absent, flags)
    own = tuple(c for c in m.context if c[0] in ("comparator", "value-text", "value-type"))
    assert own == context


def test_time_is_obx14_else_obr7_and_bad_times_are_flagged() -> None:
    events = hl7v2.decode_oru(parse_message(oru(
        "OBX|1|NM|150456^^MDC||97|%^^UCUM|||||F|||20240611093400",
        "OBX|2|NM|150456^^MDC||96|%^^UCUM|||||F",
        "OBX|3|NM|150456^^MDC||95|%^^UCUM|||||F|||20241301",
    )))  # fmt: skip
    ms = measurements(events)
    assert [(m.device_time, m.flags) for m in ms] == [
        ("2024-06-11T09:34:00", ()),
        ("2024-06-11T09:35:00+01:00", ()),
        (None, ("bad-device-time",)),
    ]


def test_patient_equipment_sub_id_reference_range_abnormal_flags_and_comments() -> None:
    m = one(
        "OBX|1|NM|150456^^MDC|1.1.1.1|88|%^^UCUM|90-100|L~LL|||F|||||||00AB^EUI-64",
        "NTE|1||first",
        "NTE|2||second",
        extra=["PID|||P\\S\\7^^^H^MR"],
    )
    assert isinstance(m, Measurement)
    assert m.flags == ("abnormal:L", "abnormal:LL")
    assert m.context == (
        ("patient-id", "P^7"),
        ("sub-id", "1.1.1.1"),
        ("equipment-id", "00AB"),
        ("result-status", "F"),
        ("reference-range", "90-100"),
        ("comment", "first"),
        ("comment", "second"),
    )


def test_a_message_that_is_not_oru_r01_is_rejected_whole() -> None:
    data = b"MSH|^~\\&|A||||||ADT^A01|9|P|2.5\rPID|||1\r"
    assert hl7v2.decode_oru(parse_message(data)) == [Rejected(data, "unsupported-message-type")]


def test_segments_with_invalid_ids_are_rejected_not_dropped() -> None:
    data = oru("OBX|1|NM|150456^^MDC||97|%^^UCUM|||||F", extra=["pid|||x"])
    events = hl7v2.decode_oru(parse_message(data))
    assert Rejected(b"pid|||x", "bad-segment") in events
    assert [m.value for m in measurements(events)] == [97.0]


# -- ACK --------------------------------------------------------------------------------------


def test_ack_swaps_sender_and_receiver_and_answers_msh10() -> None:
    header = parse_message(
        b"MSH|^~\\&|MON^EUI^X|WARD|EDGE|VAN|2024||ORU^R01^ORU_R01|C1|P|2.6"
    ).header
    ack = hl7v2.build_ack(header, "AA", "A1", timestamp=CLOCK)
    assert ack == b"MSH|^~\\&|EDGE|VAN|MON^EUI^X|WARD|" + CLOCK.encode() + (
        b"||ACK^R01^ACK|A1|P|2.6\rMSA|AA|C1\r"
    )


def test_ack_errors_carry_msa3_and_err_from_v25_in_the_message_separators() -> None:
    header = parse_message(b"MSH!@#$%!MON!!!!!!ORU@R01!C$F$7!T!2.5.1").header
    ack = hl7v2.build_ack(header, "AE", "A2", text="commit!failed", error_code="207")
    assert ack == (
        b"MSH!@#$%!EDGE-AGENT!!MON!!!!ACK@R01@ACK!A2!T!2.5.1\r"
        b"MSA!AE!C$F$7!commit$F$failed\rERR!!!207@commit$F$failed@HL70357!E\r"
    )
    old = parse_message(b"MSH|^~\\&|MON||||||ORU^R01|9|P|2.3.1").header
    assert hl7v2.build_ack(old, "AR", "A3", text="x&y", error_code="200").endswith(
        b"MSA|AR|9|x\\T\\y\rERR|^^^200&x\\T\\y&HL70357\r"
    )  # before v2.5: ERR-1 (ELD)
    assert hl7v2.build_ack(None, "AR", "A4", text="no-msh") == (
        b"MSH|^~\\&|EDGE-AGENT||||||ACK|A4|P|2.6\rMSA|AR||no-msh\rERR|||207^no-msh^HL70357|E\r"
    )


# -- round trip -------------------------------------------------------------------------------

VITALS = ("spo2", "pulse_rate", "heart_rate", "systolic_bp", "diastolic_bp",
          "mean_arterial_pressure", "respiratory_rate", "body_temperature", "body_weight",
          "body_height", "bmi", "glucose", "hba1c", "pulse_amplitude_index")  # fmt: skip


@st.composite
def plausible(draw: st.DrawFn) -> Measurement:
    key = draw(st.sampled_from(VITALS))
    low, high = catalogue()[key].plausible or (0.0, 1000.0)
    places = draw(st.integers(0, 3))
    value = round(draw(st.floats(low, high, allow_nan=False)), places)
    time = draw(st.none() | st.sampled_from(
        ["2024-06-11T09:35:12+01:00", "2024-06-11T09:35:12", "2024-06-11T09:35", "2024-06-11"]
    ))  # fmt: skip
    return measurement(key, value, device_time=time)


@given(
    st.lists(plausible(), min_size=1, max_size=10),
    separator_sets,
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=20),
    st.sampled_from(["mdc", "ucum"]),
)
def test_round_trip_encode_oru_then_decode(
    ms: list[Measurement], seps: Separators, patient: str, units: str
) -> None:
    control = "RT-" + format_nm(len(ms))
    data = encode_oru(ms, control, separators=seps, patient_id=patient,
                      units="mdc" if units == "mdc" else "ucum")  # fmt: skip
    events, _ = play(decoder(), [frame(data)])
    assert events[-1] == MessageComplete(control)
    got = measurements(events)
    assert [(m.quantity, m.value, m.unit, m.device_time, m.mdc) for m in got] == [
        (m.quantity, m.value, m.unit, m.device_time, m.mdc) for m in ms
    ]
    assert all(dict(m.context).get("patient-id", "") == patient.strip() for m in got)
    # Source keys: one per OBX, the same when the message is sent again, others for another
    # message (another MSH-10).
    keys = [m.source_key for m in got]
    assert None not in keys and len(set(keys)) == len(keys)
    again, _ = play(decoder(), [frame(data)])
    assert [m.source_key for m in measurements(again)] == keys
    other = encode_oru(ms, control + "b", separators=seps, patient_id=patient,
                       units="mdc" if units == "mdc" else "ucum")  # fmt: skip
    assert not {m.source_key for m in measurements(play(decoder(), [frame(other)])[0])} & set(keys)


def test_round_trip_by_loinc_and_absent_values() -> None:
    ms = [
        measurement("spo2", 97.0, device_time="2024-06-11T09:35:12+01:00"),
        measurement("systolic_bp", None, absent_reason="error"),
        measurement(
            "diastolic_bp", None, absent_reason="as-text", context=(("value-text", "cuff|error"),)
        ),
        measurement("body_temperature", 98.6, "[degF]", context=(("comment", "a^b\\c"),)),
    ]
    events, _ = play(decoder(), [frame(encode_oru(ms, "L1", coding="loinc"))])
    got = measurements(events)
    assert [(m.quantity, m.value, m.unit, m.absent_reason, m.loinc) for m in got] == [
        ("spo2", 97.0, "%", None, "59408-5"),
        ("systolic_bp", None, "mm[Hg]", "error", "8480-6"),
        ("diastolic_bp", None, "mm[Hg]", "as-text", "8462-4"),
        ("body_temperature", 98.6, "[degF]", None, "8310-5"),
    ]
    assert ("value-text", "cuff|error") in got[2].context
    assert ("comment", "a^b\\c") in got[3].context


def test_format_nm_never_writes_an_exponent() -> None:
    assert [format_nm(v) for v in (97.0, 0.00001, 36.85, -0.0, 1e20)] == [
        "97", "0.00001", "36.85", "-0", "100000000000000000000"
    ]  # fmt: skip


# -- device facts (issue 8) --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("msh3", "obx18", "facts"),
    [
        ("MON", "", DeviceFacts(model="MON")),
        (
            "AcmeMon^0012345678ABCDEF^EUI-64",
            "",
            DeviceFacts(system_id="00-12-34-56-78-AB-CD-EF", model="AcmeMon"),
        ),
        (
            "GW^0012345678ABCDEF^EUI-64",
            "AABBCCDDEEFF0011^EUI-64",
            DeviceFacts(system_id="AA-BB-CC-DD-EE-FF-00-11", model="GW"),
        ),  # the device's own, not the gateway's
        ("MON", "SN-4711", DeviceFacts(serial="SN-4711", model="MON")),
        ("", "", DeviceFacts()),
    ],
)
def test_sending_application_and_equipment_id_become_device_facts(
    msh3: str, obx18: str, facts: DeviceFacts
) -> None:
    msh = f"MSH|^~\\&|{msh3}|VAN-1|EDGE||20240611093512+0100||ORU^R01|C1|P|2.6"
    obx = f"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|%|||||F|||||||{obx18}"  # OBX-18
    events = hl7v2.decode_oru(parse_message(oru(obx, msh=msh)))
    found = [e for e in events if isinstance(e, DeviceFacts)]
    assert found == ([facts] if facts.any() else [])
