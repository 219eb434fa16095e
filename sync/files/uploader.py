"""The unit's upload state machine, pure: no sockets, files or clocks (times are passed in).

One file at a time, oldest first, and one message outstanding at a time: init, then the
segment at central's offset, then fin. Every answer from central carries the offset it holds
durably, and the next segment starts there. After a disconnect the file starts again with init
(central answers with its offset): what central stored is never sent again, and what was in
flight when the link dropped (one segment at most) is sent once more.

Segment sizes follow the link (:class:`SegmentSizer`): about ``TARGET_S`` seconds of the uplink
cap but never more than the pacer's burst (one message outstanding: a segment larger than the
burst would wait for tokens *and* for the wire, one after the other), halved after an
interruption lost a segment, grown back after acks. An alert published behind a segment waits
at most that segment's transmission time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from edge_agent.backoff import Backoff
from sync.files.protocol import AckState, FileAck

MIN_SEGMENT = 4 * 1024
MAX_SEGMENT = 256 * 1024
UNCAPPED_SEGMENT = 64 * 1024
TARGET_S = 2.0  # a segment's transmission time at the uplink cap
GROW_AFTER = 4  # acks in a row before a halved segment size grows again
MAX_MISMATCHES = 3  # whole-file checksum failures before the file is left to an operator
NO_ROUTE_CAP = 600.0  # longest wait between two unanswered inits
NO_ROUTE = "central does not take files yet"  # the status shown while inits go unanswered


def init_backoff(ack_timeout: float) -> Backoff:
    """The wait after an unanswered ``init`` (no receiver serves files, or none is up): it
    doubles, at least half of it is always waited; any answer from central resets it."""
    return Backoff(base=max(0.1, ack_timeout), cap=NO_ROUTE_CAP, min_share=0.5)


@dataclass
class InitRetry:
    """Shared by both upload modes: when the next ``init`` may go after unanswered ones."""

    backoff: Backoff
    unanswered: int = 0  # inits in a row without any answer
    retry_at: float = 0.0

    def timed_out(self, now: float) -> None:
        self.unanswered += 1
        self.retry_at = now + self.backoff.next_delay()

    def answered(self) -> None:
        self.unanswered, self.retry_at = 0, 0.0
        self.backoff.reset()

    def state(self) -> str:
        return NO_ROUTE if self.unanswered else ""


class Phase(StrEnum):
    INIT = "init"
    SEGMENT = "segment"
    FIN = "fin"


@dataclass(frozen=True)
class SendInit:
    file_id: str


@dataclass(frozen=True)
class SendSegment:
    file_id: str
    offset: int
    length: int


@dataclass(frozen=True)
class SendFin:
    file_id: str


Send = SendInit | SendSegment | SendFin


@dataclass(frozen=True)
class Completed:
    file_id: str


@dataclass(frozen=True)
class Failed:
    file_id: str
    reason: str


Outcome = Completed | Failed


@dataclass
class SegmentSizer:
    bits_per_second: float | None
    burst_bytes: int = 16 * 1024  # the pacer's (sync.pacing.Pacer.burst_bytes)
    size: int = 0
    _acks: int = 0

    def __post_init__(self) -> None:
        self.size = self.target()

    def target(self) -> int:
        if not self.bits_per_second:
            return UNCAPPED_SEGMENT
        raw = int(self.bits_per_second / 8 * TARGET_S) // 1024 * 1024
        return max(MIN_SEGMENT, min(MAX_SEGMENT, self.burst_bytes, raw))

    def interrupted(self) -> None:
        self.size = max(MIN_SEGMENT, self.size // 2)
        self._acks = 0

    def acked(self) -> None:
        self._acks += 1
        if self._acks >= GROW_AFTER and self.size < self.target():
            self.size = min(self.target(), self.size * 2)
            self._acks = 0

    def transmit_s(self, nbytes: int) -> float:
        return nbytes * 8 / self.bits_per_second if self.bits_per_second else 0.0


@dataclass
class Transfer:
    """The file being sent, as both upload modes see it."""

    file_id: str
    size: int
    phase: Phase = Phase.INIT
    waiting: str = ""  # the reply_to of the message outstanding: init | seg/{offset} | fin | ""
    pending_end: int = 0  # the end of the segment outstanding
    sent_at: float = 0.0
    timeout_at: float = 0.0


T = TypeVar("T", bound=Transfer)


@dataclass
class FileQueue(Generic[T]):
    """What both upload modes share: the queue (oldest first, prioritised files first), the file
    being sent, online/offline, one message outstanding and its timeout, the init backoff and
    the byte counters. A mode says how a file starts (:meth:`_start`), where its next segment
    starts (:meth:`_held`) and reads its own answers."""

    ack_timeout: float
    sizer: SegmentSizer
    online: bool = False
    queue: dict[str, int] = field(default_factory=dict)  # file id -> size, oldest first
    current: T | None = None
    sent_bytes: int = 0  # segment bytes published
    resent_bytes: int = 0  # segment bytes published at an offset sent before
    bad_segments: int = 0
    inits: int = 0  # init messages published
    retry: InitRetry = field(init=False)
    _sent_upto: dict[str, int] = field(default_factory=dict)  # file id -> end of bytes sent

    def __post_init__(self) -> None:
        self.retry = InitRetry(init_backoff(self.ack_timeout))

    def _start(self, file_id: str, size: int) -> T:
        raise NotImplementedError

    def _held(self, cur: T) -> int:
        """Where the next segment of ``cur`` starts."""
        raise NotImplementedError

    def _hold_until(self) -> float:
        """Nothing is sent before this time (0: no such wait)."""
        return 0.0

    def _step_aside(self, cur: T) -> None:
        """``cur`` goes back to the queue for prioritised files."""

    def _forget(self, file_id: str) -> None:
        """``file_id`` is done (completed or failed)."""
        self._sent_upto.pop(file_id, None)

    def add(self, file_id: str, size: int) -> None:
        if (self.current is None or self.current.file_id != file_id) and (
            file_id not in self.queue
        ):
            self.queue[file_id] = size

    def prioritise(self, file_ids: set[str]) -> None:
        """These files first (an encounter in teleconsultation now): to the head of the queue,
        and the file being sent steps aside for them (it resumes later from what the far end
        holds)."""
        cur = self.current
        if cur is not None and cur.file_id not in file_ids and (file_ids & set(self.queue)):
            self._step_aside(cur)
            self.queue = {cur.file_id: cur.size, **self.queue}
            self.current = None
        first = {f: s for f, s in self.queue.items() if f in file_ids}
        self.queue = {**first, **{f: s for f, s in self.queue.items() if f not in file_ids}}

    def connected(self) -> None:
        self.online = True
        if self.current is not None:
            self.current.phase, self.current.waiting = Phase.INIT, ""

    def disconnected(self) -> None:
        self.online = False
        cur = self.current
        if cur is not None:
            if cur.waiting.startswith("seg/"):
                self.sizer.interrupted()  # the link drops mid-segment: smaller ones
            cur.phase, cur.waiting = Phase.INIT, ""

    def deadline(self) -> float | None:
        cur = self.current
        if cur is not None and cur.waiting:
            return cur.timeout_at
        later = max(self.retry.retry_at, self._hold_until())
        return later if later and (cur is not None or self.queue) else None

    def next_send(self, now: float) -> Send | None:
        """The message to publish now (the caller publishes it, then :meth:`sent`), or None."""
        if not self.online:
            return None
        cur = self.current
        if cur is None:
            if not self.queue:
                return None
            file_id = next(iter(self.queue))
            cur = self.current = self._start(file_id, self.queue.pop(file_id))
        if cur.waiting:
            if now < cur.timeout_at:
                return None
            if cur.waiting == "init":  # nobody answered: wait longer each time
                self.retry.timed_out(now)
            cur.waiting = ""  # no answer: ask again (init, then what the far end lacks)
            cur.phase = Phase.INIT
        if now < self._hold_until():
            return None
        if cur.phase is Phase.INIT:
            if now < self.retry.retry_at:
                return None
            return SendInit(cur.file_id)
        held = self._held(cur)
        if cur.phase is Phase.FIN or held >= cur.size:
            return SendFin(cur.file_id)
        return SendSegment(cur.file_id, held, min(self.sizer.size, cur.size - held))

    def sent(self, send: Send, now: float) -> None:
        """``send`` went out on the link (published): wait for its answer."""
        cur = self.current
        if cur is None or cur.file_id != send.file_id:
            return
        timeout = self.ack_timeout
        if isinstance(send, SendSegment):
            cur.waiting, cur.pending_end = f"seg/{send.offset}", send.offset + send.length
            before = self._sent_upto.get(send.file_id, 0)
            self.sent_bytes += send.length
            self.resent_bytes += max(0, min(cur.pending_end, before) - send.offset)
            self._sent_upto[send.file_id] = max(before, cur.pending_end)
            timeout += self.sizer.transmit_s(send.length)
        else:
            cur.waiting = "init" if isinstance(send, SendInit) else "fin"
            self.inits += isinstance(send, SendInit)
        cur.sent_at, cur.timeout_at = now, now + timeout

    def _finish(self, outcome: Outcome) -> list[Outcome]:
        if self.current is not None:
            self._forget(self.current.file_id)
        self.current = None
        return [outcome]

    def idle(self) -> bool:
        return self.current is None and not self.queue


@dataclass
class _Current(Transfer):
    offset: int = 0  # what central holds durably
    mismatches: int = 0


@dataclass
class Uploader(FileQueue[_Current]):
    """The native mode: every answer from central carries the offset it holds durably."""

    def _start(self, file_id: str, size: int) -> _Current:
        return _Current(file_id, size)

    def _held(self, cur: _Current) -> int:
        return cur.offset

    def _step_aside(self, cur: _Current) -> None:
        if cur.waiting.startswith("seg/"):
            self.sizer.interrupted()
        self._sent_upto.pop(cur.file_id, None)  # what it sent before is not re-sent

    def on_ack(self, ack: FileAck) -> list[Outcome]:
        self.retry.answered()  # central serves files
        cur = self.current
        if cur is None or cur.file_id != ack.file_id:
            if ack.state is AckState.COMPLETE and ack.file_id in self.queue:
                del self.queue[ack.file_id]  # central holds it already
                return [Completed(ack.file_id)]
            return []
        if ack.state is AckState.COMPLETE:
            return self._finish(Completed(cur.file_id))
        if not cur.waiting or ack.reply_to != cur.waiting:
            return []  # a late answer to a message we gave up on: the next one is coming
        was_segment = cur.waiting.startswith("seg/")
        cur.waiting = ""
        if ack.state is AckState.UNKNOWN:
            cur.phase = Phase.INIT
        elif ack.state is AckState.MISMATCH:
            cur.mismatches += 1
            if cur.mismatches >= MAX_MISMATCHES:
                return self._finish(
                    Failed(cur.file_id, f"central found another sha256 {cur.mismatches} times")
                )
            cur.phase, cur.offset = Phase.INIT, 0
            self._sent_upto.pop(cur.file_id, None)  # a new attempt: not counted as re-sent
        else:
            if ack.state is AckState.BAD_SEGMENT:
                self.bad_segments += 1
            elif was_segment:
                self.sizer.acked()
            cur.offset = min(ack.offset, cur.size)
            cur.phase = Phase.FIN if cur.offset >= cur.size else Phase.SEGMENT
        return []
