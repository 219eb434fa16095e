"""The outbox: plain SQL over the unit's store. Batches are *sets* of readings.

A batch is recorded in the transaction that forms it: each of its readings gets the batch's id
(``readings.batch_id``) before anything is published, so a reading belongs to at most one batch
in flight, an ack marks exactly the readings that batch carried (never a neighbour that shares
its seq range, never a reading re-queued by ``resend-from``), and a restarted agent re-sends the
same batch ids with the same readings. Alert-range readings (``priority = 1``) are taken first,
into batches of their own, so they never wait behind a backlog. Taking reads only an index
(``readings_outbox``): an empty outbox costs one index probe. No statement of taking or
acknowledging reads the store's history (readings central already holds): each goes through an
index of unsent readings or a key, whatever the store's size (tests/sync/test_hot_paths.py
plans every one of them).

Reads (:func:`next_batch`, :func:`batch_readings`, :func:`backlog`...) may run on a read
connection; writes (:func:`record_batch`, :func:`mark_acked`, :func:`release`) go through the
store's writer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from edge_agent.clock import utc_now

# The codec's rows: the reading (its context: OBX-11 result status...; its source record key),
# then what :func:`add_context` adds once per batch, not once per row: the unit's time zone
# (for device times without one: agent_state 'unit-timezone', written by the agent at start),
# its encounter (JSON: the patient's identifier, when and where), and what its device told us
# about itself (JSON, edge_agent/store/device_facts.py: the FHIR Device).
READING_COLUMNS = (
    "seq, id, device_id, quantity, value, unit, loinc, mdc, device_time, received_at, "
    "clock_source, flags, absent_reason, encounter_id, latitude, longitude, priority, "
    "context, source_key, attributed_at"
)
_ENCOUNTER_JSON = (
    "json_object('patient_system', patient_system, 'patient_value', patient_value, "
    "'opened_at', opened_at, 'closed_at', closed_at, 'practitioner_role', practitioner_role, "
    "'latitude', latitude, 'longitude', longitude, 'altitude', altitude)"
)
_FACTS_JSON = (
    "json_object('serial', serial, 'system_id', system_id, 'mac', mac, 'manufacturer', "
    "manufacturer, 'model', model, 'firmware', firmware, 'mdc_type', mdc_type, 'version', "
    "updated_at, 'acked', acked_version)"
)
_CHUNK = 500  # values bound per IN (...): far below SQLite's limit
_OUTBOX = "INDEXED BY readings_outbox WHERE sent_at IS NULL AND batch_id IS NULL"


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    seq_from: int
    seq_to: int
    count: int
    created_at: str
    attempts: int
    priority: int = 0


def _rows(db: Database, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    cursor = db.execute(sql, list(params))
    columns = [d[0] for d in cursor.description]
    return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def readings(db: Database, where: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    """The codec's rows of the readings ``where`` selects (``... ORDER BY``/``LIMIT`` may
    follow the condition; it may start with ``INDEXED BY index``), with their context
    (:func:`add_context`)."""
    joint = "" if where.startswith("INDEXED BY ") else "WHERE "
    return add_context(
        db, _rows(db, f"SELECT {READING_COLUMNS} FROM readings {joint}{where}", params)
    )


def add_context(db: Database, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``timezone``, ``encounter`` and ``device_facts`` to each row: one query for the
    time zone, one per distinct encounter and device set (never one per row); each JSON text
    is built by SQLite, exactly as a per-row subquery built it."""
    if not rows:
        return rows
    row = db.execute(
        "SELECT json_extract(value, '$') FROM agent_state WHERE key = 'unit-timezone'"
    ).fetchone()
    timezone = None if row is None else row[0]
    encounters = _json_by_key(
        db, "id", _ENCOUNTER_JSON, "encounters", {r["encounter_id"] for r in rows} - {None}
    )
    facts = _json_by_key(
        db, "device_id", _FACTS_JSON, "device_facts", {r["device_id"] for r in rows}
    )
    for r in rows:
        r["timezone"] = timezone
        r["encounter"] = encounters.get(r["encounter_id"])
        r["device_facts"] = facts.get(r["device_id"])
    return rows


