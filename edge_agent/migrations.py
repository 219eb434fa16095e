"""The store's schema, only ever changed by appending a step here (never edit a shipped step)."""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("edge_agent")


@migrations()
def m001_initial(db: Database) -> None:
    # AUTOINCREMENT: a seq is never reused, even after readings are purged, so central can
    # trust "last contiguous seq" forever.
    db.execute(
        """
        CREATE TABLE readings (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            unit_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            quantity TEXT NOT NULL,
            value REAL,
            unit TEXT NOT NULL,
            loinc TEXT,
            mdc INTEGER,
            device_time TEXT,
            received_at TEXT NOT NULL,
            clock_source TEXT NOT NULL,
            flags TEXT NOT NULL DEFAULT '[]',
            absent_reason TEXT,
            context TEXT NOT NULL DEFAULT '[]',
            raw BLOB,
            encounter_id TEXT,
            batch_id TEXT,
            sent_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX readings_unsent ON readings(seq) WHERE sent_at IS NULL")
    db.execute(
        """
        CREATE TABLE rejects (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            device_id TEXT NOT NULL,
            received_at TEXT NOT NULL,
            reason TEXT NOT NULL,
            raw BLOB NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            device_id TEXT,
            detail TEXT NOT NULL DEFAULT ''
        )
        """
    )
    db.execute(
        """
        CREATE TABLE device_cursors (
            device_id TEXT PRIMARY KEY,
            cursor INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE batches (
            batch_id TEXT PRIMARY KEY,
            seq_from INTEGER NOT NULL,
            seq_to INTEGER NOT NULL,
            count INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            acked_at TEXT
        )
        """
    )


@migrations()
def m002_reading_position(db: Database) -> None:
    # The van's GPS position when the reading was taken (NULL: no recent fix).
    db.execute("ALTER TABLE readings ADD COLUMN latitude REAL")
    db.execute("ALTER TABLE readings ADD COLUMN longitude REAL")


@migrations()
def m003_agent_state(db: Database) -> None:
    # Small facts the running agent publishes for `edge-agent sync status` and requests the CLI
    # leaves for it (`sync now`): one JSON value per key.
    db.execute(
        "CREATE TABLE agent_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
        "updated_at TEXT NOT NULL)"
    )
