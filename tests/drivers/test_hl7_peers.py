"""What HL7 v2 peers refuse (issue 20): our ACKs checked by hl7apy (STRICT), an ORU with only
unknown observation codes answered AE with an ERR naming them (over TCP, python-hl7's MLLP
client as the monitor, a real store), and escaped repetition separators kept in comments.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hl7.client import MLLPClient
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message as StrictMessage
from hl7apy.parser import get_message_info, parse_segments
from hl7apy.parser import parse_message as strict_parse
from hl7apy.validation import Validator
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Rejected
from drivers.protocols import hl7v2
from drivers.protocols.hl7v2 import Separators, parse_message
from drivers.protocols.mllp import MllpDecoder, frame, unframe
from drivers.transports.mllp_tcp import MllpServer
from edge_agent.models import Measurement
from edge_agent.store.writer import Store
from tests.drivers.sinks import WatchedSink

CLOCK = "20240611100000+0100"
WAIT = 30.0  # seconds: a bounded deadline, not a speed check
SPO2 = "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|262688^MDC_DIM_PERCENT^MDC|||||F"
UNKNOWN = "OBX|2|NM|99999-9^Mystery^LN||12|mg|||||F"


def oru(version: str, *obx: str, control: str = "C1", kind: str = "ORU^R01") -> bytes:
    msh = f"MSH|^~\\&|MON|WARD|EDGE|VAN|20240611093512||{kind}|{control}|P|{version}"
    return "".join(
        s + "\r" for s in (msh, "PID|||P-7", "OBR|1|||X|||20240611093500", *obx)
    ).encode()


def answer(message: bytes, *, stored: bool = True) -> bytes:
    """The ACK the decoder queues for one message (unframed)."""
    decoder = MllpDecoder(clock=lambda: CLOCK, control_id_prefix="T")
    for event in decoder.receive_data(frame(message)):
        if type(event).__name__ == "MessageComplete":
            decoder.acknowledge(decoder.pending[0], stored=stored)
    (ack,) = unframe(decoder.data_to_send())
    return ack


def strict(ack: bytes) -> StrictMessage:
    """The ACK parsed and validated by hl7apy at STRICT level. hl7apy's ``parse_message``
    takes the message structure from MSH-9.3, which HL7 added in v2.3.1; before that (v2.3)
    the structure of an acknowledgement is ``ACK`` and is named here, the rest the same."""
    text = ack.decode()
    encoding, _, version = get_message_info(text)
    if version in ("2.3.1", "2.4", "2.5", "2.5.1", "2.6"):
        message: StrictMessage = strict_parse(
            text, validation_level=VALIDATION_LEVEL.STRICT, force_validation=True
        )
        return message
    message = StrictMessage(
        "ACK", version=version, validation_level=VALIDATION_LEVEL.STRICT, encoding_chars=encoding
    )
    message.children = parse_segments(
        text, message.version, encoding, VALIDATION_LEVEL.STRICT, message.reference, True
    )
    Validator.validate(message)
    return message


def segment(ack: bytes, name: str) -> list[list[str]]:
    return [s.split("|") for s in ack.decode().split("\r") if s.startswith(name)]


VERSIONS = ("2.3", "2.4", "2.5")
CASES = {
    "stored": (oru("{v}", SPO2), True, "AA"),
    "commit-failed": (oru("{v}", SPO2), False, "AE"),
    "only-unknown-codes": (oru("{v}", UNKNOWN), True, "AE"),
    "some-unknown-codes": (oru("{v}", SPO2, UNKNOWN), True, "AA"),
    "not-an-oru": (oru("{v}", kind="ADT^A01"), True, "AR"),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_every_ack_is_valid_for_the_version_of_the_message_it_answers(
    version: str, case: str
) -> None:
    template, stored, code = CASES[case]
    ack = answer(template.replace(b"{v}", version.encode()), stored=stored)
    parsed = strict(ack)
    assert parsed.name == "ACK" and parsed.version == version
    assert parsed.msa.msa_1.to_er7() == code
    msh9 = segment(ack, "MSH")[0][8]
    assert msh9 == ("ACK^A01" if case == "not-an-oru" else "ACK^R01") + (
        "" if version == "2.3" else "^ACK"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_an_oru_whose_only_obx_has_an_unknown_code_is_answered_ae_naming_the_code(
    version: str,
) -> None:
    ack = answer(oru(version, UNKNOWN))
    assert segment(ack, "MSA")[0][:3] == ["MSA", "AE", "C1"]
    (err,) = segment(ack, "ERR")
    if version == "2.5":  # ERR-2 location, ERR-3 code and text, ERR-4 severity
        assert err[2:5] == [
            "OBX^2^3",
            "103^unknown observation code 99999-9 Mystery (LN)^HL70357",
            "E",
        ]
    else:  # ERR-1: segment^sequence^field^code&text&table
        assert err[1] == "OBX^2^3^103&unknown observation code 99999-9 Mystery (LN)&HL70357"


def test_some_unknown_codes_are_answered_aa_with_a_warning_per_unknown_code() -> None:
    ack = answer(oru("2.5", SPO2, UNKNOWN, UNKNOWN.replace("OBX|2|", "OBX|3|")))
    assert segment(ack, "MSA")[0][:3] == ["MSA", "AA", "C1"]
    assert [e[2:5] for e in segment(ack, "ERR")] == [
        ["OBX^2^3", "103^unknown observation code 99999-9 Mystery (LN)^HL70357", "W"],
        ["OBX^3^3", "103^unknown observation code 99999-9 Mystery (LN)^HL70357", "W"],
    ]


def test_ack_text_and_errors_follow_v27_where_msa3_is_withdrawn() -> None:
    ack = answer(oru("2.7", UNKNOWN))
    assert segment(ack, "MSA")[0] == ["MSA", "AE", "C1"]
    assert segment(ack, "ERR")[0][4] == "E"


# -- over TCP, into a real store ---------------------------------------------------------------


@pytest.fixture
async def listening(tmp_path: Path) -> AsyncIterator[tuple[Store, WatchedSink, int]]:
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        sink = WatchedSink(store)
        async with MllpServer("monitor-1", sink, port=0) as server:
            yield store, sink, server.port


def monitor_sends(port: int, message: bytes) -> bytes:
    """python-hl7's MLLP client: one message, its ACK (unframed)."""
    with MLLPClient("127.0.0.1", port) as client:
        client.socket.settimeout(WAIT)
        data = client.send_message(message)
        while not data.endswith(b"\x1c\r"):
            chunk = client.socket.recv(4096)
            assert chunk
            data += chunk
    (ack,) = unframe(data)
    return ack