def _json_by_key(
    db: Database, key: str, expression: str, table: str, keys: set[Any]
) -> dict[Any, str]:
    out: dict[Any, str] = {}
    wanted = sorted(keys)
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        marks = ", ".join("?" for _ in chunk)
        out.update(
            db.execute(
                f"SELECT {key}, {expression} FROM {table} WHERE {key} IN ({marks})", chunk
            ).fetchall()
        )
    return out


def next_batch(db: Database, limit: int, *, alerts_only: bool = False) -> list[dict[str, Any]]:
    """Up to ``limit`` unsent readings in no batch: alert-range ones first (and, when there
    are any, only those: an alert batch stays small), then by seq."""
    # INDEXED BY: the outbox's order is its index's (without it, SQLite may find the
    # unbatched readings through readings_batch and sort the whole backlog for each take).
    top = db.execute(
        f"SELECT priority FROM readings {_OUTBOX} ORDER BY priority DESC, seq LIMIT 1"
    ).fetchone()
    if top is None or (alerts_only and top[0] == 0):
        return []
    return readings(
        db, f"{_OUTBOX} AND priority = ? ORDER BY priority DESC, seq LIMIT ?", [top[0], limit]
    )


def has_alerts(db: Database) -> bool:
    return (
        db.execute(f"SELECT 1 FROM readings {_OUTBOX} AND priority = 1 LIMIT 1").fetchone()
        is not None
    )


def unbatched(db: Database) -> int:
    """Readings waiting for a batch (not in flight, not sent, not refused)."""
    return int(
        db.execute(
            "SELECT count(*) FROM readings WHERE sent_at IS NULL AND batch_id IS NULL"
        ).fetchone()[0]
    )


def record_batch(
    db: Database,
    batch_id: str,
    seqs: Sequence[int],
    created_at: str | None = None,
    priority: int = 0,
    device_versions: Mapping[str, str] | None = None,
) -> int:
    """Record a batch as in flight with exactly these readings (those still unsent and in no
    batch: a reading is never in two), and the versions of the device facts it carries in
    full. Returns how many it holds."""
    if not seqs:
        return 0
    db.execute(
        "INSERT INTO batches (batch_id, seq_from, seq_to, count, created_at, attempts, "
        "priority, device_versions) VALUES (?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT(batch_id) DO "
        "UPDATE SET attempts = attempts + 1",
        [
            batch_id,
            min(seqs),
            max(seqs),
            len(seqs),
            created_at or utc_now(),
            priority,
            json.dumps(dict(device_versions)) if device_versions else None,
        ],
    )
    taken = 0
    for start in range(0, len(seqs), 500):
        chunk = list(seqs[start : start + 500])
        marks = ", ".join("?" for _ in chunk)
        taken += int(
            db.execute(
                f"UPDATE readings SET batch_id = ? WHERE seq IN ({marks}) AND sent_at IS NULL "
                "AND batch_id IS NULL",
                [batch_id, *chunk],
            ).rowcount
        )
    return taken


def batch_readings(db: Database, batch_id: str) -> list[dict[str, Any]]:
    """The unsent readings of a recorded batch (to encode it again after a restart)."""
    return readings(
        db, "batch_id = ? AND sent_at IS NULL AND refused IS NULL ORDER BY seq", [batch_id]
    )


def note_attempt(db: Database, batch_id: str) -> None:
    db.execute("UPDATE batches SET attempts = attempts + 1 WHERE batch_id = ?", [batch_id])


def release(db: Database, batch_id: str) -> None:
    """Forget an unacknowledged batch: its readings can be taken into a new one. A late ack
    for it is then unknown (harmless): central holds readings by id."""
    db.execute(
        "UPDATE readings SET batch_id = NULL WHERE batch_id = ? AND sent_at IS NULL "
        "AND refused IS NULL",
        [batch_id],
    )
    db.execute("DELETE FROM batches WHERE batch_id = ? AND acked_at IS NULL", [batch_id])


