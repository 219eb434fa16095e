"""The sync loop's planner, pure: what to take, hold and wait for, and when to wake up.

Table tests for the decisions, hypothesis for the rules the loop's liveness rests on: offline
never takes, no wake-up is ever in the past while nothing can be done (the offline freeze was
a past linger kept while offline), and a turn that does what is due leaves no wake-up at once
(no spin)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync.planner import (
    Decision,
    Hold,
    Outlook,
    Take,
    Wait,
    deadlines,
    decide,
    due_held,
    files_may_send,
    status_due,
    take_alerts,
    wake_at,
)

NOW = 100.0
LIVE = Outlook(now=NOW, connected=True, waiting=3, oldest_at=99.0, batch_limit=50, linger_s=2.0)


@pytest.mark.parametrize(
    ("outlook", "decision"),
    [
        (LIVE, Hold(101.0)),  # young readings linger for company
        (replace(LIVE, oldest_at=97.5), Take()),  # the linger is over
        (replace(LIVE, waiting=50), Take()),  # a full batch: a drain takes at once
        (replace(LIVE, oldest_at=float("-inf")), Take()),  # a backlog from the last run
        (replace(LIVE, linger_s=0.0), Take()),  # no linger configured
        (replace(LIVE, connected=False, oldest_at=0.0), Wait()),  # offline never takes
        (replace(LIVE, room=False, oldest_at=0.0), Wait()),  # a full window waits for an ack
        (replace(LIVE, waiting=0), Wait()),  # nothing committed
        (replace(LIVE, files_urgent=True, oldest_at=0.0), Hold(None)),  # teleconsult files first
    ],
)
def test_decisions(outlook: Outlook, decision: Decision) -> None:
    assert decide(outlook) == decision


def test_the_wake_ups_of_a_live_unit() -> None:
    o = replace(
        LIVE, held=(100.5, 103.0), ack_at=130.0, status_at=110.0, snapshot_at=105.0, files_at=100.2
    )
    assert deadlines(o) == {
        "linger": 101.0,
        "pace": 100.5,
        "ack": 130.0,
        "status": 110.0,
        "snapshot": 105.0,
        "files": 100.2,
    }
    assert wake_at(o) == 100.2
    assert due_held(replace(o, now=101.0)) == 1 and due_held(replace(o, now=200.0)) == 2


def test_offline_with_a_past_linger_sleeps_until_an_event() -> None:
    """The offline freeze: a linger due in the past while the link is down woke the loop at
    once, every turn."""
    o = replace(
        LIVE,
        connected=False,
        oldest_at=10.0,
        held=(50.0,),
        ack_at=40.0,
        status_at=60.0,
        files_at=70.0,
    )
    assert deadlines(o) == {} and wake_at(o) is None
    assert replace(LIVE, connected=False).alerts is False
    assert not take_alerts(replace(o, alerts=True))


def test_files_go_while_readings_linger_not_before_a_batch_or_an_alert() -> None:
    assert files_may_send(LIVE)  # readings linger: a file segment fits meanwhile
    assert not files_may_send(replace(LIVE, oldest_at=0.0))  # a batch to take first
    assert not files_may_send(replace(LIVE, alerts=True))
    assert files_may_send(replace(LIVE, oldest_at=0.0, files_urgent=True))
    assert files_may_send(replace(LIVE, waiting=0))
    assert not files_may_send(replace(LIVE, waiting=0, connected=False))


def test_a_status_goes_when_its_time_comes_and_only_online() -> None:
    assert status_due(replace(LIVE, status_at=NOW))
    assert not status_due(replace(LIVE, status_at=NOW + 1))
    assert not status_due(replace(LIVE, status_at=NOW - 1, connected=False))
    assert not status_due(LIVE)  # nothing new to say


times = st.one_of(st.none(), st.floats(0.0, 200.0))
outlooks = st.builds(
    Outlook,
    now=st.just(NOW),
    connected=st.booleans(),
    room=st.booleans(),
    waiting=st.integers(-2, 120),
    oldest_at=st.one_of(st.none(), st.just(float("-inf")), st.floats(0.0, 200.0)),
    alerts=st.booleans(),
    batch_limit=st.integers(1, 100),
    linger_s=st.floats(0.0, 60.0),
    files_urgent=st.booleans(),
    held=st.lists(st.floats(0.0, 200.0), max_size=4).map(lambda xs: tuple(sorted(xs))),
    ack_at=times,
    status_at=times,
    snapshot_at=times,
    files_at=times,
    poll_at=times,
)


def doable(o: Outlook) -> bool:
    """Something the loop can do at ``now``."""
    due = [o.snapshot_at, o.poll_at]
    if o.connected:
        due += [o.ack_at, o.files_at if files_may_send(o) else None]
    return (
        isinstance(decide(o), Take)
        or due_held(o) > 0
        or status_due(o)
        or any(at is not None and at <= o.now for at in due)
    )


def after_turn(o: Outlook) -> Outlook:
    """What a turn that does everything due leaves behind (as the daemon does it)."""

    def done(at: float | None, when: float | None = None) -> float | None:
        return when if at is not None and at <= o.now else at

    take = isinstance(decide(o), Take)
    return replace(
        o,
        waiting=0 if take else o.waiting,
        oldest_at=None if take else o.oldest_at,
        held=o.held[due_held(o) :],
        status_at=None if status_due(o) else o.status_at,
        snapshot_at=done(o.snapshot_at),
        poll_at=done(o.poll_at, o.now + 1.0),
        files_at=done(o.files_at) if o.connected and files_may_send(o) else o.files_at,
        ack_at=done(o.ack_at, o.now + 30.0) if o.connected else o.ack_at,
    )


@given(outlooks)
def test_offline_never_takes(o: Outlook) -> None:
    offline = replace(o, connected=False)
    assert not isinstance(decide(offline), Take)
    assert not take_alerts(offline) and due_held(offline) == 0
    assert not status_due(offline) and not files_may_send(offline)
    assert set(deadlines(offline)) <= {"snapshot", "poll"}  # the store's, not the link's


@given(outlooks)
def test_no_wake_up_in_the_past_and_none_now_unless_something_can_be_done(o: Outlook) -> None:
    assert all(at >= o.now for at in deadlines(o).values())
    at = wake_at(o)
    if at is not None and at <= o.now:
        assert doable(o), deadlines(o)


@given(outlooks)
def test_a_turn_that_does_what_is_due_leaves_no_wake_up_at_once(o: Outlook) -> None:
    """No spin: the state after a turn never asks for another turn at the same instant."""
    at = wake_at(after_turn(o))
    assert at is None or at > o.now, deadlines(after_turn(o))


@given(outlooks)
def test_hold_is_always_for_the_future_and_take_only_with_readings(o: Outlook) -> None:
    decision = decide(o)
    if isinstance(decision, Hold) and decision.until is not None:
        assert decision.until > o.now
    if isinstance(decision, Take):
        assert o.connected and o.room and o.waiting > 0 and not o.files_urgent
