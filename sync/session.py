"""The sync session as a pure state machine: inputs in, actions out. No paho, SQL or clock.

Inputs: :meth:`connected`, :meth:`disconnected`, :meth:`batch_ready` (the outbox formed a
batch the session asked for), :meth:`central_ack`, :meth:`tick` (the time, injected).
Actions: :class:`Publish` (send or re-send a batch), :class:`MarkAcked` (central stored it:
mark its readings sent), :class:`Take` (form one more batch from the outbox if there is one).

Invariants (tested with hypothesis, ``tests/sync/test_session.py``): a batch is marked acked
only after central acknowledged it (marking is idempotent); duplicated and out-of-order acks
are harmless; at most ``max_in_flight`` batches are unacknowledged; nothing is published
while offline; a batch not acknowledged within ``ack_timeout`` is published again, and every
in-flight batch is published again after a reconnect (its deliveries are unknown).

The table of (state, input) -> behaviour:

    input         OFFLINE                                 ONLINE
    connected     -> ONLINE, republish all, take          (stay)
    disconnected  (stay)                                  -> OFFLINE
    batch_ready   keep it, publish on connect             publish, take
    central_ack   mark, forget the batch                  mark, forget the batch, take
    tick          nothing                                 republish overdue, take
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    OFFLINE = "offline"
    ONLINE = "online"


@dataclass(frozen=True)
class Publish:
    batch_id: str


@dataclass(frozen=True)
class MarkAcked:
    batch_id: str


@dataclass(frozen=True)
class Take:
    """Ask the outbox for one more batch (it answers with ``batch_ready`` or nothing)."""


Action = Publish | MarkAcked | Take


@dataclass
class Flight:
    published_at: float | None = None  # None: not yet published on this connection
    attempts: int = 0


@dataclass
class SyncSession:
    max_in_flight: int = 4
    ack_timeout: float = 30.0
    state: State = State.OFFLINE
    in_flight: dict[str, Flight] = field(default_factory=dict)
    taking: bool = False  # a Take is outstanding: do not ask twice

    def connected(self, now: float) -> list[Action]:
        self.state = State.ONLINE
        actions: list[Action] = []
        for batch_id, flight in self.in_flight.items():
            flight.published_at, flight.attempts = now, flight.attempts + 1
            actions.append(Publish(batch_id))
        return actions + self._take()

    def disconnected(self) -> list[Action]:
        self.state = State.OFFLINE
        for flight in self.in_flight.values():
            flight.published_at = None
        return []

    def batch_ready(self, batch_id: str | None, now: float) -> list[Action]:
        """The outbox's answer to :class:`Take` (``None``: nothing unsent)."""
        self.taking = False
        if batch_id is None:
            return []
        flight = self.in_flight.setdefault(batch_id, Flight())
        if self.state is State.OFFLINE:
            return []
        flight.published_at, flight.attempts = now, flight.attempts + 1
        return [Publish(batch_id), *self._take()]

    def central_ack(self, batch_id: str) -> list[Action]:
        if self.in_flight.pop(batch_id, None) is None:
            # Unknown here: already acked (a duplicate) or sent before a restart. The store
            # knows its batches: marking is idempotent and ignores ids it never recorded.
            return [MarkAcked(batch_id)]
        return [MarkAcked(batch_id), *self._take()]

    def tick(self, now: float) -> list[Action]:
        if self.state is State.OFFLINE:
            return []
        actions: list[Action] = []
        for batch_id, flight in self.in_flight.items():
            if flight.published_at is None or now - flight.published_at >= self.ack_timeout:
                flight.published_at, flight.attempts = now, flight.attempts + 1
                actions.append(Publish(batch_id))
        return actions + self._take()

    def _take(self) -> list[Action]:
        if self.state is State.ONLINE and not self.taking and (
            len(self.in_flight) < self.max_in_flight
        ):
            self.taking = True
            return [Take()]
        return []