def mark_acked(
    db: Database,
    batch_id: str,
    acked_at: str | None = None,
    refused: Mapping[str, str] | None = None,
) -> int:
    """Central stored the batch: mark its readings sent, except those central refused (they
    keep their reason in ``refused`` and are neither sent nor retried blindly). Returns how
    many were marked sent. A repeated ack, or one for a batch never recorded, changes nothing."""
    at = acked_at or utc_now()
    for reading_id, reason in (refused or {}).items():
        db.execute(
            "UPDATE readings SET refused = ? WHERE id = ? AND batch_id = ? AND sent_at IS NULL",
            [reason[:500] or "refused", reading_id, batch_id],
        )
    # Attributed to a patient while this batch was in flight (`patient assign`): central got
    # them without the patient, so they go again (as conditional updates). Taken out of the
    # batch before the others are marked sent: while unsent they are in the ``readings_batch``
    # index, so neither statement reads the store's history.
    db.execute(
        "UPDATE readings SET batch_id = NULL WHERE batch_id = ? AND sent_at IS NULL AND "
        "attributed_at > (SELECT created_at FROM batches WHERE batch_id = ?)",
        [batch_id, batch_id],
    )
    cur = db.execute(
        "UPDATE readings SET sent_at = ? WHERE batch_id = ? AND sent_at IS NULL "
        "AND refused IS NULL",
        [at, batch_id],
    )
    db.execute(
        "UPDATE batches SET acked_at = ? WHERE batch_id = ? AND acked_at IS NULL", [at, batch_id]
    )
    # Central holds the device facts this batch carried in full: later batches send the bare
    # Device (a conditional create) until the facts change.
    row = db.execute(
        "SELECT device_versions FROM batches WHERE batch_id = ?", [batch_id]
    ).fetchone()
    for device_id, version in json.loads(row[0]).items() if row and row[0] else ():
        db.execute(
            "UPDATE device_facts SET acked_version = ? WHERE device_id = ? AND "
            "(acked_version IS NULL OR acked_version < ?)",
            [version, device_id, version],
        )
    return int(cur.rowcount)


def resend_from(db: Database, seq: int) -> int:
    """Central lost what it had from ``seq`` on (a restored central store): send it again,
    with the devices' facts in full."""
    db.execute("UPDATE device_facts SET acked_version = NULL")
    return int(
        db.execute(
            "UPDATE readings SET sent_at = NULL, batch_id = NULL WHERE seq >= ? "
            "AND sent_at IS NOT NULL",
            [seq],
        ).rowcount
    )


def in_flight(db: Database) -> list[BatchRecord]:
    """Recorded batches central has not acknowledged, priority first, then oldest."""
    return [
        BatchRecord(str(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4]), int(r[5]), int(r[6]))
        for r in db.execute(
            "SELECT batch_id, seq_from, seq_to, count, created_at, attempts, priority "
            "FROM batches WHERE acked_at IS NULL ORDER BY priority DESC, seq_from"
        ).fetchall()
    ]


def backlog(db: Database) -> int:
    """Readings not yet acknowledged by central (in flight or not yet taken), refused ones
    apart."""
    return int(
        db.execute(
            "SELECT count(*) FROM readings WHERE sent_at IS NULL AND refused IS NULL"
        ).fetchone()[0]
    )


def refused_count(db: Database) -> int:
    return int(db.execute("SELECT count(*) FROM readings WHERE refused IS NOT NULL").fetchone()[0])


def store_counts(db: Database) -> dict[str, int]:
    """Readings and rejected frames held by the store (``diagnostics``: counts only)."""
    return {
        "readings": int(db.execute("SELECT count(*) FROM readings").fetchone()[0]),
        "rejects": int(db.execute("SELECT count(*) FROM rejects").fetchone()[0]),
    }


def data_version(db: Database) -> int:
    """SQLite's ``PRAGMA data_version`` on this connection: it changes when another
    connection (another process: ``--only sync``) committed since the last look."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])