async def test_unknown_codes_over_tcp_reject_kept_with_its_bytes_and_ae_sent(
    listening: tuple[Store, WatchedSink, int],
) -> None:
    store, _, port = listening
    only = oru("2.5", UNKNOWN, control="U1")
    ack = await asyncio.to_thread(monitor_sends, port, only)
    assert segment(ack, "MSA")[0][:3] == ["MSA", "AE", "U1"]
    assert "99999-9" in segment(ack, "ERR")[0][3]
    strict(ack)
    rows = store.read(lambda db: db.execute("SELECT reason, raw FROM rejects").fetchall())
    assert rows == [("unknown-observation", UNKNOWN.encode())]  # kept, raw bytes and all
    assert store.read(lambda db: db.execute("SELECT count(*) FROM readings").fetchone()) == (0,)

    mixed = oru("2.5", SPO2, UNKNOWN, control="U2")
    ack = await asyncio.to_thread(monitor_sends, port, mixed)
    assert segment(ack, "MSA")[0][:3] == ["MSA", "AA", "U2"]
    assert segment(ack, "ERR")[0][4] == "W"
    assert store.read(lambda db: db.execute("SELECT quantity, value FROM readings").fetchall()) == [
        ("spo2", 97.0)
    ]
    assert store.read(lambda db: db.execute("SELECT count(*) FROM rejects").fetchone()) == (2,)


# -- escapes: split on the repetition separator first, then unescape --------------------------


def test_an_escaped_repetition_separator_stays_in_the_comment() -> None:
    data = oru("2.5", SPO2, "NTE|1||tilde\\R\\bs~second line", "NTE|2||a\\R\\b")
    events = hl7v2.decode_oru(parse_message(data))
    (m,) = [e for e in events if isinstance(e, Measurement)]
    assert [v for k, v in m.context if k == "comment"] == ["tilde~bs second line", "a~b"]
    assert not [e for e in events if isinstance(e, Rejected)]


separators = st.sampled_from(
    [Separators(), Separators("!", "@", "#", "$", "%"), Separators("|", "^", "~", "\\", "&", "#")]
)


@given(separators, st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
def test_escape_split_unescape_round_trip_keeps_every_repetition(
    seps: Separators, lines: list[str]
) -> None:
    """Any text (separators, escape characters, CR, LF included) escaped per repetition and
    joined with the repetition separator comes back repetition by repetition, and as the
    comment of the observation before it."""
    field = seps.repetition.join(seps.escape_text(line) for line in lines)
    msh = seps.field.join(
        [
            "MSH",
            seps.encoding_characters,
            "MON",
            "",
            "",
            "",
            "2024",
            "",
            seps.component.join(["ORU", "R01"]),
            "C1",
            "P",
            "2.5",
        ]
    )
    obx = seps.field.join(
        [
            "OBX",
            "1",
            "NM",
            seps.component.join(["150456", "", "MDC"]),
            "",
            "97",
            seps.component.join(["%", "", "UCUM"]),
            "",
            "",
            "",
            "",
            "F",
        ]
    )
    nte = seps.field.join(["NTE", "1", "", field])
    message = parse_message(f"{msh}\r{obx}\r{nte}\r".encode())
    assert message.segments[2].texts(3) == lines
    (m,) = [e for e in hl7v2.decode_oru(message) if isinstance(e, Measurement)]
    shown = " ".join(line.strip() for line in lines if line.strip())
    assert [v for k, v in m.context if k == "comment"] == ([shown] if shown else [])
