"""The sync session state machine: every (state, input) pair, and hypothesis stateful runs
with dropped, duplicated and reordered acknowledgements."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sync.session import MarkAcked, Publish, State, SyncSession, Take


def test_state_input_table() -> None:
    s = SyncSession(max_in_flight=2, ack_timeout=10)
    assert s.tick(0) == [] and s.batch_ready("a", 0) == []  # offline: keep, do not publish
    assert s.connected(1) == [Publish("a"), Take()]
    assert s.batch_ready("b", 2) == [Publish("b")]  # window full (2): no Take
    assert s.tick(5) == []
    assert s.tick(11) == [Publish("a")]  # a overdue
    assert s.central_ack("b") == [MarkAcked("b"), Take()]
    assert s.central_ack("b") == [MarkAcked("b")]  # duplicate: harmless, no new Take
    assert s.batch_ready(None, 12) == []  # nothing unsent
    assert s.disconnected() == [] and s.state is State.OFFLINE
    assert s.central_ack("a") == [MarkAcked("a")]  # an ack can arrive offline
    assert s.tick(100) == []


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = SyncSession(max_in_flight=3, ack_timeout=5.0)
        self.now = 0.0
        self.next_id = 0
        self.take_pending = False
        self.published: set[str] = set()
        self.acked_by_central: set[str] = set()
        self.marked: set[str] = set()
        self.acks_in_transit: list[str] = []

    def apply(self, actions: list[Publish | MarkAcked | Take]) -> None:
        for action in actions:
            if isinstance(action, Publish):
                assert self.s.state is State.ONLINE, "published while offline"
                self.published.add(action.batch_id)
            elif isinstance(action, MarkAcked):
                assert action.batch_id in self.acked_by_central, "marked without a central ack"
                self.marked.add(action.batch_id)
            else:
                assert not self.take_pending, "asked the outbox twice"
                self.take_pending = True

    @rule()
    def connect(self) -> None:
        self.apply(self.s.connected(self.now))

    @rule()
    def disconnect(self) -> None:
        self.apply(self.s.disconnected())

    @precondition(lambda self: self.take_pending)
    @rule(available=st.booleans())
    def outbox_answers(self, available: bool) -> None:
        self.take_pending = False
        batch = None
        if available:
            batch = f"b{self.next_id}"
            self.next_id += 1
        self.apply(self.s.batch_ready(batch, self.now))

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


TestSessionMachine = SessionMachine.TestCase


def test_an_unacknowledged_batch_is_published_again_after_the_timeout() -> None:
    s = SyncSession(max_in_flight=1, ack_timeout=5)
    s.connected(0)
    assert s.batch_ready("a", 0) == [Publish("a")]
    assert s.tick(4.9) == []
    assert s.tick(5.0) == [Publish("a")]
    s.disconnected()
    assert s.connected(6) == [Publish("a")]  # reconnect: publish again at once
