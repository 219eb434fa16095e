"""One running agent per store: an exclusive ``flock`` held by ``edge-agent run`` for its life.

Two agents on one store would both answer the devices (each acknowledging its own monitor's
messages into the same store) and run two sync sessions that take over each other's MQTT
client. Each side of the agent has its lock file beside the store, ``<store>.acquire.lock``
and ``<store>.sync.lock`` (``--only acquire`` and ``--only sync`` may run as two services on one
store: they share only the store), holding the holder's pid. ``run`` takes its sides' locks
before it opens the store; a side already held refuses the start at once, naming the pid.

The kernel drops a ``flock`` when its process dies, however it dies (``kill -9`` included), so
a lock file left behind never blocks a restart. It is not the store's own ``<store>.lock``
(:class:`edge_agent.store.recovery.StoreGuard`: shared by every open of the store, exclusive
only to check and recover it).

:func:`holders` probes the locks (a shared lock tried without waiting, let go at once): the
status file's pid alone cannot tell a dead agent from a new process that got its pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from edge_agent.errors import StoreError

ROLES: Final = ("acquire", "sync")
# A prober holds a lock for microseconds: a start that meets one tries again this long.
PROBE_GRACE_S: Final = 0.5


def lock_path(store: Path, role: str) -> Path:
    return store.with_name(f"{store.name}.{role}.lock")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class AgentLock:
    """The locks of the sides this process runs; held until :meth:`release` or exit. Raises
    StoreError ``store.agent_running`` (exit 4) when a side is held, OSError when the lock
    file cannot be created."""

    def __init__(self, store: Path, roles: Sequence[str] = ROLES) -> None:
        self.store = Path(store)
        self._fds: list[int] = []
        try:
            for role in roles:
                self._fds.append(self._take(role))
        except BaseException:
            self.release()
            raise

    def _take(self, role: str) -> int:
        path = lock_path(self.store, role)
        # OSError (an unwritable or missing folder) as the store's own open would raise it
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + PROBE_GRACE_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if holder(path) is None and time.monotonic() < deadline:
                    time.sleep(0.02)  # only a passing prober (shared): bounded by the deadline
                    continue
                pid = _read_pid(fd)
                os.close(fd)
                who = f"pid {pid}" if pid is not None else "its pid not written yet"
                raise StoreError(
                    "store.agent_running",
                    f"{self.store}: another edge-agent is already running on this store "
                    f"({who}, {role}). Fix: only one agent may use a store: stop that one "
                    "first (systemctl stop edge-agent, or edge-agent sync status to see it)",
                    pid=pid,
                    role=role,
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return fd

    def release(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def __enter__(self) -> AgentLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: Path) -> int | None:
    """The pid in a held lock file (0 when held but its pid is not written yet); None when no
    agent holds it (or it does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def holders(store: Path) -> dict[str, int] | None:
    """The sides running on ``store`` and their pids; None when no lock file exists (no
    agent of this version ever ran on it)."""
    paths = {role: lock_path(Path(store), role) for role in ROLES}
    if not any(p.exists() for p in paths.values()):
        return None
    found: dict[str, int] = {}
    for role, path in paths.items():
        pid = holder(path)
        if pid is not None:
            found[role] = pid
    return found


def is_running(store: Path, pid: int) -> bool:
    """The agent ``pid`` (from a status file or snapshot) still runs on ``store``: it holds
    one of the store's agent locks (a dead agent's pid may belong to another process by
    now). A store no agent of this version ran on (no lock files) falls back to the pid."""
    held = holders(store)
    if held is None or 0 in held.values():  # none yet, or one whose pid is being written
        return pid_alive(pid)
    return pid in held.values()


def pid_alive(pid: object) -> bool:
    """Whether ``pid`` names a live process (a positive int; one of another user counts)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, the service user's
        return True
    return True
