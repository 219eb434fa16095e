"""RACP (0x2A52) and the glucose-meter download (docs/protocols.md §2.4): records are
downloaded once, the cursor moves only after ``acknowledge(stored=True)``, "no records found"
is not an error, a failed procedure or commit downloads the same records again."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import (
    DecoderMisuse,
    DeviceInfo,
    Event,
    GattDecoder,
    GattWrite,
    MessageComplete,
    Rejected,
)
from drivers.protocols.ble_health import (
    RACP_RESPONSES,
    GlucoseDownload,
    RacpCount,
    RacpResponse,
    decode_racp,
    racp_abort,
    racp_count_all,
    racp_count_from,
    racp_report_all,
    racp_report_from,
)
from drivers.simulators import ble_values as enc
from edge_agent.models import Measurement
from tests.drivers.test_ble_health import CAPTURES, event_json, read_capture

SUCCESS = bytes.fromhex("06000101")
NO_RECORDS = bytes.fromhex("06000106")


# --- RACP values -----------------------------------------------------------------------------
def test_request_encoders() -> None:
    assert racp_report_all() == b"\x01\x01"
    assert racp_report_from(51) == b"\x01\x03\x01\x33\x00"
    assert racp_count_all() == b"\x04\x01"
    assert racp_count_from(0x1234) == b"\x04\x03\x01\x34\x12"
    assert racp_abort() == b"\x03\x00"
    for bad in (-1, 0x10000):
        with pytest.raises(ValueError):
            racp_report_from(bad)


@pytest.mark.parametrize(("code", "name"), sorted(RACP_RESPONSES.items()))
def test_response_codes_have_names(code: int, name: str) -> None:
    got = decode_racp(bytes([6, 0, 1, code]))
    assert got == RacpResponse(1, code) and isinstance(got, RacpResponse)
    assert got.name == name
    assert got.finished == (name in ("success", "no-records-found"))


def test_response_decoder() -> None:
    assert [RACP_RESPONSES[c] for c in range(1, 10)] == [
        "success",
        "op-code-not-supported",
        "invalid-operator",
        "operator-not-supported",
        "invalid-operand",
        "no-records-found",
        "abort-unsuccessful",
        "procedure-not-completed",
        "operand-not-supported",
    ]
    assert decode_racp(b"\x05\x00\x32\x00") == RacpCount(50)
    reserved = decode_racp(b"\x06\x00\x01\x0a")
    assert isinstance(reserved, RacpResponse) and reserved.name == "reserved-10"
    assert not reserved.finished
    for value, reason in (
        (b"", "truncated"),
        (b"\x06", "truncated"),
        (b"\x06\x00\x01", "truncated"),
        (b"\x05\x00\x32\x00\x00", "too-long"),
        (b"\x06\x01\x01\x01", "racp-operator"),
        (b"\x01\x01", "racp-op-code"),
    ):
        assert decode_racp(value) == Rejected(value, reason)


@given(st.binary(max_size=8))
def test_any_racp_value_decodes_or_is_rejected(value: bytes) -> None:
    got = decode_racp(value)
    assert isinstance(got, RacpCount | RacpResponse) or got == Rejected(value, got.reason)


# --- the meter model -------------------------------------------------------------------------
def meter_with(n: int, *, context: bool = False) -> enc.GlucoseMeterRecords:
    """Records 1..n of 90, 91, ... mg/dL."""
    meter = enc.GlucoseMeterRecords(with_context=context)
    for i in range(n):
        meter.add(90 + i)
    return meter


@pytest.mark.parametrize(
    ("request_hex", "reply_hex"),
    [
        ("0401", "05000500"),  # count all
        ("04030104 00", "05000200"),  # count >= 4
        ("04020102 00", "05000200"),  # count <= 2
        ("0404010200 0300", "05000200"),  # count within [2, 3]
        ("0405", "05000100"),  # first
        ("0300", "06000301"),  # abort
        ("0100", "06000103"),  # null operator: invalid operator
        ("0107", "06000104"),  # operator 7: not supported
        ("01030207 00", "06000109"),  # filter 2 (user-facing time): operand not supported
        ("010301", "06000105"),  # missing sequence number: invalid operand
        ("0404010300 0200", "06000405"),  # range low > high
        ("0101ff", "06000105"),  # "all" takes no operand
        ("0701", "06000702"),  # op code not supported
        ("", "06000002"),
        ("01030106 00", "06000106"),  # >= 6 of 5: no records found
    ],
)
def test_meter_model_answers_like_gls(request_hex: str, reply_hex: str) -> None:
    assert meter_with(5).handle_racp(bytes.fromhex(request_hex)) == [
        ("2a52", bytes.fromhex(reply_hex))
    ]


def test_meter_model_reports_and_deletes() -> None:
    meter = meter_with(3, context=True)
    replies = meter.handle_racp(racp_report_from(2))
    assert [c for c, _ in replies] == ["2a18", "2a34", "2a18", "2a34", "2a52"]
    assert replies[-1] == ("2a52", SUCCESS)
    last = meter.handle_racp(bytes.fromhex("0106"))
    assert [c for c, _ in last] == ["2a18", "2a34", "2a52"]
    assert meter.handle_racp(bytes.fromhex("02020102 00")) == [("2a52", bytes.fromhex("06000201"))]
    assert [seq for seq, _ in meter.records] == [3]


# --- the download ----------------------------------------------------------------------------
def run(meter: enc.GlucoseMeterRecords, dl: GlucoseDownload, *, stored: bool = True) -> list[Event]:
    """One procedure: start, answer every write with the meter, acknowledge completions."""
    dl.start()
    events: list[Event] = []
    while writes := dl.writes_to_send():
        for write in writes:
            assert write.characteristic == "2a52" and write.with_response
            for char, value in meter.handle_racp(write.value):
                events += dl.receive_value(char, value)
    for event in events:
        if isinstance(event, MessageComplete):
            dl.acknowledge(event.message_id, stored=stored)
    return events


def values(events: list[Event]) -> list[float | None]:
    return [e.value for e in events if isinstance(e, Measurement) and e.quantity == "glucose"]


def test_glucose_download_is_a_gatt_decoder() -> None:
    dl = GlucoseDownload()
    assert isinstance(dl, GattDecoder)
    assert dl.subscriptions == ("2a18", "2a34", "2a52")
    assert dl.writes_to_send() == [] and not dl.active and dl.last_seq is None


def test_golden_session_report_from_cursor() -> None:
    """tests/captures/ble/glucose-racp-session.hex: cursor 6 asks ">= 7"; the context of
    record 8 joins record 8 (and its HbA1c takes record 8's time)."""
    path = CAPTURES / "glucose-racp-session.hex"
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    dl = GlucoseDownload(last_seq=6)
    dl.start()
    events: list[Event] = []
    for direction, char, value in read_capture(path):
        if direction == ">":
            assert dl.writes_to_send() == [GattWrite(char, value)]
        else:
            events += dl.receive_value(char, value)
    assert [event_json(e) for e in events] == expected["events"]
    assert dl.last_seq == 6 and not dl.active
    dl.acknowledge("racp-1", stored=True)
    assert dl.last_seq == 8


def test_fifty_records_downloaded_once_then_only_new_ones() -> None:
    meter = meter_with(50, context=True)
    dl = GlucoseDownload()
    first = run(meter, dl)
    assert values(first) == [90.0 + i for i in range(50)]
    assert isinstance(first[-1], MessageComplete)
    glucose = [e for e in first if isinstance(e, Measurement)]
    meals = ["preprandial", "postprandial", "fasting", "casual", "bedtime"]
    for seq, m in enumerate(glucose, start=1):  # each context joined by its sequence number
        ctx = dict(m.context)
        assert (ctx["sequence"], ctx["meal"]) == (str(seq), meals[seq % 5])
        assert m.device_time is not None
    assert dl.last_seq == 50
    for mg in (200, 201, 202):
        meter.add(mg)
    second = run(meter, dl)
    assert values(second) == [200.0, 201.0, 202.0] and dl.last_seq == 53
    third = run(meter, dl)
    assert third == [MessageComplete("racp-3")]  # no records found: not an error
    assert dl.last_seq == 53


def test_requests_follow_the_cursor() -> None:
    meter = meter_with(3)
    dl = GlucoseDownload()
    dl.start()
    assert dl.writes_to_send() == [GattWrite("2a52", b"\x01\x01")]
    assert dl.active
    dl2 = GlucoseDownload(last_seq=50)
    dl2.start()
    assert dl2.writes_to_send() == [GattWrite("2a52", b"\x01\x03\x01\x33\x00")]
    edge = GlucoseDownload(last_seq=0xFFFF)  # nothing above 0xFFFF is addressable
    edge.start()
    assert edge.writes_to_send() == [GattWrite("2a52", b"\x01\x03\x01\xff\xff")]
    assert meter.handle_racp(b"\x01\x03\x01\xff\xff") == [("2a52", NO_RECORDS)]


def test_cursor_does_not_move_before_acknowledge() -> None:
    meter = meter_with(5)
    dl = GlucoseDownload(last_seq=2)
    dl.start()
    (write,) = dl.writes_to_send()
    events = [e for c, v in meter.handle_racp(write.value) for e in dl.receive_value(c, v)]
    assert values(events) == [92.0, 93.0, 94.0]
    assert dl.last_seq == 2 and not dl.active  # complete, but not committed yet
    (done,) = [e for e in events if isinstance(e, MessageComplete)]
    dl.acknowledge(done.message_id, stored=True)
    assert dl.last_seq == 5
    with pytest.raises(DecoderMisuse):
        dl.acknowledge(done.message_id, stored=True)  # once only


def test_failed_commit_downloads_the_same_records_again() -> None:
    meter = meter_with(5)
    dl = GlucoseDownload(last_seq=2)
    assert values(run(meter, dl, stored=False)) == [92.0, 93.0, 94.0]
    assert dl.last_seq == 2
    assert values(run(meter, dl)) == [92.0, 93.0, 94.0]
    assert dl.last_seq == 5


@pytest.mark.parametrize("code", [2, 3, 4, 5, 7, 8, 9, 0, 200])
def test_failed_procedure_reports_and_keeps_the_cursor(code: int) -> None:
    meter = meter_with(5)
    dl = GlucoseDownload(last_seq=3)
    dl.start()
    (write,) = dl.writes_to_send()
    replies = meter.handle_racp(write.value)[:-1]
    assert [e for c, v in replies for e in dl.receive_value(c, v)] == []
    events = dl.receive_value("2a52", bytes([6, 0, 1, code]))
    name = RACP_RESPONSES.get(code, f"reserved-{code}")
    assert events == [DeviceInfo("racp", name)]
    assert dl.last_seq == 3 and not dl.active
    assert values(run(meter, dl)) == [93.0, 94.0]  # asked again from the same cursor
    assert dl.last_seq == 5


def test_no_records_found_completes_without_error() -> None:
    dl = GlucoseDownload(last_seq=9)
    dl.start()
    dl.writes_to_send()
    # Nothing new: is record 9 still there (else the meter was reset)? It is.
    assert dl.receive_value("2a52", NO_RECORDS) == []
    assert dl.writes_to_send() == [GattWrite("2a52", racp_count_from(9))] and dl.active
    assert dl.receive_value("2a52", b"\x05\x00\x01\x00") == [MessageComplete("racp-1")]
    dl.acknowledge("racp-1", stored=True)
    assert dl.last_seq == 9 and not dl.active


def test_first_download_of_an_empty_meter() -> None:
    dl = GlucoseDownload()
    assert run(enc.GlucoseMeterRecords(), dl) == [MessageComplete("racp-1")]
    assert dl.last_seq is None


def test_context_joins_its_measurement_by_sequence_number_in_any_order() -> None:
    dl = GlucoseDownload()
    dl.start()
    dl.writes_to_send()
    when = (2026, 11, 23, 8, 0, 0)
    for char, value in (
        ("2a34", enc.encode_2a34(2, meal=3, hba1c="7.2")),
        ("2a18", enc.encode_2a18(1, when, 100, context_follows=True)),
        ("2a18", enc.encode_2a18(2, when, 150, offset=30, context_follows=True)),
        ("2a34", enc.encode_2a34(1, meal=1)),
        ("2a34", enc.encode_2a34(9, meal=2)),
    ):  # no record 9 in this procedure
        assert dl.receive_value(char, value) == []
    events = dl.receive_value("2a52", SUCCESS)
    ms = [e for e in events if isinstance(e, Measurement)]
    assert [(m.quantity, m.value, dict(m.context).get("meal")) for m in ms] == [
        ("glucose", 100.0, "preprandial"),
        ("glucose", 150.0, "fasting"),
        ("hba1c", 7.2, "fasting"),
    ]
    assert ms[2].device_time == ms[1].device_time == "2026-11-23T08:30:00"
    assert DeviceInfo("glucose-context", "sequence=9 no-record") in events
    assert events[-1] == MessageComplete("racp-1")


def test_meter_ignoring_the_filter_does_not_duplicate_stored_records() -> None:
    meter = meter_with(5)
    dl = GlucoseDownload(last_seq=3)
    dl.start()
    dl.writes_to_send()
    events = [e for c, v in meter.handle_racp(racp_report_all()) for e in dl.receive_value(c, v)]
    assert values(events) == [93.0, 94.0]
    assert DeviceInfo("racp", "skipped 3 records already stored") in events


def test_bad_values_mid_procedure_are_rejected_and_the_rest_continues() -> None:
    meter = meter_with(2)
    dl = GlucoseDownload()
    dl.start()
    dl.writes_to_send()
    replies = meter.handle_racp(racp_report_all())
    events = dl.receive_value("2a18", b"\x00\x01")
    assert events == [Rejected(b"\x00\x01", "truncated")]
    assert dl.receive_value("2a34", b"\x80\x01\x00\x05") == [
        Rejected(b"\x80\x01\x00\x05", "rfu-flags")
    ]
    assert dl.receive_value("2a52", b"\x06") == [Rejected(b"\x06", "truncated")]
    assert dl.receive_value("2a99", b"\x00") == [Rejected(b"\x00", "unexpected-characteristic")]
    events = [e for c, v in replies for e in dl.receive_value(c, v)]
    assert values(events) == [90.0, 91.0]


def test_abort_queues_03_00_and_drops_the_procedure() -> None:
    meter = meter_with(4)
    dl = GlucoseDownload(last_seq=1)
    dl.start()
    (write,) = dl.writes_to_send()
    replies = meter.handle_racp(write.value)
    dl.receive_value(*replies[0])
    dl.abort()
    assert dl.writes_to_send() == [GattWrite("2a52", b"\x03\x00")]
    assert dl.active  # until the meter answers the abort
    assert dl.receive_value(*replies[1]) == []  # late values are ignored
    assert dl.receive_value("2a52", SUCCESS) == [DeviceInfo("racp", "success")]
    assert dl.active
    assert dl.receive_value("2a52", meter.handle_racp(racp_abort())[0][1]) == [
        DeviceInfo("racp", "success")
    ]
    assert not dl.active and dl.last_seq == 1
    assert values(run(meter, dl)) == [91.0, 92.0, 93.0]


def test_values_outside_a_procedure_are_ignored() -> None:
    dl = GlucoseDownload(last_seq=1)
    assert dl.receive_value("2a18", enc.encode_2a18(5, None, 100)) == []
    assert dl.receive_value("2a52", b"\x05\x00\x07\x00") == [DeviceInfo("racp-count", "7")]
    assert dl.receive_value("2a52", SUCCESS) == [DeviceInfo("racp", "success")]
    assert dl.last_seq == 1 and not dl.active


def test_misuse_is_a_caller_bug() -> None:
    dl = GlucoseDownload()
    with pytest.raises(DecoderMisuse):
        dl.acknowledge("racp-1", stored=True)
    dl.start()
    with pytest.raises(DecoderMisuse):
        dl.start()  # one procedure at a time
    dl.writes_to_send()
    dl.receive_value("2a52", NO_RECORDS)
    with pytest.raises(DecoderMisuse):
        dl.start()  # the completed one must be acknowledged first
    with pytest.raises(DecoderMisuse):
        GlucoseDownload(last_seq=0x10000)


# --- sessions over time: nothing lost, nothing stored twice -----------------------------------
OUTCOMES = st.sampled_from(["ok", "commit-fails", "procedure-fails", "disconnect"])


def session(
    meter: enc.GlucoseMeterRecords, cursor: int | None, outcome: str
) -> tuple[list[float | None], int | None]:
    """A connection as the transport runs it: a fresh decoder from the persisted cursor;
    the cursor is persisted only when it moved (after commit + acknowledge)."""
    dl = GlucoseDownload(last_seq=cursor)
    dl.start()
    committed: list[float | None] = []
    pending: list[float | None] = []
    while writes := dl.writes_to_send():
        (write,) = writes
        replies = meter.handle_racp(write.value)
        if outcome == "disconnect":
            replies = replies[: len(replies) // 2]
        elif outcome == "procedure-fails":
            replies = [*replies[:-1], ("2a52", bytes([6, 0, 1, 8]))]
        for char, value in replies:
            for event in dl.receive_value(char, value):
                if isinstance(event, Measurement):
                    pending.append(event.value)
                elif isinstance(event, MessageComplete):
                    stored = outcome != "commit-fails"
                    committed += pending if stored else []
                    pending = []
                    dl.acknowledge(event.message_id, stored=stored)
    return committed, dl.last_seq


@given(st.lists(st.tuples(st.integers(0, 6), OUTCOMES), max_size=8))
def test_every_record_is_stored_exactly_once(plan: list[tuple[int, str]]) -> None:
    meter = enc.GlucoseMeterRecords(with_context=True)
    store: list[float | None] = []
    cursor: int | None = None
    for new, outcome in plan:
        for _ in range(new):
            meter.add(float(60 + len(meter.records)))
        committed, cursor = session(meter, cursor, outcome)
        store += committed
    committed, cursor = session(meter, cursor, "ok")
    store += committed
    assert store == [mg for _, mg in meter.records]
    assert cursor == (meter.records[-1][0] if meter.records else None)


# --- a meter's identity, its cursor key and a reset meter ------------------------------------
def keys(events: list[Event]) -> list[str | None]:
    return [e.source_key for e in events if isinstance(e, Measurement)]


def test_completion_carries_the_cursor_to_commit_with_the_records() -> None:
    meter = meter_with(3)
    dl = GlucoseDownload(meter="serial=A1", cursor_key="gm/racp/serial=A1")
    events = run(meter, dl)
    assert events[-1] == MessageComplete("racp-1", ("gm/racp/serial=A1", 3))
    assert keys(events) == [
        f'gls:["serial=A1",{seq},"{stamp}","2a18"]'
        for seq, stamp in ((1, "ea070b01080f00"), (2, "ea070b01081e00"), (3, "ea070b01082d00"))
    ]
    assert dl.last_seq == 3
    assert run(meter, dl)[-1] == MessageComplete("racp-2")  # nothing new: no cursor to move
    # Without an identity (decode CLI, tests) the readings have no key: a new id each time.
    assert keys(run(meter, GlucoseDownload())) == [None] * 3


def test_a_reset_meter_is_downloaded_again_and_the_cursor_moves_down() -> None:
    reset = enc.GlucoseMeterRecords(first_time=(2027, 1, 5, 7, 0, 0))  # new records, new times
    for mg in (140, 141):
        reset.add(mg)
    requests: list[bytes] = []
    dl = GlucoseDownload(5, meter="serial=A1", cursor_key="k")
    dl.start()
    events: list[Event] = []
    while writes := dl.writes_to_send():
        for write in writes:
            requests.append(write.value)
            for char, value in reset.handle_racp(write.value):
                events += dl.receive_value(char, value)
    assert requests == [racp_report_from(6), racp_count_from(5), racp_report_all()]
    assert [e.key for e in events if isinstance(e, DeviceInfo)] == ["racp-reset"]
    assert values(events) == [140.0, 141.0]
    assert events[-1] == MessageComplete("racp-1", ("k", 2))
    dl.acknowledge("racp-1", stored=True)
    assert dl.last_seq == 2  # below the old cursor 5: the meter's numbering restarted
    reset.add(142)
    assert values(run(reset, dl)) == [142.0]


def test_a_meter_ignoring_the_filter_below_the_cursor_was_reset() -> None:
    dl = GlucoseDownload(9, meter="m", cursor_key="k")
    dl.start()
    dl.writes_to_send()
    events = [
        e for c, v in meter_with(3).handle_racp(racp_report_all()) for e in dl.receive_value(c, v)
    ]
    assert [e.key for e in events if isinstance(e, DeviceInfo)] == ["racp-reset"]
    assert values(events) == [90.0, 91.0, 92.0]
    assert events[-1] == MessageComplete("racp-1", ("k", 3))


def test_a_meter_that_cannot_count_completes_without_the_reset_check() -> None:
    dl = GlucoseDownload(9, meter="m", cursor_key="k")
    dl.start()
    dl.writes_to_send()
    assert dl.receive_value("2a52", NO_RECORDS) == []
    assert dl.writes_to_send() == [GattWrite("2a52", racp_count_from(9))]
    assert dl.receive_value("2a52", bytes([6, 0, 4, 2])) == [
        DeviceInfo("racp", "count op-code-not-supported: reset not checked"),
        MessageComplete("racp-1"),
    ]
    assert not dl.active


def test_resume_is_refused_mid_procedure() -> None:
    dl = GlucoseDownload()
    dl.start()
    with pytest.raises(DecoderMisuse):
        dl.resume("m", "k", 3)
    with pytest.raises(DecoderMisuse):
        GlucoseDownload().resume("m", "k", -1)


class MeterWithHba1c(enc.GlucoseMeterRecords):
    """Every record has a context with an HbA1c: two readings per record."""

    def values_of(self, seq: int, mg_dl: float) -> list[tuple[str, bytes]]:
        return [
            ("2a18", enc.encode_2a18(seq, self.time_of(seq), mg_dl, context_follows=True)),
            ("2a34", enc.encode_2a34(seq, meal=1, hba1c="6.5")),
        ]


@given(st.lists(st.integers(40, 400), min_size=1, max_size=12), st.booleans())
def test_source_keys_are_deterministic_and_distinct(mgs: list[int], hba1c: bool) -> None:
    def meter(first_time: tuple[int, int, int, int, int, int]) -> enc.GlucoseMeterRecords:
        made = MeterWithHba1c() if hba1c else enc.GlucoseMeterRecords()
        made.first_time = first_time
        for mg in mgs:
            made.add(mg)
        return made

    old = meter((2026, 11, 1, 8, 0, 0))
    first = keys(run(old, GlucoseDownload(meter="serial=A1")))
    assert len(first) == len(mgs) * (2 if hba1c else 1)
    assert None not in first and len(set(first)) == len(first)
    assert keys(run(old, GlucoseDownload(meter="serial=A1"))) == first  # fetched again
    assert not set(keys(run(old, GlucoseDownload(meter="serial=B2")))) & set(first)
    # The same sequence numbers after a reset are other records (other times): other keys.
    reset = meter((2027, 1, 1, 0, 0, 0))
    assert not set(keys(run(reset, GlucoseDownload(meter="serial=A1")))) & set(first)
