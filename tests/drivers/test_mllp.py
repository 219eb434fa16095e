"""MLLP receiver: any split, several messages per read, garbage, ACK only after commit, two ends."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import DecoderMisuse, Event, MessageComplete, Rejected, StreamDecoder
from drivers.protocols.mllp import MllpDecoder, frame, unframe
from drivers.simulators.base import DeviceModel
from drivers.simulators.hl7_monitor import Hl7MonitorModel, encode_oru
from edge_agent.models import Measurement, measurement
from tests.drivers.streams import play
from tests.drivers.test_hl7v2 import CLOCK, GOLDEN, decoder, measurements, stream

ALL = b"".join(stream(p) for p in GOLDEN)
MESSAGE = encode_oru([measurement("spo2", 97.0)], "M1")
OTHER = encode_oru([measurement("pulse_rate", 61.0)], "M2")


def ack_of(reply: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of one framed ACK, in the separators of its MSH."""
    (body,) = unframe(reply)
    msa = next(s for s in body.split(b"\r") if s.startswith(b"MSA"))
    fields = msa.decode().split(body.decode()[3])
    return fields[1], fields[2]


def test_is_a_stream_decoder() -> None:
    assert isinstance(MllpDecoder(), StreamDecoder)


@given(st.data())
def test_any_split_gives_the_same_events_and_replies(data: st.DataObject) -> None:
    whole = play(decoder(), [ALL])
    cuts = sorted(data.draw(st.sets(st.integers(1, len(ALL) - 1), max_size=12)))
    edges = [0, *cuts, len(ALL)]
    assert play(decoder(), [ALL[a:b] for a, b in itertools.pairwise(edges)]) == whole


def test_byte_by_byte_and_several_messages_in_one_read() -> None:
    whole = play(decoder(), [ALL])
    assert play(decoder(), [ALL[i : i + 1] for i in range(len(ALL))]) == whole
    completes = [e for e in whole[0] if isinstance(e, MessageComplete)]
    assert completes == [MessageComplete("LC-77"), MessageComplete("PCD0001")]
    assert [ack_of(frame(body)) for body in unframe(whole[1])] == [
        ("AA", "LC-77"), ("AA", "PCD0001"),
    ]  # fmt: skip


def test_no_ack_byte_before_acknowledge_then_aa() -> None:
    dec = decoder()
    events = dec.receive_data(frame(MESSAGE))
    assert events[-1] == MessageComplete("M1")
    assert dec.data_to_send() == b""
    assert dec.pending == ("M1",)
    assert dec.receive_data(frame(OTHER))[-1] == MessageComplete("M2")
    assert dec.data_to_send() == b""  # still nothing: neither is committed
    dec.acknowledge("M1", stored=True)
    reply = dec.data_to_send()
    assert reply.startswith(b"\x0b") and reply.endswith(b"\x1c\r")
    assert ack_of(reply) == ("AA", "M1")
    assert dec.data_to_send() == b""
    dec.acknowledge("M2", stored=False)
    assert ack_of(dec.data_to_send()) == ("AE", "M2")
    assert not dec.pending


def test_replies_keep_message_order_when_commits_finish_out_of_order() -> None:
    dec = decoder()
    dec.receive_data(frame(MESSAGE) + frame(b"PID|||nope\r") + frame(OTHER))
    assert dec.data_to_send() == b""  # the immediate AR waits behind M1's answer
    dec.acknowledge("M2", stored=True)
    assert dec.data_to_send() == b""
    dec.acknowledge("M1", stored=True)
    replies = [ack_of(frame(b)) for b in unframe(dec.data_to_send())]
    assert replies == [("AA", "M1"), ("AR", ""), ("AA", "M2")]


def test_acknowledge_of_unknown_or_already_answered_message_is_misuse() -> None:
    dec = decoder()
    with pytest.raises(DecoderMisuse):
        dec.acknowledge("nope", stored=True)
    dec.receive_data(frame(MESSAGE))
    dec.acknowledge("M1", stored=True)
    with pytest.raises(DecoderMisuse):
        dec.acknowledge("M1", stored=True)


