"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``), without a dependency.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace) and, with
``WatchdogSec=``, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``). The agent sends one datagram per
state: ``READY=1`` once the store is open and the drivers started, ``WATCHDOG=1`` every half
watchdog period while it is healthy, ``STOPPING=1`` on the way out. Outside systemd (no
``NOTIFY_SOCKET``) every call does nothing.

Healthy (:func:`should_ping`) means the event loop turns *and* the store's writer answers.
The loop turns when the lag monitor (:mod:`edge_agent.service.loop_lag`) woke recently and on
time: a loop that still turns now and then but makes every task wait longer than the stall threshold
(a task that blocks between its yields) is stalled, even though the ping task itself gets a
turn now and then. The writer answers when the empty operation submitted at the previous
round committed (:func:`writer_answering`). A stalled loop or a writer stuck in a commit (a
dead disk, a hung fsync) thus stops the pings, and systemd restarts the unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_agent.service.loop_lag import LagMonitor
    from edge_agent.store.writer import Store

log = logging.getLogger(__name__)


def notify_address(environ: Mapping[str, str]) -> str | None:
    """The socket address systemd gave, with ``@`` as the abstract namespace's NUL."""
    path = environ.get("NOTIFY_SOCKET", "")
    if not path or not (path.startswith("/") or path.startswith("@")):
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def watchdog_period(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog period in seconds, if systemd asked this process for pings."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner and owner != str(pid):
        return None
    return int(usec) / 1_000_000


def writer_answering(alive: bool, probe_done: bool | None) -> bool:
    """Whether the store's writer is healthy: its thread alive, and the empty operation sent
    at the previous round committed (``None``: no probe sent yet)."""
    return alive and probe_done is not False


def should_ping(loop_turning: bool, writer_ok: bool) -> bool:
    """``WATCHDOG=1`` only when both live: the event loop turns on time and the writer
    answers."""
    return loop_turning and writer_ok


class Notifier:
    """Sends notify messages to systemd; does nothing outside it."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = notify_address(env)
        self.watchdog_s = watchdog_period(env, os.getpid())
        self.sent: list[str] = []  # what was sent (for status and tests)

    @property
    def active(self) -> bool:
        return self.address is not None

    def send(self, message: str) -> bool:
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message.encode(), self.address)
        except OSError as exc:  # systemd gone or the socket not ours: nothing to tell
            log.warning("service: cannot notify systemd: %s", exc.strerror or exc)
            return False
        self.sent.append(message)
        return True

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.send("STOPPING=1")

    async def watchdog(
        self, store: Store, stop: asyncio.Event, loop: LagMonitor | None = None
    ) -> None:
        """Ping every half period while the loop turns on time (``loop``: the agent's lag
        monitor; without it, that the ping task runs at all) and the writer answers."""
        if self.watchdog_s is None or self.address is None:
            return
        interval = self.watchdog_s / 2
        probe: Future[Any] | None = None
        silent: str | None = None
        while not stop.is_set():
            done = None if probe is None else probe.done()
            writer_ok = writer_answering(store.writer_alive(), done)
            turning = loop is None or loop.turning()
            if should_ping(turning, writer_ok):
                self.send("WATCHDOG=1")
                silent = None
            elif silent is None:
                silent = "loop" if not turning else "writer"
                log.error(
                    "service: %s; watchdog pings stop (systemd restarts the agent)",
                    "the event loop is stalled"
                    if not turning
                    else "the store's writer does not answer",
                )
            if writer_ok and (probe is None or done):
                with contextlib.suppress(Exception):  # a closed store: no probe, no ping
                    probe = store.submit(_nothing)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


def _nothing(db: Any) -> None:
    """The empty operation the watchdog sends the writer: its commit writes nothing."""
