"""The sync session as a pure state machine: inputs in, actions out. No paho, SQL or clock.

Inputs: :meth:`~SyncSession.connected`, :meth:`~SyncSession.disconnected`,
:meth:`~SyncSession.batch_ready` (the outbox's answer to :class:`Take`),
:meth:`~SyncSession.puback` (the broker took or refused a publish),
:meth:`~SyncSession.central_ack`, :meth:`~SyncSession.tick` (the time, injected), and
:meth:`~SyncSession.restore` (batches recorded in flight before a restart).
Actions: :class:`Publish` (first send), :class:`Resend` (same batch id again),
:class:`MarkAcked` (central stored it: mark its readings sent), :class:`Take` (form one more
batch if the outbox has one), :class:`WaitUntil` (the next ack deadline: wake up by then).

Invariants (tested with hypothesis, ``tests/sync/test_session.py``): a batch is marked acked
only after central acknowledged it (marking is idempotent); duplicated and out-of-order acks
are harmless; a PUBACK never marks anything (the broker is not central); at most
``max_in_flight`` batches are unacknowledged; nothing is sent while offline; a batch not
acknowledged within ``ack_timeout`` is sent again, and every in-flight batch is sent again
after a reconnect (its deliveries are unknown).

The table of (state, input) -> behaviour (:data:`NEXT_STATE` holds the state column):

    input         OFFLINE                                 ONLINE
    connected     -> ONLINE, resend all, take             (stay) resend all, take
    disconnected  (stay)                                  -> OFFLINE, forget send times
    batch_ready   keep it, publish on connect             publish, take
    puback        (stay) note it                          note it; a refusal waits for timeout
    central_ack   mark, forget the batch                  mark, forget the batch, take
    tick          nothing                                 resend overdue, take, wait until

The reconnect policy is :class:`edge_agent.backoff.Backoff` (full jitter, injected random source).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    OFFLINE = "offline"
    ONLINE = "online"


class Input(StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    BATCH_READY = "batch_ready"
    PUBACK = "puback"
    CENTRAL_ACK = "central_ack"
    TICK = "tick"


NEXT_STATE: dict[tuple[State, Input], State] = {
    **{(s, Input.CONNECTED): State.ONLINE for s in State},
    **{(s, Input.DISCONNECTED): State.OFFLINE for s in State},
    **{
        (s, i): s
        for s in State
        for i in (Input.BATCH_READY, Input.PUBACK, Input.CENTRAL_ACK, Input.TICK)
    },
}


@dataclass(frozen=True)
class Publish:
    batch_id: str


@dataclass(frozen=True)
class Resend:
    batch_id: str


@dataclass(frozen=True)
class MarkAcked:
    batch_id: str


@dataclass(frozen=True)
class Take:
    """Ask the outbox for one more batch (it answers with ``batch_ready``). ``priority``: a
    batch of alert-range readings only, which travels outside the window (at most one)."""

    priority: bool = False


@dataclass(frozen=True)
class WaitUntil:
    """The earliest ack deadline (same clock as ``now``): call :meth:`SyncSession.tick` then."""

    at: float


Action = Publish | Resend | MarkAcked | Take | WaitUntil


@dataclass
class Flight:
    published_at: float | None = None  # None: not sent on this connection yet
    attempts: int = 0
    broker_ok: bool | None = None  # the last PUBACK: None = none yet
    priority: bool = False  # an alert batch: outside the window


@dataclass
class SyncSession:
    max_in_flight: int = 4
    ack_timeout: float = 30.0
    state: State = State.OFFLINE
    in_flight: dict[str, Flight] = field(default_factory=dict)
    taking: bool = False  # a Take is outstanding: do not ask twice
    taking_priority: bool = False
    central_seq: int = 0  # highest "last contiguous seq" central reported
    broker_refusals: int = 0

    def restore(self, batch_ids: list[str]) -> list[str]:
        """Batches recorded in flight by a previous run (they are re-sent on connect). Returns
        those beyond the window, which the caller releases back to the outbox."""
        room = max(0, self.max_in_flight - len(self.in_flight))
        for batch_id in batch_ids[:room]:
            self.in_flight.setdefault(batch_id, Flight(attempts=1))
        return batch_ids[room:]

    def restore_priority(self, batch_id: str) -> None:
        """An alert batch recorded in flight by a previous run (outside the window)."""
        self.in_flight.setdefault(batch_id, Flight(attempts=1, priority=True))

    def connected(self, now: float) -> list[Action]:
        self.state = NEXT_STATE[self.state, Input.CONNECTED]
        actions: list[Action] = [self._send(b, f, now) for b, f in self.in_flight.items()]
        return actions + self._take() + self._wait()

    def disconnected(self) -> list[Action]:
        self.state = NEXT_STATE[self.state, Input.DISCONNECTED]
        for flight in self.in_flight.values():
            flight.published_at = None
        return []

    def batch_ready(self, batch_id: str | None, now: float, priority: bool = False) -> list[Action]:
        """The outbox's answer to :class:`Take` (``None``: nothing unsent)."""
        self.state = NEXT_STATE[self.state, Input.BATCH_READY]
        if priority:
            self.taking_priority = False
        else:
            self.taking = False
        if batch_id is None:
            return []
        flight = self.in_flight.setdefault(batch_id, Flight(priority=priority))
        if self.state is State.OFFLINE:
            return []
        return [self._send(batch_id, flight, now), *self._take(), *self._wait()]

    def puback(self, batch_id: str, ok: bool) -> list[Action]:
        """The broker's answer to a publish. It says nothing about central: never marks. A
        refusal (not authorized, quota) is retried at the ack timeout like a lost message."""
        self.state = NEXT_STATE[self.state, Input.PUBACK]
        flight = self.in_flight.get(batch_id)
        if flight is not None:
            flight.broker_ok = ok
        if not ok:
            self.broker_refusals += 1
        return []

    def central_ack(self, batch_id: str, last_contiguous_seq: int | None = None) -> list[Action]:
        self.state = NEXT_STATE[self.state, Input.CENTRAL_ACK]
        if last_contiguous_seq is not None:
            self.central_seq = max(self.central_seq, last_contiguous_seq)
        if self.in_flight.pop(batch_id, None) is None:
            # Unknown here: already acked (a duplicate) or sent before a restart. The store
            # knows its batches: marking is idempotent and ignores ids it never recorded.
            return [MarkAcked(batch_id)]
        return [MarkAcked(batch_id), *self._take()]

    def tick(self, now: float) -> list[Action]:
        self.state = NEXT_STATE[self.state, Input.TICK]
        if self.state is State.OFFLINE:
            return []
        actions: list[Action] = [
            self._send(b, f, now)
            for b, f in self.in_flight.items()
            if f.published_at is None or now - f.published_at >= self.ack_timeout
        ]
        return actions + self._take() + self._wait()

    def _send(self, batch_id: str, flight: Flight, now: float) -> Publish | Resend:
        flight.published_at, flight.attempts = now, flight.attempts + 1
        flight.broker_ok = None
        return Publish(batch_id) if flight.attempts == 1 else Resend(batch_id)

    def alerts_waiting(self) -> list[Action]:
        """Alert-range readings wait in the outbox: one alert batch may travel outside the
        window, so an alert never waits behind a backlog."""
        busy = self.taking_priority or any(f.priority for f in self.in_flight.values())
        if self.state is State.ONLINE and not busy:
            self.taking_priority = True
            return [Take(priority=True)]
        return []

    def _take(self) -> list[Action]:
        window = sum(1 for f in self.in_flight.values() if not f.priority)
        if self.state is State.ONLINE and not self.taking and window < self.max_in_flight:
            self.taking = True
            return [Take()]
        return []

    def _wait(self) -> list[Action]:
        at = self.ack_deadline()
        return [] if at is None else [WaitUntil(at)]

    def ack_deadline(self) -> float | None:
        """The earliest ack deadline of the batches sent on this connection (None: none)."""
        times = [f.published_at for f in self.in_flight.values() if f.published_at is not None]
        return min(times) + self.ack_timeout if times else None
