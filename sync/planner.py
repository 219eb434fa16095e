"""What the sync loop does next, and when it wakes: pure (the state in, decisions out).

The daemon (:mod:`sync.daemon`) describes where it stands in an :class:`Outlook` (connected?,
readings waiting for a batch and since when, alerts, the window, batches held by the uplink
cap, the status and snapshot it has to write, the files sender's own deadline) and asks:

* :func:`decide`: for ordinary readings, :class:`Take` a batch now, :class:`Hold` them (they
  linger for company until a time, or teleconsultation files go first) or :class:`Wait` (nothing
  to take, offline, or the window is full: an event will say when);
* :func:`due_held`: how many batches held by the uplink cap may go now;
* :func:`status_due`, :func:`files_may_send`;
* :func:`deadlines`: the named times to wake up, recomputed from the state at the end of every
  turn, never accumulated. A deadline exists only while the thing it waits for can be done when
  it comes: offline, nothing lingers, nothing is paced, no status is due. So no deadline is ever
  in the past while nothing can be done (a past linger kept while offline was the offline
  freeze: every later turn due at once).

Same clock throughout: ``time.monotonic()`` in the daemon, any float in tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.linger import take_at


@dataclass(frozen=True)
class Outlook:
    now: float
    connected: bool
    room: bool = True  # the window has room for one more ordinary batch
    waiting: int = 0  # readings committed and in no batch yet (an estimate, never below)
    oldest_at: float | None = None  # when the oldest of them arrived (-inf: a backlog)
    alerts: bool = False  # alert-range readings wait for a batch of their own
    batch_limit: int = 100
    linger_s: float = 0.0
    files_urgent: bool = False  # the encounter in teleconsultation now: its files first
    held: tuple[float, ...] = ()  # when each batch held by the uplink cap may go, in order
    ack_at: float | None = None  # the session's earliest ack deadline
    status_at: float | None = None  # a changed status may go then (None: nothing to say)
    snapshot_at: float | None = None  # the store snapshot may be written then (None: same)
    files_at: float | None = None  # the files sender's own deadline
    poll_at: float | None = None  # look for another process's commits (``--only sync``)


@dataclass(frozen=True)
class Take:
    """Take a batch of ordinary readings now."""


@dataclass(frozen=True)
class Hold:
    """Readings wait: for company until ``until`` (a linger), or behind teleconsultation
    files (``until`` None: the files sender says when it is done)."""

    until: float | None


@dataclass(frozen=True)
class Wait:
    """Nothing to take now, and nothing to wake up for: an event (a commit, an ack, a
    reconnect) changes that."""


Decision = Take | Hold | Wait


def decide(o: Outlook) -> Decision:
    """Take, hold or wait, for ordinary readings (alerts: :func:`take_alerts`)."""
    if not o.connected or not o.room or o.waiting <= 0:
        return Wait()  # offline never takes; a full window waits for an ack
    if o.files_urgent:
        return Hold(None)
    when = take_at(
        o.now,
        waiting=o.waiting,
        oldest_at=o.oldest_at,
        batch_limit=o.batch_limit,
        linger_s=o.linger_s,
        alerts=False,
    )
    return Take() if when is None else Hold(when)


def take_alerts(o: Outlook) -> bool:
    """Alert-range readings leave at once, outside the window (the session keeps it to one)."""
    return o.connected and o.alerts


def due_held(o: Outlook) -> int:
    """How many of the held batches may be published now (in order; none offline)."""
    if not o.connected:
        return 0
    return next((i for i, at in enumerate(o.held) if at > o.now), len(o.held))


def status_due(o: Outlook) -> bool:
    return o.connected and o.status_at is not None and o.status_at <= o.now


def files_may_send(o: Outlook) -> bool:
    """One file message, when no alert and no batch to take waits (files go while readings
    linger, and before the backlog during a teleconsultation)."""
    if not o.connected or o.alerts:
        return False
    return o.waiting <= 0 or o.files_urgent or isinstance(decide(o), Hold)


def deadlines(o: Outlook) -> dict[str, float]:
    """The named times to wake up, never before ``now``: each only while what it waits for
    can be done then. One at ``now`` means something can be done at once."""
    named: dict[str, float | None] = {"snapshot": o.snapshot_at, "poll": o.poll_at}
    if o.connected:
        decision = decide(o)
        named.update(
            linger=decision.until if isinstance(decision, Hold) else None,
            take=o.now if isinstance(decision, Take) else None,
            pace=o.held[0] if o.held else None,
            ack=o.ack_at,
            status=o.status_at,
            files=o.files_at if files_may_send(o) else None,
        )
    return {name: max(at, o.now) for name, at in named.items() if at is not None}


def wake_at(o: Outlook) -> float | None:
    """The next wake-up (None: only an event wakes the loop)."""
    return min(deadlines(o).values(), default=None)