def test_failed_commit_answers_ae_with_reason_and_err() -> None:
    events, replies = play(decoder(), [frame(MESSAGE)], stored=False)
    assert isinstance(events[-1], MessageComplete)
    (body,) = unframe(replies)
    assert body.split(b"\r")[1:3] == [
        b"MSA|AE|M1|commit-failed",
        b"ERR|||207^commit-failed^HL70357|E",
    ]
    assert f"|{CLOCK}|".encode() in body


@pytest.mark.parametrize(
    ("content", "reason", "answered"),
    [
        (b"PID|||1\rOBX|1\r", "no-msh", ""),
        (b"MSH|^^\\&|X\r", "bad-separators", ""),
        (b"MSH|^~\\&|MON||||||ORU^R01||P|2.5\r", "no-control-id", ""),
    ],
)
def test_unreadable_message_is_rejected_and_answered_ar_at_once(
    content: bytes, reason: str, answered: str
) -> None:
    dec = decoder()
    assert dec.receive_data(frame(content)) == [Rejected(content, reason)]
    assert ack_of(dec.data_to_send()) == ("AR", answered)
    assert dec.pending == ()


def test_not_oru_is_kept_as_a_reject_then_answered_ar_after_commit() -> None:
    adt = b"MSH|^~\\&|HIS||||||ADT^A01|A9|P|2.5\rPID|||1\r"
    dec = decoder()
    assert dec.receive_data(frame(adt)) == [
        Rejected(adt, "unsupported-message-type"), MessageComplete("A9"),
    ]  # fmt: skip
    assert dec.data_to_send() == b""
    dec.acknowledge("A9", stored=True)
    (body,) = unframe(dec.data_to_send())
    assert b"MSA|AR|A9|unsupported-message-type" in body and b"ERR|||200^" in body


def test_garbage_between_frames_is_rejected_and_decoding_resyncs() -> None:
    events, replies = play(
        decoder(), [b"hello" + frame(MESSAGE) + b"\r\n" + b"\x1cxx" + frame(OTHER)]
    )
    assert events[0] == Rejected(b"hello", "no-frame")
    assert Rejected(b"\r\n\x1cxx", "no-frame") in events
    assert [m.quantity for m in measurements(events)] == ["spo2", "pulse_rate"]
    assert len(unframe(replies)) == 2


def test_a_frame_that_lost_its_end_is_truncated_and_the_next_one_decodes() -> None:
    events, _ = play(decoder(), [b"\x0b" + MESSAGE[:30] + frame(OTHER)])
    assert events[0] == Rejected(b"\x0b" + MESSAGE[:30], "truncated")
    assert [m.quantity for m in measurements(events)] == ["pulse_rate"]


def test_end_of_stream_rejects_partial_frame_and_junk() -> None:
    dec = decoder()
    assert dec.receive_data(b"\x0b" + MESSAGE[:20]) == []
    assert dec.receive_data(b"") == [Rejected(b"\x0b" + MESSAGE[:20], "truncated")]
    assert dec.receive_data(b"junk") == []
    assert dec.receive_data(b"") == [Rejected(b"junk", "no-frame")]


def test_fs_without_cr_empty_keepalive_frames_and_bare_newlines_are_tolerated() -> None:
    wire = b"\x0b\x1c\r\n" + b"\x0b" + MESSAGE + b"\x1c" + b"\x0b" + OTHER + b"\x1c\r\n"
    events, replies = play(decoder(), [wire])
    assert not [e for e in events if isinstance(e, Rejected)]
    assert [e for e in events if isinstance(e, MessageComplete)] == [
        MessageComplete("M1"), MessageComplete("M2"),
    ]  # fmt: skip
    assert len(unframe(replies)) == 2


def test_overlong_frame_is_rejected_in_bounded_pieces_and_answered_ar() -> None:
    dec = MllpDecoder(max_message=64)
    big = MESSAGE + b"NTE|||" + b"x" * 100 + b"\r"
    events = dec.receive_data(frame(big))
    assert events == [Rejected(big[i : i + 64], "too-long") for i in range(0, len(big), 64)]
    assert ack_of(dec.data_to_send()) == ("AR", "M1")
    events, _ = play(dec, [frame(b"MSH|^~\\&|A||||||ORU^R01|Z\r")])
    assert events[-1] == MessageComplete("Z")


