"""Where the reference receiver keeps what central received: SQLite (one file, the default)
or PostgreSQL (a central deployment: several receivers side by side write one database).

Both run the same SQL (``?`` placeholders, ``ON CONFLICT``), each batch in one transaction:
idempotent by reading id, with the unit's last contiguous sequence number kept up to date.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from sync import codec

Execute = Callable[[str, list[Any]], Any]

SCHEMA = [
    """CREATE TABLE observations (
        id TEXT PRIMARY KEY, unit TEXT NOT NULL, seq BIGINT NOT NULL, batch_id TEXT NOT NULL,
        code TEXT, value DOUBLE PRECISION, ucum TEXT, effective TEXT, stored_at TEXT NOT NULL,
        resource TEXT NOT NULL)""",
    "CREATE UNIQUE INDEX observations_unit_seq ON observations(unit, seq)",
    "CREATE TABLE units (unit TEXT PRIMARY KEY, last_contiguous_seq BIGINT NOT NULL)",
]
GAPS = (
    "SELECT u.unit, u.last_contiguous_seq FROM units u WHERE EXISTS (SELECT 1 FROM "
    "observations o WHERE o.unit = u.unit AND o.seq > u.last_contiguous_seq)"
)


class CentralStore(Protocol):
    def store_batch(self, batch: codec.Batch, stored_at: str) -> tuple[int, int]: ...

    def gaps(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def _get(obj: Any, *path: str | int) -> Any:
    """A nested field of an untrusted resource, or None when any level is missing or of
    another shape (the codec checks the envelope, not every Observation field)."""
    for key in path:
        if isinstance(key, int) and isinstance(obj, list) and len(obj) > key:
            obj = obj[key]
        elif isinstance(key, str) and isinstance(obj, dict):
            obj = obj.get(key)
        else:
            return None
    return obj


def _scalar(value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):
        return None
    if isinstance(value, int) and not -(2**63) <= value < 2**63:  # SQL's 64-bit integers
        return None
    return value


def insert_batch(execute: Execute, batch: codec.Batch, stored_at: str) -> tuple[int, int]:
    """Run inside one transaction: (new rows, last contiguous seq of the unit)."""
    new = 0
    for obs in batch.observations:
        coded = _get(obs, "code", "coding")
        codes = {_get(c, "system"): _get(c, "code") for c in coded or []
                 if isinstance(c, dict)} if isinstance(coded, list) else {}
        code = codes.get(codec.LOINC) or codes.get(codec.MDC)
        cur = execute(
            "INSERT INTO observations (id, unit, seq, batch_id, code, value, ucum, effective,"
            " stored_at, resource) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
            [obs["id"], batch.unit, codec.seq_of(obs), batch.batch_id,
             _scalar(code, str), _scalar(_get(obs, "valueQuantity", "value"), (int, float)),
             _scalar(_get(obs, "valueQuantity", "code"), str),
             _scalar(obs.get("effectiveDateTime"), str), stored_at,
             json.dumps(obs, separators=(",", ":"))],
        )
        new += max(0, cur.rowcount)
    row = execute("SELECT last_contiguous_seq FROM units WHERE unit = ?", [batch.unit]).fetchone()
    last = 0 if row is None else int(row[0])
    # Advance over what is now contiguous; gaps stay visible until the unit fills them.
    while execute("SELECT 1 FROM observations WHERE unit = ? AND seq = ?",
                  [batch.unit, last + 1]).fetchone():
        last += 1
    execute(
        "INSERT INTO units (unit, last_contiguous_seq) VALUES (?, ?) ON CONFLICT(unit) "
        "DO UPDATE SET last_contiguous_seq = excluded.last_contiguous_seq",
        [batch.unit, last],
    )
    return new, last


class SqliteCentral:
    def __init__(self, path: Path) -> None:
        from edge_agent.store import open_database
        from sync.receiver import central_migrations

        self.db = open_database(path, central_migrations)

    def store_batch(self, batch: codec.Batch, stored_at: str) -> tuple[int, int]:
        with self.db.atomic():
            return insert_batch(lambda sql, p: self.db.execute(sql, p), batch, stored_at)

    def gaps(self) -> dict[str, int]:
        return {unit: int(last) for unit, last in self.db.execute(GAPS).fetchall()}

    def close(self) -> None:
        self.db.close()


class PostgresCentral:
    """PostgreSQL through psycopg 3; the schema is versioned in ``central_schema``."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn)
        with self.conn.transaction():
            self.conn.execute("CREATE TABLE IF NOT EXISTS central_schema (name TEXT PRIMARY "
                              "KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            # One migrating receiver at a time when several start together.
            self.conn.execute("LOCK TABLE central_schema IN EXCLUSIVE MODE")
            done = {r[0] for r in self.conn.execute("SELECT name FROM central_schema")}
            if "c001_observations" not in done:
                for statement in SCHEMA:
                    self.conn.execute(statement)
                self.conn.execute("INSERT INTO central_schema (name) VALUES "
                                  "('c001_observations')")

    def _execute(self, sql: str, params: list[Any]) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), params)

    def store_batch(self, batch: codec.Batch, stored_at: str) -> tuple[int, int]:
        with self.conn.transaction():
            # Two receivers may store batches of the same unit at once: one at a time per unit
            # keeps last_contiguous_seq exact.
            self._execute("SELECT pg_advisory_xact_lock(hashtext(?))", [batch.unit])
            return insert_batch(self._execute, batch, stored_at)

    def gaps(self) -> dict[str, int]:
        with self.conn.transaction():
            return {unit: int(last) for unit, last in self.conn.execute(GAPS).fetchall()}

    def close(self) -> None:
        self.conn.close()


def open_central(target: str | Path) -> CentralStore:
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresCentral(text)
    return SqliteCentral(Path(text))


@contextlib.contextmanager
def opened(target: str | Path) -> Iterator[CentralStore]:
    store = open_central(target)
    try:
        yield store
    finally:
        store.close()
