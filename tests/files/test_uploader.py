"""The upload state machine, pure, and two-ended against central's real reassembly
(:class:`~sync.central.files.CentralFiles` on a temporary directory): whatever the faults
(messages lost either way, disconnects, corrupted segments, central restarting with a torn
partial file), the file arrives whole, and the bytes sent twice are at most one segment per
interruption."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from sync.central.files import CentralFiles
from sync.files.protocol import AckState, FileAck, FileFin, FileInit, UpMessage, checksum
from sync.files.uploader import (
    MIN_SEGMENT,
    Completed,
    Failed,
    Phase,
    SegmentSizer,
    SendFin,
    SendInit,
    SendSegment,
    Uploader,
)

FID = "ab" * 32


def uploader(size: int = 100_000) -> Uploader:
    up = Uploader(ack_timeout=5.0, sizer=SegmentSizer(64_000))
    up.add(FID, size)
    up.connected()
    return up


def ack(state: AckState, offset: int, reply: str) -> FileAck:
    return FileAck(FID, state, offset, "", reply)


def test_the_segment_size_follows_the_cap_and_the_pacer_burst() -> None:
    assert SegmentSizer(64_000).target() == 15 * 1024  # 2 s at 64 kbit/s
    assert SegmentSizer(1_000_000).target() == 16 * 1024  # never above the pacer's burst
    assert SegmentSizer(None).target() == 64 * 1024
    sizer = SegmentSizer(64_000)
    sizer.interrupted()
    assert sizer.size == 7 * 1024 + 512
    for _ in range(4):
        sizer.acked()
    assert sizer.size == 15 * 1024
    for _ in range(10):
        sizer.interrupted()
    assert sizer.size == MIN_SEGMENT


# (phase reached, what is outstanding) x central's answer -> what the uploader sends next.
CASES = [
    ("init", ack(AckState.RECEIVING, 0, "init"), SendSegment(FID, 0, 15 * 1024)),
    ("init", ack(AckState.RECEIVING, 40_000, "init"), SendSegment(FID, 40_000, 15 * 1024)),
    ("init", ack(AckState.RECEIVING, 100_000, "init"), SendFin(FID)),
    ("init", ack(AckState.UNKNOWN, 0, "init"), SendInit(FID)),
    ("init", ack(AckState.RECEIVING, 0, "seg/0"), None),  # a late answer: still waiting
    ("seg", ack(AckState.RECEIVING, 15 * 1024, "seg/0"), SendSegment(FID, 15 * 1024, 15 * 1024)),
    ("seg", ack(AckState.BAD_SEGMENT, 0, "seg/0"), SendSegment(FID, 0, 15 * 1024)),
    ("seg", ack(AckState.UNKNOWN, 0, "seg/0"), SendInit(FID)),
    ("seg", ack(AckState.MISMATCH, 0, "seg/0"), SendInit(FID)),
    ("seg", ack(AckState.RECEIVING, 0, "init"), None),
    ("fin", ack(AckState.MISMATCH, 0, "fin"), SendInit(FID)),
    ("fin", ack(AckState.RECEIVING, 90_000, "fin"), SendSegment(FID, 90_000, 10_000)),
]


@pytest.mark.parametrize(("outstanding", "answer", "expected"), CASES)
def test_every_answer_in_every_phase(outstanding: str, answer: FileAck, expected: object) -> None:
    up = uploader()
    first = up.next_send(0.0)
    assert first == SendInit(FID)
    up.sent(first, 0.0)
    if outstanding in ("seg", "fin"):
        assert (
            up.on_ack(ack(AckState.RECEIVING, 0 if outstanding == "seg" else 100_000, "init")) == []
        )
        send = up.next_send(0.0)
        assert send is not None
        up.sent(send, 0.0)
    assert up.on_ack(answer) == []
    assert up.next_send(0.1) == expected


def test_complete_ends_the_file_whatever_was_outstanding() -> None:
    up = uploader()
    send = up.next_send(0.0)
    assert send is not None
    up.sent(send, 0.0)
    assert up.on_ack(ack(AckState.COMPLETE, 100_000, "")) == [Completed(FID)]
    assert up.idle() and up.next_send(0.0) is None


def test_no_answer_asks_again_with_init_after_the_timeout_and_a_growing_wait() -> None:
    up = uploader()
    assert up.next_send(0.0) == SendInit(FID)
    up.sent(SendInit(FID), 0.0)
    assert up.next_send(4.9) is None and up.deadline() == 5.0
    # An unanswered init: nobody serves files (yet). Wait at least half the timeout more.
    assert up.next_send(5.0) is None and up.retry.state() == "central does not take files yet"
    again = up.deadline()
    assert again is not None and 7.5 <= again <= 10.0
    assert up.next_send(again) == SendInit(FID)
    up.sent(SendInit(FID), again)
    assert up.next_send(again + 5.0) is None
    later = up.deadline()
    assert later is not None and later - (again + 5.0) >= 5.0  # doubled
    up.sent(SendInit(FID), later)
    up.on_ack(ack(AckState.RECEIVING, 0, "init"))  # central answers: no wait any more
    assert up.retry.state() == "" and up.retry.retry_at == 0.0


def test_a_disconnect_starts_again_with_init_and_nothing_is_sent_offline() -> None:
    up = uploader()
    assert up.next_send(0.0) == SendInit(FID)
    up.sent(SendInit(FID), 0.0)
    up.on_ack(ack(AckState.RECEIVING, 0, "init"))
    send = up.next_send(0.0)
    assert isinstance(send, SendSegment)
    up.sent(send, 0.0)
    up.disconnected()
    assert up.next_send(1.0) is None
    assert up.current is not None and up.current.phase is Phase.INIT
    up.connected()
    assert up.next_send(1.0) == SendInit(FID)
    assert up.sizer.size == 15 * 1024 // 2  # the link dropped mid-segment: smaller ones


def test_three_mismatches_leave_the_file_to_an_operator() -> None:
    up = uploader()
    assert up.next_send(0.0) == SendInit(FID)
    outcomes: list[object] = []
    for _ in range(3):
        up.sent(SendFin(FID), 0.0)
        outcomes += up.on_ack(ack(AckState.MISMATCH, 0, "fin"))
    assert outcomes == [Failed(FID, "central found another sha256 3 times")]


# --- two-ended: the real uploader against central's real reassembly -------------------------
# 0 delivered and answered; 1 lost on the way to central; 2 reached central, answer lost;
# 3 corrupted on the way; 4 central restarts (a torn write left garbage past its offset).
FAULTS = st.lists(st.sampled_from([0, 0, 0, 1, 2, 3, 4]), max_size=40)


def run_upload(root: Path, data: bytes, faults: list[int]) -> tuple[Uploader, int, bytes]:
    sha = hashlib.sha256(data).hexdigest()
    init = FileInit(sha, sha, len(data), "image/jpeg", "image", 0, "2026-01-01T00:00:00Z")
    central = CentralFiles(root)
    up = Uploader(ack_timeout=5.0, sizer=SegmentSizer(64_000))
    up.add(sha, len(data))
    up.connected()
    now, interruptions, done = 0.0, 0, False
    for _ in range(2000):
        send = up.next_send(now)
        if send is None:
            deadline = up.deadline()
            if up.idle() or deadline is None:
                done = up.idle()
                break
            now = deadline
            continue
        up.sent(send, now)
        fault = faults.pop(0) if faults else 0
        if isinstance(send, SendInit):
            msg, payload, seg = UpMessage("mmu-t", sha, "init", None), init.encode(), None
        elif isinstance(send, SendFin):
            msg, payload, seg = (
                UpMessage("mmu-t", sha, "fin", None),
                FileFin(len(data), sha).encode(),
                None,
            )
        else:
            payload = data[send.offset : send.offset + send.length]
            msg, seg = UpMessage("mmu-t", sha, "seg", send.offset), checksum(payload)
            if fault == 3 and payload:
                payload = bytes([payload[0] ^ 1]) + payload[1:]
                interruptions += 1
        if fault == 4:
            central.close()
            part = root / "partial" / "mmu-t" / f"{sha}.part"
            if part.exists():
                with part.open("ab") as f:
                    f.write(b"torn")
            central = CentralFiles(root)
        if fault == 1:
            up.disconnected()
            up.connected()
            interruptions += 1
            continue
        answer = central.handle(msg, payload, seg)
        if fault == 2:
            up.disconnected()
            up.connected()
            interruptions += 1
            continue
        up.on_ack(FileAck.decode(answer.encode()))
        now += 0.01
    assert done, "the upload did not finish"
    row = central.db.execute("SELECT state, mismatches FROM uploads").fetchone()
    central.close()
    assert row[0] == "complete"
    assert row[1] == 0  # a damaged segment is caught alone, never as a whole-file mismatch
    return up, interruptions, (root / "objects" / sha[:2] / sha).read_bytes()


@hsettings(max_examples=60, deadline=None)
@given(size=st.integers(0, 120_000), faults=FAULTS)
def test_any_fault_sequence_delivers_the_file_resending_at_most_a_segment_per_fault(
    size: int, faults: list[int]
) -> None:
    data = os.urandom(size)
    with tempfile.TemporaryDirectory() as tmp:
        up, interruptions, received = run_upload(Path(tmp), data, list(faults))
    assert received == data
    assert up.resent_bytes <= interruptions * SegmentSizer(64_000).target()
