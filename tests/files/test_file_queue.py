"""What both upload modes share (:class:`~sync.files.uploader.FileQueue`), run against each
mode, and the few places where they differ on purpose, pinned."""

from __future__ import annotations

import pytest

from sync.files import emqx
from sync.files.protocol import AckState, FileAck
from sync.files.uploader import (
    Completed,
    Phase,
    SegmentSizer,
    SendFin,
    SendInit,
    SendSegment,
    Uploader,
)

A, B, C = "a" * 64, "b" * 64, "c" * 64
Mode = Uploader | emqx.EmqxUploader


def make(mode: str) -> Mode:
    sizer = SegmentSizer(64_000)
    return Uploader(5.0, sizer) if mode == "native" else emqx.EmqxUploader(5.0, sizer)


def answer_init(up: Mode, file_id: str, held: int = 0) -> None:
    """The far end took the init (native: and holds ``held`` bytes)."""
    if isinstance(up, Uploader):
        up.on_ack(FileAck(file_id, AckState.RECEIVING, held, "", "init"))
    else:
        up.on_answer(file_id, "init", emqx.SUCCESS, 0.0)


def send(up: Mode, now: float) -> SendInit | SendSegment | SendFin:
    """What the uploader sends now, published."""
    out = up.next_send(now)
    assert out is not None
    up.sent(out, now)
    return out


MODES = pytest.mark.parametrize("mode", ["native", "emqx"])


@MODES
def test_queue_order_add_twice_and_idle(mode: str) -> None:
    up = make(mode)
    assert up.idle() and up.next_send(0.0) is None and up.deadline() is None
    for f in (A, B, A):
        up.add(f, 1000)
    assert list(up.queue) == [A, B]
    assert up.next_send(0.0) is None  # offline: nothing
    up.connected()
    assert up.next_send(0.0) == SendInit(A)
    up.add(A, 1000)  # the file being sent is not queued again
    assert list(up.queue) == [B] and not up.idle()


@MODES
def test_one_message_outstanding_its_timeout_then_init_again_with_backoff(mode: str) -> None:
    up = make(mode)
    up.add(A, 100_000)
    up.connected()
    assert send(up, 0.0) == SendInit(A)
    assert up.inits == 1 and up.deadline() == 5.0 and up.next_send(4.9) is None
    assert up.next_send(5.0) is None  # unanswered init: the backoff's wait first
    assert up.retry.unanswered == 1 and up.retry.state() and up.deadline() == up.retry.retry_at
    assert send(up, up.retry.retry_at) == SendInit(A)
    answer_init(up, A)
    assert up.retry.unanswered == 0 and not up.retry.state()
    assert send(up, 20.0) == SendSegment(A, 0, up.sizer.size)
    assert up.sent_bytes == up.sizer.size
    assert up.deadline() == 25.0 + up.sizer.transmit_s(up.sizer.size)


@MODES
def test_a_disconnect_mid_segment_halves_the_segments_and_starts_with_init(mode: str) -> None:
    up = make(mode)
    up.add(A, 100_000)
    up.connected()
    assert send(up, 0.0) == SendInit(A)
    answer_init(up, A)
    full = up.sizer.size
    assert isinstance(send(up, 0.0), SendSegment)
    up.disconnected()
    assert up.sizer.size == full // 2 and up.next_send(1.0) is None
    assert up.current is not None and up.current.phase is Phase.INIT
    up.connected()
    assert up.next_send(1.0) == SendInit(A)


@MODES
def test_prioritised_files_go_first_and_the_current_one_steps_aside(mode: str) -> None:
    up = make(mode)
    for f in (A, B, C):
        up.add(f, 100_000)
    up.connected()
    assert send(up, 0.0) == SendInit(A)
    up.prioritise({C})
    assert up.current is None and list(up.queue) == [C, A, B]
    assert up.next_send(0.0) == SendInit(C)
    up.prioritise({"z" * 64})  # nothing of that encounter queued: no change
    assert up.current is not None and up.current.file_id == C and list(up.queue) == [A, B]


def step_aside_mid_segment(up: Mode) -> int:
    """A steps aside for B while a segment of A is outstanding; A's bytes sent again later."""
    up.add(A, 100_000)
    up.add(B, 1000)
    up.connected()
    assert send(up, 0.0) == SendInit(A)
    answer_init(up, A)
    assert isinstance(send(up, 0.0), SendSegment)
    full = up.sizer.size
    up.prioritise({B})
    assert up.current is None and list(up.queue) == [B, A]
    up.queue.pop(B)
    assert send(up, 1.0) == SendInit(A)  # A again, the segment outstanding was never answered
    answer_init(up, A)
    again = send(up, 1.0)
    assert isinstance(again, SendSegment) and again.offset == 0
    return full


def test_native_step_aside_mid_segment_halves_the_segments_and_forgets_what_it_sent() -> None:
    up = Uploader(5.0, SegmentSizer(64_000))
    full = step_aside_mid_segment(up)
    assert up.sizer.size == full // 2
    assert up.resent_bytes == 0  # what it sent before is not counted as re-sent


def test_emqx_step_aside_mid_segment_keeps_the_size_and_counts_the_resend() -> None:
    up = emqx.EmqxUploader(5.0, SegmentSizer(64_000))
    full = step_aside_mid_segment(up)
    assert up.sizer.size == full
    assert up.resent_bytes == full


def test_emqx_quota_pause_holds_every_send_and_is_the_deadline() -> None:
    up = emqx.EmqxUploader(5.0, SegmentSizer(64_000))
    up.add(A, 100_000)
    up.connected()
    assert send(up, 0.0) == SendInit(A)
    up.on_answer(A, "init", emqx.QUOTA_EXCEEDED, 0.0)
    pause = up.deadline()
    assert pause is not None and pause > 0.0 and up.retry.retry_at == 0.0
    assert up.next_send(pause - 0.01) is None
    assert up.next_send(pause) == SendInit(A)


def test_emqx_completed_file_forgets_what_emqx_confirmed() -> None:
    up = emqx.EmqxUploader(5.0, SegmentSizer(64_000))
    up.add(A, 1000)
    up.connected()
    assert send(up, 0.0) == SendInit(A)
    answer_init(up, A)
    assert send(up, 0.0) == SendSegment(A, 0, 1000)
    up.on_answer(A, "seg/0", emqx.SUCCESS, 0.0)
    assert up.confirmed == {A: 1000} and up.next_send(0.0) == SendFin(A)
    assert send(up, 0.0) == SendFin(A)
    assert up.on_answer(A, "fin", emqx.SUCCESS, 0.0) == [Completed(A)]
    assert up.confirmed == {} and up.idle()


def test_emqx_resume_with_everything_confirmed_goes_straight_to_fin() -> None:
    up = emqx.EmqxUploader(5.0, SegmentSizer(64_000))
    up.add(A, 1000)
    up.connected()
    assert send(up, 0.0) == SendInit(A)
    answer_init(up, A)
    assert send(up, 0.0) == SendSegment(A, 0, 1000)
    up.on_answer(A, "seg/0", emqx.SUCCESS, 0.0)
    up.disconnected()
    up.connected()
    assert send(up, 1.0) == SendInit(A)
    answer_init(up, A)  # phase SEGMENT, but EMQX confirmed every byte
    assert up.next_send(1.0) == SendFin(A)
