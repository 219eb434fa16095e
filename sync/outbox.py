"""The outbox: plain SQL over the unit's store, run through the store's single writer.

A batch is every unsent reading in a seq range ``[seq_from, seq_to]`` taken above the highest
seq already in flight, so ranges never overlap and readings never become unsent again: marking
a batch sent by its range is exact. Batches are recorded before they are published, so an
acknowledgement that arrives after a restart is still recognised.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database

READING_COLUMNS = (
    "seq, id, device_id, quantity, value, unit, loinc, mdc, device_time, received_at, "
    "clock_source, flags, absent_reason, encounter_id, latitude, longitude"
)


def next_batch(db: Database, after_seq: int, limit: int) -> list[dict[str, Any]]:
    cursor = db.execute(
        f"SELECT {READING_COLUMNS} FROM readings WHERE sent_at IS NULL AND seq > ? "
        "ORDER BY seq LIMIT ?",
        [after_seq, limit],
    )
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def record_batch(
    db: Database, batch_id: str, seq_from: int, seq_to: int, count: int, created_at: str
) -> None:
    db.execute(
        "INSERT INTO batches (batch_id, seq_from, seq_to, count, created_at, attempts) "
        "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT(batch_id) DO UPDATE SET attempts = attempts + 1",
        [batch_id, seq_from, seq_to, count, created_at],
    )


def batch_range(db: Database, batch_id: str) -> tuple[int, int] | None:
    row = db.execute(
        "SELECT seq_from, seq_to FROM batches WHERE batch_id = ?", [batch_id]
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def mark_acked(db: Database, batch_id: str, acked_at: str) -> int:
    """Mark the batch's readings sent; returns how many changed (0 for a repeated ack)."""
    found = batch_range(db, batch_id)
    if found is None:
        return 0
    seq_from, seq_to = found
    cur = db.execute(
        "UPDATE readings SET sent_at = ?, batch_id = ? "
        "WHERE seq BETWEEN ? AND ? AND sent_at IS NULL",
        [acked_at, batch_id, seq_from, seq_to],
    )
    db.execute(
        "UPDATE batches SET acked_at = ? WHERE batch_id = ? AND acked_at IS NULL",
        [acked_at, batch_id],
    )
    return int(cur.rowcount)


def backlog(db: Database) -> int:
    return int(db.execute("SELECT count(*) FROM readings WHERE sent_at IS NULL").fetchone()[0])
