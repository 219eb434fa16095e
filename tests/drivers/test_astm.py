"""ASTM E1381/E1394 receiver: golden capture, any split, bad frames, held final ACK, two ends."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DecoderMisuse, DeviceInfo, Event, MessageComplete, Rejected, StreamDecoder
from drivers.protocols import astm
from drivers.simulators.astm_analyser import (
    AstmAnalyserModel,
    Result,
    ResultMessage,
    encode_records,
    frame,
    frames,
)
from drivers.simulators.base import DeviceModel
from edge_agent.models import Measurement
from tests.drivers.streams import play

CAPTURES = Path(__file__).parent.parent / "captures" / "astm"
GOLDEN = CAPTURES / "cobalt-lp-lipid-spec.hex"
EXAMPLE_MAP = Path(__file__).parents[2] / "config" / "devices" / "astm-test-map.example.json"
ENQ, EOT, ACK, NAK = b"\x05", b"\x04", b"\x06", b"\x15"


def load_map() -> dict[str, astm.TestMapping]:
    return astm.load_test_map(json.loads(EXAMPLE_MAP.read_text()))


def raw_frame(body: bytes) -> bytes:
    """A frame from FN through ETB/ETX, checksummed independently of the simulator."""
    return b"\x02" + body + b"%02X\r\n" % (sum(body) % 256)


def decoder() -> astm.AstmDecoder:
    return astm.AstmDecoder(load_map())


def load_turns(path: Path) -> list[bytes]:
    """One sender turn per non-comment line (hex)."""
    lines = path.read_text().splitlines()
    return [bytes.fromhex(line) for line in lines if line.strip() and not line.startswith("#")]


def event_json(event: Event) -> dict[str, Any]:
    data = asdict(event)
    for optional in ("source_key", "cursor", "status"):  # shown only when set
        if data.get(optional, 0) is None:
            del data[optional]
    if "raw" in data:
        data["raw"] = data["raw"].decode("latin-1")
    if "context" in data:
        data["context"] = [list(pair) for pair in data["context"]]
    if "flags" in data:
        data["flags"] = list(data["flags"])
    return {"type": type(event).__name__, **data}


def measurements(events: Sequence[Event]) -> list[Measurement]:
    return [e for e in events if isinstance(e, Measurement)]


def transmission(message: ResultMessage, *, pack: bool = False) -> list[bytes]:
    return [ENQ, *frames(encode_records(message), pack=pack), EOT]


def simple_message(*results: Result) -> ResultMessage:
    return ResultMessage("P1", "S1", results or (Result("GLU", "98", "mg/dL"),))


# -- golden -----------------------------------------------------------------------------------


def test_golden_cobalt_lp_lipid_built_from_spec_facts() -> None:
    expected = json.loads(GOLDEN.with_suffix(".expected.json").read_text())
    events, replies = play(decoder(), load_turns(GOLDEN))
    assert [event_json(e) for e in events] == expected["events"]
    assert replies.hex(" ") == expected["replies"]


@given(st.data())
def test_any_split_of_each_turn_gives_the_same_events_and_replies(data: st.DataObject) -> None:
    turns = load_turns(GOLDEN)
    whole = play(decoder(), turns)
    chunks: list[bytes] = []
    for turn in turns:
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(turn) - 1)), max_size=6)))
        edges = [0, *cuts, len(turn)]
        chunks += [turn[a:b] for a, b in itertools.pairwise(edges) if a < b]
    assert play(decoder(), chunks) == whole


# -- low level --------------------------------------------------------------------------------


def test_enq_gets_ack_each_good_frame_ack_and_final_ack_only_after_commit() -> None:
    dec = decoder()
    wire = frames(encode_records(simple_message()))
    assert dec.receive_data(ENQ) == []
    assert dec.data_to_send() == ACK
    for f in wire[:-1]:
        dec.receive_data(f)
        assert dec.data_to_send() == ACK
    events = dec.receive_data(wire[-1])
    assert isinstance(events[-1], MessageComplete)
    assert dec.data_to_send() == b""  # held until the commit
    dec.acknowledge(events[-1].message_id, stored=True)
    assert dec.data_to_send() == ACK
    assert dec.receive_data(EOT) == []
    assert dec.data_to_send() == b""


def test_failed_commit_naks_and_the_resent_frame_completes_again() -> None:
    dec = decoder()
    wire = frames(encode_records(simple_message()))
    play(dec, [ENQ, *wire[:-1]])
    first = dec.receive_data(wire[-1])
    first_id = first[-1]
    assert isinstance(first_id, MessageComplete)
    dec.acknowledge(first_id.message_id, stored=False)
    assert dec.data_to_send() == NAK
    again = dec.receive_data(wire[-1])  # the analyser resends the same frame number
    last = again[-1]
    assert isinstance(last, MessageComplete) and last.message_id != first_id.message_id
    assert measurements(again) == measurements(first)
    dec.acknowledge(last.message_id, stored=True)
    assert dec.data_to_send() == ACK


def test_enq_while_a_commit_is_pending_is_naked_busy() -> None:
    dec = decoder()
    wire = frames(encode_records(simple_message()))
    play(dec, [ENQ, *wire[:-1]])
    pending = dec.receive_data(wire[-1])[-1]
    assert isinstance(pending, MessageComplete)
    assert dec.receive_data(EOT) == []  # the analyser gave up waiting (its 15 s)
    dec.receive_data(ENQ)
    assert dec.data_to_send() == NAK  # busy
    dec.acknowledge(pending.message_id, stored=True)
    assert dec.data_to_send() == b""  # a late ACK would answer its next ENQ: never written
    dec.receive_data(ENQ)
    assert dec.data_to_send() == ACK


def test_acknowledge_of_an_unknown_message_is_misuse() -> None:
    with pytest.raises(DecoderMisuse):
        decoder().acknowledge("astm-9", stored=True)


def test_bad_checksum_is_naked_then_the_retransmission_is_accepted() -> None:
    dec = decoder()
    wire = frames(encode_records(simple_message()))
    bad = bytearray(wire[1])
    bad[-4:-2] = b"00" if bad[-4:-2] != b"00" else b"01"
    events, replies = play(dec, [ENQ, wire[0], bytes(bad), *wire[1:], EOT])
    assert [e for e in events if isinstance(e, Rejected)] == [Rejected(bytes(bad), "checksum")]
    assert replies == ACK + ACK + NAK + ACK * (len(wire) - 1)
    assert [m.value for m in measurements(events)] == [98.0]


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (frame(1, "P|1\r", True)[:-4] + b"99\r\n", "checksum"),
        (frame(2, "P|1\r", True), "frame-number"),
        (raw_frame(b"9P|1\r\x03"), "frame-number"),
        (raw_frame(b"1P|1\x11\r\x03"), "restricted-character"),
        (b"\x021P|1\r\x03\r\n", "bad-frame"),
        (raw_frame(b"1" + b"x" * 241 + b"\x03"), "too-long"),
    ],
)
def test_bad_frames_are_naked_and_rejected_with_their_bytes(wire: bytes, reason: str) -> None:
    dec = decoder()
    events, replies = play(dec, [ENQ, wire])
    assert events == [Rejected(wire, reason)]
    assert replies == ACK + NAK


def test_a_frame_without_end_is_bounded_then_naked_at_its_lf() -> None:
    body = b"1" + b"x" * 5000 + b"\x03"
    wire = raw_frame(body)
    events, replies = play(decoder(), [ENQ, wire])
    assert events == [Rejected(wire[:4096], "too-long"), Rejected(wire[4096:], "too-long")]
    assert replies == ACK + NAK


def test_repeated_frame_is_acked_and_discarded() -> None:
    wire = frames(encode_records(simple_message()))
    events, replies = play(decoder(), [ENQ, wire[0], wire[1], wire[1], *wire[2:], EOT])
    assert replies == ACK * (len(wire) + 2)
    assert [m.value for m in measurements(events)] == [98.0]
    assert not [e for e in events if isinstance(e, Rejected)]


def test_frame_numbers_wrap_modulo_8() -> None:
    results = tuple(Result("GLU", str(100 + i), "mg/dL") for i in range(20))
    wire = frames(encode_records(simple_message(*results)))
    assert [f[1:2] for f in wire[:10]] == [b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"0",
                                           b"1", b"2"]  # fmt: skip
    events, replies = play(decoder(), [ENQ, *wire, EOT])
    assert [m.value for m in measurements(events)] == [100.0 + i for i in range(20)]
    assert replies == ACK * (len(wire) + 1)


def test_etb_continuation_joins_text_and_packed_records_split_on_cr() -> None:
    message = simple_message(*(Result("CHOL", f"{150 + i}", "mg/dL", reference="<200")
                               for i in range(12)))  # fmt: skip
    wire = frames(encode_records(message), pack=True)
    assert len(wire) > 2 and all(f[-5:-4] == b"\x17" for f in wire[:-1])
    assert wire[-1][-5:-4] == b"\x03"
    events, _ = play(decoder(), [ENQ, *wire, EOT])
    assert [m.value for m in measurements(events)] == [150.0 + i for i in range(12)]
    assert isinstance(events[-1], MessageComplete)


def test_timeout_rejects_the_partial_message_and_returns_to_idle() -> None:
    dec = decoder()
    wire = frames(encode_records(simple_message()))
    play(dec, [ENQ, wire[0], wire[1][:10]])
    events = dec.timeout()
    assert events == [Rejected(wire[1][:10], "timeout"), Rejected(wire[0][2:-5], "timeout")]
    assert dec.receive_data(wire[2]) == []  # no session: frames are junk until ENQ
    events, _ = play(dec, [ENQ, *wire, EOT])
    assert events[0] == Rejected(wire[2], "unexpected-data")
    assert [m.value for m in measurements(events)] == [98.0]


def test_eot_before_the_l_record_rejects_the_records_received() -> None:
    dec = decoder()
    wire = frames(encode_records(simple_message()))
    events, _ = play(dec, [ENQ, *wire[:-1], EOT])
    assert events == [Rejected(b"".join(f[2:-5] for f in wire[:-1]), "incomplete-message")]


def test_end_of_stream_rejects_a_partial_frame() -> None:
    dec = decoder()
    play(dec, [ENQ, b"\x021H|"])
    assert dec.receive_data(b"") == [Rejected(b"\x021H|", "eof")]


@given(st.binary(max_size=300))
def test_garbage_never_raises_and_the_next_good_message_decodes(junk: bytes) -> None:
    dec = decoder()
    events, _ = play(dec, [junk, EOT])
    assert all(e.raw for e in events if isinstance(e, Rejected))
    golden, _ = play(decoder(), load_turns(GOLDEN))
    after, _ = play(dec, load_turns(GOLDEN))
    assert measurements(after) == measurements(golden)


# -- records ----------------------------------------------------------------------------------


def test_unknown_test_code_is_rejected_with_the_record() -> None:
    message = simple_message(Result("GLU", "98", "mg/dL"), Result("NA", "140", "mmol/L"))
    events, _ = play(decoder(), transmission(message))
    assert Rejected(b"R|2|^^^NA|140|mmol/L||||F||||", "unknown-test-code") in events
    assert [m.quantity for m in measurements(events)] == ["glucose"]


def test_record_fields_escapes_status_and_odd_values() -> None:
    message = ResultMessage(
        "PAT|7",
        "SPEC^9",
        (
            Result("GLU", "5.4", "mmol/l", "H\\A", "C", "202406110935"),
            Result("HB", "", "g/dL", "", "X", "20241399999999"),
            Result("CRP", "POS", "", "", "P", "20240611"),
            Result("CHOL", ">600", "mg/dL", ">", "F", "20240611093512"),
            Result("HDL", "40", "furlongs", "", "F", ""),
        ),
    )
    ms = measurements(play(decoder(), transmission(message))[0])
    context = (("patient-id", "PAT|7"), ("specimen-id", "SPEC^9"))
    assert [
        (m.quantity, m.value, m.unit, m.loinc, m.flags, m.absent_reason, m.device_time) for m in ms
    ] == [
        (
            "glucose",
            5.4,
            "mmol/L",
            "14749-6",  # the map's serum/plasma sample in moles/volume (2345-7 is mass)
            ("corrected", "abnormal:H", "abnormal:A"),
            None,
            "2024-06-11T09:35",
        ),
        ("hemoglobin", None, "g/dL", "718-7", ("bad-device-time",), "error", None),
        ("crp", None, "mg/L", "1988-5", ("preliminary", "unit-missing"), "as-text", "2024-06-11"),
        (
            "cholesterol",
            600.0,
            "mg/dL",
            "2093-3",
            ("above-measuring-range", "abnormal:>"),
            None,
            "2024-06-11T09:35:12",
        ),
        ("hdl_cholesterol", 40.0, "furlongs", "2085-9", ("unit-unmapped",), None, None),
    ]
    assert all(m.context[:2] == context for m in ms)
    assert ("value-text", "POS") in ms[2].context


def test_device_info_from_the_header() -> None:
    events, _ = play(decoder(), transmission(simple_message()))
    assert [e for e in events if isinstance(e, DeviceInfo)] == [
        DeviceInfo("model", "EdgeSim POC"),
        DeviceInfo("serial-number", "SIM-0001"),
        DeviceInfo("software-version", "1.0"),
        DeviceInfo("device-clock", "2024-03-15T08:30:00"),
    ]


def test_delimiters_come_from_the_header() -> None:
    records = ["H!@#$", "P!1!ID@X", "O!1!S1", "R!1!###GLU!7$S$0!mg/dL", "L!1!N"]
    events, _ = play(decoder(), [ENQ, *frames(records), EOT])
    (m,) = measurements(events)
    assert m.quantity == "glucose" and m.value is None and ("value-text", "7#0") in m.context
    assert ("patient-id", "ID@X") in m.context


values = st.decimals(min_value=0, max_value=99999, places=2, allow_nan=False).map(str)
units = st.sampled_from(["mg/dL", "mg/dl", "mmol/L", "g/dL", "mg/L", "%"])
codes = st.sampled_from(["CHOL", "HDL", "TRIG", "LDL", "GLU", "CRP", "HB"])
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


rows = st.lists(
    st.tuples(codes, values, units, st.sampled_from(["", "N", "H", "LL"])).filter(
        lambda r: not (r[0] == "HB" and r[2] == "g/dL" and float(r[1]) > 100)  # impossible
    ),
    min_size=1,
    max_size=12,
)


@given(rows, printable, printable, st.booleans())
def test_round_trip_encode_frames_decode(
    rows: list[tuple[str, str, str, str]], patient: str, specimen: str, pack: bool
) -> None:
    results = tuple(Result(c, v, u, f, "F", "20240611093512") for c, v, u, f in rows)
    message = ResultMessage(patient, specimen, results)
    events, replies = play(decoder(), transmission(message, pack=pack))
    ms = measurements(events)
    mapping = load_map()
    assert [(m.quantity, m.value, m.unit.lower(), m.flags) for m in ms] == [
        (mapping[c].quantity, float(v), u.lower(), (f"abnormal:{f}",) if f else ())
        for c, v, u, f in rows
    ]
    for m in ms:
        assert dict(m.context).get("patient-id", "") == patient.strip()
        assert dict(m.context).get("specimen-id", "") == specimen.strip()
    assert replies == ACK * (1 + len(frames(encode_records(message), pack=pack)))
    # Source keys: one per result, the same when the message is sent again, others for another
    # specimen.
    keys = [m.source_key for m in ms]
    assert None not in keys and len(set(keys)) == len(keys)
    again, _ = play(decoder(), transmission(message, pack=pack))
    assert [m.source_key for m in measurements(again)] == keys
    other = ResultMessage(patient, specimen + "-2", results)
    assert not {m.source_key for m in measurements(play(decoder(), transmission(other))[0])} & (
        set(keys)
    )


# -- two ends ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_two_ended_simulator_and_decoder_until_all_results_are_acknowledged(seed: int) -> None:
    """In memory, no I/O: frames damaged on the wire (15 %) and one failed commit."""
    model = AstmAnalyserModel(seed=seed, corrupt=0.15, max_messages=6)
    device: DeviceModel = model  # checked by mypy against the protocol
    dec = decoder()
    committed: list[Measurement] = []
    pending: list[Measurement] = []
    commits = 0
    for _ in range(100_000):
        out = device.output()
        events = dec.receive_data(out) if out else []
        for event in events:
            if isinstance(event, Measurement):
                pending.append(event)
            elif isinstance(event, MessageComplete):
                commits += 1
                ok = commits != 2  # the second commit fails: NAK, the analyser resends
                if ok:
                    committed += pending
                pending = []
                dec.acknowledge(event.message_id, stored=ok)
        reply = dec.data_to_send()
        if reply:
            device.receive(reply)
        if len(model.acknowledged) == 6:
            break
    assert model.acknowledged == model.sent and len(model.sent) == 6
    assert model.transmissions > sum(len(frames(encode_records(m))) for m in model.sent)
    sent = [(r.code, float(r.value)) for m in model.acknowledged for r in m.results]
    got = [(dict(m.context)["test-code"], m.value) for m in committed]
    assert got == sent


# -- config -----------------------------------------------------------------------------------


def test_example_test_map_loads() -> None:
    assert load_map()["HB"] == astm.TestMapping("hemoglobin", "718-7")
    assert isinstance(decoder(), StreamDecoder)


def test_test_map_names_the_code_with_an_unknown_quantity() -> None:
    with pytest.raises(astm.TestMapError, match=r"'XYZ'.*'sugar'"):
        astm.load_test_map({"XYZ": {"quantity": "sugar"}})
    with pytest.raises(astm.TestMapError, match=r"'GLU'.*remove \['unit'\]"):
        astm.load_test_map({"GLU": {"quantity": "glucose", "unit": "mg/dL"}})
