"""Durability on disk: fsync a file, or a directory after a rename or a create in it (the
one helper every writer uses: the store's recovery and encryption, attachments, drop folders,
config edits, central's files and exports)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any


def fsync_path(path: Path | str) -> None:
    """fsync ``path``: a file's data, or a directory's entries (so a rename in it survives a
    power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: Path) -> None:
    """Create ``path`` (and its folder) 0600 from the first byte, or make it 0600: SQLite gives
    its -wal and -shm files the database file's mode. Created only when missing: closing a
    descriptor of a database this process has open drops every POSIX lock SQLite holds on it
    (the writer's too), and another process may then checkpoint and remove the WAL under it
    ("malformed")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    os.chmod(path, 0o600)


def wal_full(conn: Any) -> tuple[str, int]:
    """Ask a fresh SQLite connection for WAL, ``synchronous=FULL``, foreign keys and a 30 s
    busy timeout; returns (journal mode, synchronous) as it then reports them, for the caller
    to refuse anything less (in WAL mode NORMAL may lose the last commits on power loss)."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return str(mode).lower(), int(sync)