def test_junk_is_bounded() -> None:
    events = decoder().receive_data(b"z" * 10000)
    assert events == [Rejected(b"z" * 4096, "no-frame")] * 2


@given(st.binary(max_size=300), st.binary(max_size=50))
def test_garbage_never_raises_and_the_next_good_message_decodes(junk: bytes, more: bytes) -> None:
    dec = decoder()
    events, _ = play(dec, [junk, more, b"\x0b", b""])
    assert all(isinstance(e, Rejected | MessageComplete | Measurement) or e for e in events)
    golden, _ = play(decoder(), [ALL])
    after, _ = play(dec, [ALL])
    assert measurements(after) == measurements(golden)


@given(st.binary(max_size=400))
def test_any_frame_content_never_raises(content: bytes) -> None:
    dec = decoder()
    events, _ = play(dec, [frame(b"MSH|^~\\&|A||||||ORU^R01|1\r" + content), frame(content)])
    assert all(e.raw or e.reason for e in events if isinstance(e, Rejected))


# -- two ends ---------------------------------------------------------------------------------


def run_pair(
    model: Hl7MonitorModel,
    ticks: int,
    *,
    fail_commits: frozenset[int] = frozenset(),
    drop: bool = False,
) -> tuple[list[Measurement], list[int]]:
    """Model and decoder in memory; commits counted from 1; returns (committed, commit ticks).
    ``drop`` loses every reply (the monitor never hears from us)."""
    device: DeviceModel = model  # checked by mypy against the protocol
    dec = decoder()
    committed: list[Measurement] = []
    commit_ticks: list[int] = []
    pending: list[Measurement] = []
    commits = 0
    for tick in range(1, ticks + 1):
        out = device.output()
        events: list[Event] = dec.receive_data(out) if out else []
        for event in events:
            if isinstance(event, Measurement):
                pending.append(event)
            elif isinstance(event, MessageComplete):
                commits += 1
                ok = commits not in fail_commits
                if ok:
                    committed += pending
                    commit_ticks.append(tick)
                pending = []
                dec.acknowledge(event.message_id, stored=ok)
        reply = dec.data_to_send()
        if reply and not drop:
            device.receive(reply)
    return committed, commit_ticks


def test_two_ends_every_message_delivered_acks_only_after_commits() -> None:
    model = Hl7MonitorModel(seed=3, interval=1.0, period=5.0, max_messages=5)
    committed, commit_ticks = run_pair(model, 60, fail_commits=frozenset({2}))
    assert model.delivered == list(model.sent)  # all five, the second after one resend
    assert model.resent == ["MON3-00002"]
    assert [a.code for a in model.acks] == ["AA", "AE", "AA", "AA", "AA", "AA"]
    # An AA is read at the tick after the commit at the earliest: never before it.
    aa_ticks = [a.tick for a in model.acks if a.code == "AA"]
    assert all(ack > commit for ack, commit in zip(aa_ticks, commit_ticks, strict=True))
    expected = [m for ms in model.sent.values() for m in ms]
    assert [(m.quantity, m.value, m.unit, m.device_time) for m in committed] == [
        (m.quantity, m.value, m.unit, m.device_time) for m in expected
    ]


def test_without_any_ack_the_monitor_resends_once_then_gives_up() -> None:
    model = Hl7MonitorModel(seed=1, interval=1.0, period=30.0, ack_timeout=10.0, max_messages=1)
    committed, _ = run_pair(model, 40, drop=True)
    assert model.resent == ["MON1-00001"] and model.failed == ["MON1-00001"]
    assert model.transmissions == 2 and model.delivered == [] and model.acks == []
    assert len(committed) == 2 * len(model.sent["MON1-00001"])  # at-least-once: stored twice


def test_an_empty_lost_frame_keeps_its_start_octet() -> None:
    # Found by tests/drivers/test_fuzz.py: VT VT gave a reject with no bytes.
    dec = MllpDecoder()
    events = dec.receive_data(b"\x0b\x0b") + dec.receive_data(b"")
    assert events == [Rejected(b"\x0b", "truncated"), Rejected(b"\x0b", "truncated")]
