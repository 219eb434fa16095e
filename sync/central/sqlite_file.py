"""Central's SQLite file: created 0600, WAL with ``synchronous=FULL`` (checked), central's own
migrations applied. Central's opener, not the unit's (``edge_agent.store``): central never runs
the unit's key handling, SQLCipher, recovery or schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database, Migrations

from edge_agent.durable import create_private, wal_full
from edge_agent.errors import StoreError, StoreNotDurable


def open_sqlite(path: Path, migration_set: Migrations) -> Database:
    create_private(path)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    try:
        mode, sync = wal_full(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(
            "store.unreadable", f"{path}: not a readable SQLite central store ({exc})"
        ) from exc
    if mode != "wal" or sync != 2:
        conn.close()
        raise StoreNotDurable(str(path), f"journal_mode={mode}, synchronous={sync}; need WAL/FULL")
    db = Database(conn, strict=True)
    migration_set.apply(db)
    return db
