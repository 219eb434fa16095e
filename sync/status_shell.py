"""The I/O shell around :mod:`sync.status_report`: the unit's retained status on the link and
the "sync" snapshot in the store (what ``sync status`` reads), on change only, rate-limited.

:class:`StatusReporter` holds the throttle and the snapshot's bookkeeping; the sync daemon
(:mod:`sync.daemon`) calls it when the planner says the status is due and at the end of every
turn. Nothing here waits: a status publish that failed is tried again at a deadline.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from sqlite_utils import Database

from edge_agent.clock import utc_now
from edge_agent.errors import LinkError
from edge_agent.store.database import put_state
from edge_agent.store.writer import Store
from sync import topics
from sync.link import MqttLink
from sync.pacing import Pacer
from sync.status_report import StatusThrottle, status_payload

STATE_INTERVAL_S = 5.0  # the "sync" snapshot in the store (for `sync status`): at most this often


class Host(Protocol):
    """What the reporter needs of the daemon."""

    store: Store
    unit: str
    connected: bool
    backlog: int | None
    devices: Any
    pacer: Pacer

    def status(self) -> dict[str, Any]: ...

    def write_later(self, op: Callable[[Database], Any]) -> Future[Any]: ...


class StatusReporter:
    def __init__(self, host: Host, interval_s: float) -> None:
        self.host = host
        self.throttle = StatusThrottle(interval_s)
        self.hold: float | None = None  # a status publish that failed: try again then
        self.snapshot_at: float | None = None  # a changed snapshot waits until then
        self._state_written: Any = None
        self._state_at = 0.0

    def connected(self, interval_s: float) -> None:
        """A new connection: the status is said at once."""
        self.throttle = StatusThrottle(interval_s)
        self.hold = None

    def disconnected(self) -> None:
        self.hold = None

    def content(self) -> tuple[Any, Any]:
        return (self.host.backlog, self.host.devices)

    def status_at(self, now: float) -> float | None:
        """When the retained status may go: None when it has nothing new to say."""
        if not self.host.connected or not self.throttle.changed(self.content()):
            return None
        if self.hold is not None:
            return self.hold
        at = self.throttle.due(now)
        return now if at is None else at

    def body(self, state: str) -> bytes:
        host = self.host
        return status_payload(
            state, host.unit, host.store.epoch, host.backlog, host.devices, utc_now()
        )

    def publish(self, link: MqttLink, now: float) -> None:
        """The retained status, now (the planner said it is due)."""
        body = self.body("online")
        # A few hundred bytes, at most once an interval: sent at once and charged to the
        # cap (what follows waits for them), never slept on nor held behind a backlog.
        self.host.pacer.delay(len(body), now)
        self.hold = None
        try:
            link.publish(
                topics.STATUS.of(self.host.unit),
                body,
                retain=topics.STATUS.retain,
                content_type=topics.STATUS.content_type,
            )
            self.throttle.sent(self.content(), now)
        except LinkError:  # lost meanwhile: the disconnect event follows
            self.hold = now + 1.0

    def snapshot(self, stopped: bool = False) -> dict[str, Any]:
        return {**self.host.status(), "pid": os.getpid(), "stopped": stopped}

    def write_snapshot(self, now: float) -> None:
        """The store snapshot, when it changed: at most every STATE_INTERVAL_S, at once when
        the connection came or went."""
        snapshot = self.snapshot()
        key = {k: v for k, v in snapshot.items() if k != "updated_at"}
        self.snapshot_at = None
        if key != self._state_written:
            if now - self._state_at >= STATE_INTERVAL_S or (
                self._state_written is None
                or key["connected"] != self._state_written.get("connected")
            ):
                self._state_written, self._state_at = key, now
                self.host.write_later(functools.partial(put_state, key="sync", value=snapshot))
            else:
                self.snapshot_at = self._state_at + STATE_INTERVAL_S
