"""Opening the unit's store (0600, WAL, ``synchronous=FULL`` checked, migrations applied) and its
small key/value state (``agent_state``). Below the writer, the recovery and the encounters,
which all open the file through here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlite_utils import Database, Migrations

from edge_agent.clock import utc_now
from edge_agent.durable import create_private, wal_full
from edge_agent.errors import StoreError, StoreNotDurable
from edge_agent.store import connect as store_connect
from edge_agent.store.migrations import migrations


def open_database(path: Path, migration_set: Migrations = migrations) -> Database:
    """Open (creating 0600) and check durability, then apply pending migrations."""
    create_private(path)
    conn = store_connect.connect(path, check_same_thread=False, timeout=30)
    try:
        mode, sync = wal_full(conn)
    except store_connect.database_errors() as exc:
        conn.close()
        raise StoreError(
            "store.unreadable",
            f"{path}: not a readable SQLite store ({exc}){store_connect.encrypted_hint(path)}",
        ) from exc
    if mode != "wal" or sync != 2:
        conn.close()
        raise StoreNotDurable(str(path), f"journal_mode={mode}, synchronous={sync}; need WAL/FULL")
    db = Database(conn, strict=True)
    migration_set.apply(db)
    return db


def put_state(db: Database, key: str, value: Any) -> None:
    db.execute(
        "INSERT INTO agent_state (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) "
        "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [key, json.dumps(value), utc_now()],
    )


def get_state(db: Database, key: str) -> Any:
    row = db.execute("SELECT value FROM agent_state WHERE key = ?", [key]).fetchone()
    return None if row is None else json.loads(row[0])
