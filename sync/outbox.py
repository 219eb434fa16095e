"""The outbox: plain SQL over the unit's store, run through the store's single writer
(``store.submit(lambda db: outbox.next_batch(db, 200))``).

A batch is a seq range ``[seq_from, seq_to]`` holding every reading of that range that was
unsent when the batch was formed; ranges of batches not yet acknowledged (in flight) never
overlap, and seqs are only ever assigned upwards by the same writer, so no reading can join a
range after its batch is recorded. Marking a batch sent by its range is therefore exact.
Batches are recorded before they are published and stay in flight across restarts, so a
restarted agent re-sends the same batch ids and an ack that arrives late is still recognised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from edge_agent.store import utc_now

READING_COLUMNS = (
    "seq, id, device_id, quantity, value, unit, loinc, mdc, device_time, received_at, "
    "clock_source, flags, absent_reason, encounter_id, latitude, longitude"
)


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    seq_from: int
    seq_to: int
    count: int
    created_at: str
    attempts: int


def _rows(db: Database, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = db.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def next_batch(db: Database, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` unsent readings by seq, outside every in-flight range, forming one
    contiguous range that overlaps no in-flight batch (it stops below the next one)."""
    ranges = [(r.seq_from, r.seq_to) for r in in_flight(db)]  # a handful: the window
    after = 0
    while True:  # the lowest unsent seq not inside an in-flight range (partial index)
        first = db.execute(
            "SELECT min(seq) FROM readings WHERE sent_at IS NULL AND seq > ?", [after]
        ).fetchone()[0]
        if first is None:
            return []
        inside = [hi for lo, hi in ranges if lo <= first <= hi]
        if not inside:
            break
        after = inside[0]
    bound = min((lo for lo, _ in ranges if lo > first), default=2**62)
    return _rows(
        db,
        f"SELECT {READING_COLUMNS} FROM readings WHERE sent_at IS NULL AND seq >= ? AND seq < ? "
        "ORDER BY seq LIMIT ?",
        [first, bound, limit],
    )


def batch_readings(db: Database, batch_id: str) -> list[dict[str, Any]]:
    """The unsent readings of a recorded batch (to encode it again after a restart)."""
    found = batch_range(db, batch_id)
    if found is None:
        return []
    return _rows(
        db,
        f"SELECT {READING_COLUMNS} FROM readings WHERE sent_at IS NULL AND seq BETWEEN ? AND ? "
        "ORDER BY seq",
        list(found),
    )


def record_batch(
    db: Database, batch_id: str, seq_from: int, seq_to: int, count: int,
    created_at: str | None = None,
) -> None:
    """Record a batch as in flight (again: one more attempt) before it is published."""
    db.execute(
        "INSERT INTO batches (batch_id, seq_from, seq_to, count, created_at, attempts) "
        "VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT(batch_id) DO UPDATE SET attempts = attempts + 1",
        [batch_id, seq_from, seq_to, count, created_at or utc_now()],
    )


def note_attempt(db: Database, batch_id: str) -> None:
    db.execute("UPDATE batches SET attempts = attempts + 1 WHERE batch_id = ?", [batch_id])


def release(db: Database, batch_id: str) -> None:
    """Forget an unacknowledged batch: its readings can be taken into a new one. A late ack
    for it is then unknown (harmless); central stores the re-sent readings as duplicates."""
    db.execute("DELETE FROM batches WHERE batch_id = ? AND acked_at IS NULL", [batch_id])


def batch_range(db: Database, batch_id: str) -> tuple[int, int] | None:
    row = db.execute(
        "SELECT seq_from, seq_to FROM batches WHERE batch_id = ?", [batch_id]
    ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


def mark_acked(db: Database, batch_id: str, acked_at: str | None = None) -> int:
    """Mark exactly the batch's readings sent; returns how many changed. A repeated ack, or
    an ack for a batch this store never recorded, changes nothing."""
    found = batch_range(db, batch_id)
    if found is None:
        return 0
    at = acked_at or utc_now()
    cur = db.execute(
        "UPDATE readings SET sent_at = ?, batch_id = ? "
        "WHERE seq BETWEEN ? AND ? AND sent_at IS NULL",
        [at, batch_id, found[0], found[1]],
    )
    db.execute(
        "UPDATE batches SET acked_at = ? WHERE batch_id = ? AND acked_at IS NULL", [at, batch_id]
    )
    return int(cur.rowcount)


def in_flight(db: Database) -> list[BatchRecord]:
    """Recorded batches central has not acknowledged, oldest first."""
    return [
        BatchRecord(str(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4]), int(r[5]))
        for r in db.execute(
            "SELECT batch_id, seq_from, seq_to, count, created_at, attempts FROM batches "
            "WHERE acked_at IS NULL ORDER BY seq_from"
        ).fetchall()
    ]


def backlog(db: Database) -> int:
    """Readings not yet acknowledged by central (in flight or not yet taken)."""
    return int(db.execute("SELECT count(*) FROM readings WHERE sent_at IS NULL").fetchone()[0])


def next_alerts(db: Database, after_seq: int, limit: int = 20) -> tuple[list[dict[str, Any]], int]:
    """Readings flagged ``alert`` above ``after_seq`` (the priority path), and the seq up to
    which the search went (the new cursor)."""
    top = db.execute("SELECT max(seq) FROM readings").fetchone()[0] or 0
    rows = _rows(
        db,
        f"SELECT {READING_COLUMNS} FROM readings WHERE seq > ? AND seq <= ? "
        "AND flags LIKE '%\"alert\"%' ORDER BY seq LIMIT ?",
        [after_seq, top, limit],
    )
    return rows, (rows[-1]["seq"] if len(rows) == limit else top)
