"""The store's disk state outside the store: a small status file, a reserve, free space.

Why a file beside the store and not only ``agent_state``: on a full disk the store may refuse
the very write that would say so. The running agent keeps the state in memory (its device
health) and also writes ``<store>.status.json`` (0600, written to a temporary name then
``os.replace``, so a reader sees the old or the new file, never half of one); the CLI reads it.

Why a reserve: writing that file (and the retention transaction, and the ``store.full``
event) needs a few blocks on a disk that has none. The agent keeps ``<store>.reserve``
(``[store] reserve_kib``, default 256 KiB) and deletes it when the disk fills, which leaves
room for exactly those writes; it is re-created once space returns. Readings held in memory
are written back only when the free space is above ``[store] resume_free_kib``, so the
reserve is not eaten by readings and the state does not flap.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from edge_agent.store.agent_lock import is_running


def status_path(store: Path) -> Path:
    return store.with_name(store.name + ".status.json")


def reserve_path(store: Path) -> Path:
    return store.with_name(store.name + ".reserve")


def write_status(store: Path, status: dict[str, Any]) -> bool:
    """Replace the status file; False (not raised) when the disk refuses it.

    When even the new file's one block is refused, the old file is overwritten in place,
    padded with spaces to its old length (its blocks are already allocated). That write is
    not atomic; a reader that catches it half-written sees unparsable JSON and reads again."""
    target = status_path(store)
    tmp = target.with_name(target.name + ".tmp")
    data = json.dumps({**status, "pid": os.getpid()}).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return _overwrite_in_place(target, data)
    return True


def _overwrite_in_place(target: Path, data: bytes) -> bool:
    try:
        fd = os.open(target, os.O_WRONLY)
    except OSError:
        return False
    try:
        old = os.fstat(fd).st_size
        if len(data) > max(old, 4096):
            return False
        os.pwrite(fd, data.ljust(old, b" "), 0)
        os.fsync(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def read_status(store: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(status_path(store).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    data["agent_running"] = isinstance(pid, int) and is_running(store, pid)
    return data


def ensure_reserve(store: Path, size: int) -> bool:
    """Create the reserve file (zeros, fsynced) if missing; False if there is no room."""
    path = reserve_path(store)
    if size <= 0 or (path.exists() and path.stat().st_size >= size):
        return True
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink()
        return False
    return True


def release_reserve(store: Path) -> int:
    """Delete the reserve; return the bytes it held (0 if there was none)."""
    path = reserve_path(store)
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


def free_bytes(store: Path) -> int:
    st = os.statvfs(store.parent)
    return st.f_bavail * st.f_frsize
