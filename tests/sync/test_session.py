"""The sync session state machine: every (state, input) pair, and hypothesis stateful runs
with dropped, duplicated and reordered acknowledgements and PUBACKs."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge_agent.backoff import Backoff
from sync.session import (
    NEXT_STATE,
    Action,
    Input,
    MarkAcked,
    Publish,
    Resend,
    State,
    SyncSession,
    Take,
    WaitUntil,
)


def test_state_input_table() -> None:
    s = SyncSession(max_in_flight=2, ack_timeout=10)
    assert s.tick(0) == [] and s.batch_ready("a", 0) == []  # offline: keep, do not publish
    assert s.connected(1) == [Publish("a"), Take(), WaitUntil(11)]
    assert s.batch_ready("b", 2) == [Publish("b"), WaitUntil(11)]  # window full (2): no Take
    assert s.puback("b", ok=True) == []  # the broker has it: central may not, nothing marked
    assert s.tick(5) == [WaitUntil(11)]
    assert s.tick(11) == [Resend("a"), WaitUntil(12)]  # a overdue
    assert s.central_ack("b", last_contiguous_seq=7) == [MarkAcked("b"), Take()]
    assert s.central_seq == 7
    assert s.central_ack("b", 3) == [MarkAcked("b")]  # duplicate: harmless, no new Take
    assert s.central_seq == 7  # an older "last contiguous seq" does not go backwards
    assert s.batch_ready(None, 12) == []  # nothing unsent
    assert s.disconnected() == [] and s.state is State.OFFLINE
    assert s.central_ack("a") == [MarkAcked("a")]  # an ack can arrive offline
    assert s.tick(100) == []


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Input))
def test_every_state_input_pair_follows_the_table(state: State, event: Input) -> None:
    s = SyncSession(max_in_flight=2, ack_timeout=10, state=state)
    s.restore(["old"])
    calls: dict[Input, Callable[[], list[Action]]] = {
        Input.CONNECTED: lambda: s.connected(1),
        Input.DISCONNECTED: s.disconnected,
        Input.BATCH_READY: lambda: s.batch_ready("new", 1),
        Input.PUBACK: lambda: s.puback("old", ok=False),
        Input.CENTRAL_ACK: lambda: s.central_ack("old"),
        Input.TICK: lambda: s.tick(50),
    }
    actions = calls[event]()
    assert s.state is NEXT_STATE[state, event]
    sends = [a for a in actions if isinstance(a, Publish | Resend)]
    if s.state is State.OFFLINE:
        assert sends == [] and Take() not in actions
    if event is Input.CENTRAL_ACK:
        assert actions[0] == MarkAcked("old") and "old" not in s.in_flight
    else:
        assert not any(isinstance(a, MarkAcked) for a in actions)
    if event in (Input.CONNECTED,) or (event is Input.TICK and state is State.ONLINE):
        assert Resend("old") in sends  # restored batches go out again under their own id


def test_restore_keeps_the_window_and_hands_back_the_rest() -> None:
    s = SyncSession(max_in_flight=2)
    assert s.restore(["a", "b", "c"]) == ["c"]
    assert s.connected(0) == [Resend("a"), Resend("b"), WaitUntil(30)]


def test_an_unacknowledged_batch_is_sent_again_after_the_timeout() -> None:
    s = SyncSession(max_in_flight=1, ack_timeout=5)
    s.connected(0)
    assert s.batch_ready("a", 0) == [Publish("a"), WaitUntil(5)]
    assert s.puback("a", ok=False) == [] and s.broker_refusals == 1  # retried at the timeout
    assert s.tick(4.9) == [WaitUntil(5)]
    assert s.tick(5.0) == [Resend("a"), WaitUntil(10)]
    s.disconnected()
    assert s.connected(6) == [Resend("a"), WaitUntil(11)]  # reconnect: send again at once


def test_backoff_is_full_jitter_capped_and_reset() -> None:
    b = Backoff(base=1, cap=8, rng=random.Random(3), floor=1)
    delays = [b.next_delay() for _ in range(200)]
    assert all(1 <= d <= 8 for d in delays)
    assert max(delays[:1]) == 1 and max(delays[10:]) > 6  # grows to the cap
    assert len({round(d, 3) for d in delays[10:]}) > 100  # spread: units do not sync up
    b.reset()
    assert b.next_delay() == 1


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = SyncSession(max_in_flight=3, ack_timeout=5.0)
        self.now = 0.0
        self.next_id = 0
        self.take_pending = False
        self.published: set[str] = set()
        self.pubacks_in_transit: list[str] = []
        self.acked_by_central: set[str] = set()
        self.marked: set[str] = set()
        self.acks_in_transit: list[str] = []

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Publish | Resend):
                assert self.s.state is State.ONLINE, "sent while offline"
                assert isinstance(action, Resend) == (action.batch_id in self.published)
                self.published.add(action.batch_id)
                self.pubacks_in_transit.append(action.batch_id)
            elif isinstance(action, MarkAcked):
                assert action.batch_id in self.acked_by_central, "marked without a central ack"
                self.marked.add(action.batch_id)
            elif isinstance(action, WaitUntil):
                assert action.at > self.now
            else:
                assert not self.take_pending, "asked the outbox twice"
                self.take_pending = True

    @rule()
    def connect(self) -> None:
        self.apply(self.s.connected(self.now))

    @rule()
    def disconnect(self) -> None:
        self.apply(self.s.disconnected())
        self.pubacks_in_transit.clear()

    @precondition(lambda self: self.take_pending)
    @rule(available=st.booleans())
    def outbox_answers(self, available: bool) -> None:
        self.take_pending = False
        batch = None
        if available:
            batch = f"b{self.next_id}"
            self.next_id += 1
        self.apply(self.s.batch_ready(batch, self.now))

    @precondition(lambda self: self.pubacks_in_transit)
    @rule(data=st.data(), ok=st.booleans())
    def broker_answers(self, data: st.DataObject, ok: bool) -> None:
        i = data.draw(st.integers(0, len(self.pubacks_in_transit) - 1))
        self.apply(self.s.puback(self.pubacks_in_transit.pop(i), ok))

    @precondition(lambda self: self.published)
    @rule(data=st.data())
    def central_stores(self, data: st.DataObject) -> None:
        batch = data.draw(st.sampled_from(sorted(self.published)))
        self.acked_by_central.add(batch)
        self.acks_in_transit.append(batch)

    @precondition(lambda self: self.acks_in_transit)
    @rule(data=st.data(), duplicate=st.booleans(), drop=st.booleans())
    def ack_arrives(self, data: st.DataObject, duplicate: bool, drop: bool) -> None:
        i = data.draw(st.integers(0, len(self.acks_in_transit) - 1))  # any order
        batch = self.acks_in_transit[i] if duplicate else self.acks_in_transit.pop(i)
        if not drop:
            self.apply(self.s.central_ack(batch))

    @rule(seconds=st.floats(0, 20))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.apply(self.s.tick(self.now))
        if self.s.state is State.ONLINE:  # after a tick, nothing in flight is overdue
            for flight in self.s.in_flight.values():
                assert flight.published_at is not None
                assert self.now - flight.published_at < self.s.ack_timeout

    @invariant()
    def window_is_bounded(self) -> None:
        assert len(self.s.in_flight) <= self.s.max_in_flight

    @invariant()
    def nothing_marked_is_still_in_flight(self) -> None:
        assert not self.marked & set(self.s.in_flight)

    @invariant()
    def every_batch_in_flight_is_unmarked_until_central_acks(self) -> None:
        assert self.marked <= self.acked_by_central


TestSessionMachine = SessionMachine.TestCase
