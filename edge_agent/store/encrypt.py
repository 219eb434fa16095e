"""``edge-agent db encrypt``: a plaintext store becomes an encrypted one, every row kept.

With the agent stopped (the store's sidecar lock taken exclusively, else refused):

1. the plain store's WAL is checkpointed into the file and truncated;
2. ``sqlcipher_export`` copies schema, rows and ``user_version`` into ``<name>.encrypting``
   (same folder, 0600), opened with the key; it is set to WAL and fsynced;
3. the copy is checked: it opens with the key and every table has as many rows as the plain
   store;
4. ``rename(<name>.encrypting, <name>)`` (atomic: the store is the plain one or the encrypted
   one, never half of each), then the folder is fsynced.

The plain file is removed (the rename replaces it) unless ``keep_plain``: then it stays as
``<name>.plain-<UTC stamp>`` (a hard link made before the rename, 0600), for a technician to
check and delete. Deleting a file on flash does not erase its blocks: a store that held
patient data unencrypted is only fully protected on a new or wiped disk.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.durable import fsync_path
from edge_agent.errors import StoreError
from edge_agent.store.connect import PLAIN_HEADER, file_kind
from edge_agent.store.key import StoreKey
from edge_agent.store.recovery import SIDE_FILES, lock_path


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    return {t: int(conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}


def encrypt_store(
    path: Path, key: StoreKey, *, keep_plain: bool = False, stamp: str | None = None
) -> dict[str, object]:
    """Encrypt the store at ``path`` in place; what was done (counts, the kept plain file)."""
    from sqlcipher3 import dbapi2 as cipher

    if not path.is_file():
        raise StoreError("store.missing", f"no store at {path}. Fix: check [store] path or --db")
    lock = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                "store.in_use",
                f"{path}: the store is open (the agent is running, or another "
                "command uses it). Fix: stop the agent (systemctl stop edge-agent), then run "
                "edge-agent db encrypt again",
            ) from None
        kind = file_kind(path)
        if kind != "plain":
            raise StoreError(
                "store.not_plain",
                f"{path}: not a plaintext SQLite store ({kind}); nothing "
                "was changed. Fix: an encrypted store needs no edge-agent db encrypt",
            )
        plain = sqlite3.connect(path, isolation_level=None)
        try:
            plain.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            before = _counts(plain)
        finally:
            plain.close()
        for suffix in SIDE_FILES:  # checkpointed: nothing in them belongs to the store now
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        target = path.with_name(path.name + ".encrypting")
        for suffix in ("", *SIDE_FILES):
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        conn = cipher.connect(str(path), isolation_level=None)  # no key: reads the plain file
        try:
            conn.execute(
                "ATTACH DATABASE ? AS encrypted KEY \"x'" + key.raw.hex() + "'\"", [str(target)]
            )
            conn.execute("SELECT sqlcipher_export('encrypted')")
            version = int(conn.execute("PRAGMA main.user_version").fetchone()[0])
            conn.execute(f"PRAGMA encrypted.user_version = {version}")
            conn.execute("DETACH DATABASE encrypted")
        finally:
            conn.close()
        check = cipher.connect(str(target), isolation_level=None)
        try:
            check.execute(key.pragma())
            check.execute("PRAGMA journal_mode=WAL")
            after = _counts(check)
            check.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            check.close()
        if after != before:
            raise StoreError(
                "store.encrypt_mismatch",
                f"{path}: the encrypted copy holds "
                f"{after}, the store {before}; nothing was changed. Fix: run "
                "edge-agent db check, then try again",
            )
        with open(target, "rb") as f:
            if f.read(16) == PLAIN_HEADER:
                raise StoreError(
                    "store.encrypt_failed", f"{target}: not encrypted; nothing was changed"
                )
        fsync_path(target)
        kept: Path | None = None
        if keep_plain:
            stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            kept = path.with_name(f"{path.name}.plain-{stamp}")
            os.link(path, kept)
            os.chmod(kept, 0o600)
        os.chmod(target, 0o600)
        os.replace(target, path)
        fsync_path(path.parent)
        return {"store": str(path), "rows": after, "plain_kept": str(kept) if kept else None}
    finally:
        os.close(lock)
