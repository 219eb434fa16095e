"""The unit's SQLite store: the only contract between acquisition and sync.

One file, opened through sqlite-utils, WAL with ``synchronous=FULL`` (checked on every open:
in WAL mode NORMAL may lose the last commits on power loss), mode 0600, schema only from
:mod:`edge_agent.migrations`.

One writer thread owns the connection. Callers submit operations and get a future that
resolves only after the COMMIT that contains them; operations that arrive together share one
transaction (group commit), each in its own savepoint so a failing operation fails alone.
A reading is *accepted* when its future resolves, never before.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database, Migrations

from drivers.base import Rejected
from edge_agent import store_recovery
from edge_agent.catalogue import range_flags
from edge_agent.errors import StoreError, StoreFull, StoreNotDurable
from edge_agent.migrations import migrations
from edge_agent.models import ClockSource, Measurement, new_reading_id

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[Database], Any]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def open_database(path: Path, migration_set: Migrations = migrations) -> Database:
    """Open (creating 0600) and check durability, then apply pending migrations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Create the file ourselves so it is 0600 from the first byte; SQLite gives -wal/-shm
    # the database file's mode.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(
            "store.unreadable", f"{path}: not a readable SQLite store ({exc})"
        ) from exc
    if str(mode).lower() != "wal" or int(sync) != 2:
        conn.close()
        raise StoreNotDurable(str(path), f"journal_mode={mode}, synchronous={sync}; need WAL/FULL")
    db = Database(conn, strict=True)
    migration_set.apply(db)
    return db


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "full" in str(exc) or getattr(exc, "sqlite_errorcode", 0) == sqlite3.SQLITE_FULL
    )


@dataclass
class _Job:
    op: Op
    future: Future[Any]


class Store:
    """The store and its single writer thread."""

    def __init__(
        self,
        path: Path,
        unit_id: str,
        *,
        group_max: int = 500,
        group_wait: float = 0.02,
    ) -> None:
        self.path = Path(path)
        self.unit_id = unit_id
        self.group_max = group_max
        self.group_wait = group_wait
        self.accepted = 0  # readings committed by this process
        self.commits = 0  # transactions committed (group commit: commits <= operations)
        self.clock_source = ClockSource.SYSTEM
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # A damaged store is quarantined and salvaged before it is opened (store_recovery).
        self.prepared = store_recovery.prepare(self.path)
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        self._ready.result()  # re-raises open errors in the caller
        self.submit(lambda db: store_recovery.record(db, self.prepared))

    # --- writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            db = open_database(self.path)
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                group = [job]
                deadline = time.monotonic() + self.group_wait
                stop = False
                while len(group) < self.group_max:
                    try:
                        nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    group.append(nxt)
                self._commit_group(db, group)
                if stop:
                    return
        finally:
            db.close()

    def _commit_group(self, db: Database, group: list[_Job]) -> None:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            with db.atomic():
                for job in group:
                    try:
                        with db.atomic():  # a savepoint: a failing op fails alone
                            results.append((job, job.op(db), None))
                    except Exception as exc:
                        if is_disk_full(exc):
                            # SQLite may have rolled back the whole transaction: nothing of
                            # this group is stored, so the whole group fails (and is retried).
                            raise StoreFull(str(self.path)) from exc
                        results.append((job, None, exc))
            self.commits += 1
        except Exception as exc:
            full = isinstance(exc, StoreFull) or is_disk_full(exc)
            err: BaseException = StoreFull(str(self.path)) if full else exc
            log.error("store: commit of %d operations failed: %s", len(group), exc)
            for job in group:
                job.future.set_exception(err)
            return
        for job, value, failure in results:
            if failure is not None:
                job.future.set_exception(failure)
            else:
                job.future.set_result(value)

    # --- API ------------------------------------------------------------------------------
    def submit(self, op: Callable[[Database], T]) -> Future[T]:
        """Run ``op`` in the writer; the future resolves after the COMMIT containing it."""
        if not self._thread.is_alive():
            raise StoreError("store.closed", f"{self.path}: the store is closed")
        fut: Future[T] = Future()
        self._queue.put(_Job(op, fut))
        return fut

    def call(self, op: Callable[[Database], T], timeout: float | None = 60) -> T:
        return self.submit(op).result(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.prepared.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(
        self,
        device_id: str,
        measurements: Sequence[Measurement],
        rejects: Sequence[Rejected] = (),
        *,
        received_at: str | None = None,
        clock_source: ClockSource | None = None,
        position: tuple[float, float] | None = None,
        encounter_id: str | None = None,
    ) -> Future[list[int]]:
        """Queue readings (and rejects) for the next group commit; resolves to their seqs."""
        at = received_at or utc_now()
        clock = clock_source or self.clock_source
        rows = [self._reading_row(device_id, m, at, clock, encounter_id) for m in measurements]
        if position is not None:
            for row in rows:
                row["latitude"], row["longitude"] = position
        reject_rows = [
            {"device_id": device_id, "received_at": at, "reason": r.reason, "raw": r.raw}
            for r in rejects
        ]
        count = len(rows)

        def op(db: Database) -> list[int]:
            seqs = [_insert(db, "readings", row) for row in rows]
            for row in reject_rows:
                _insert(db, "rejects", row)
            return seqs

        fut = self.submit(op)
        fut.add_done_callback(lambda f: self._count(f, count))
        return fut

    def _count(self, fut: Future[list[int]], count: int) -> None:
        if fut.exception() is None:
            self.accepted += count

    def _reading_row(
        self, device_id: str, m: Measurement, at: str, clock: ClockSource, encounter: str | None
    ) -> dict[str, Any]:
        flags = list(dict.fromkeys((*m.flags, *range_flags(m.quantity, m.value, m.unit))))
        if clock is ClockSource.UNTRUSTED:
            flags.append("clock-untrusted")
        return {
            "id": new_reading_id(),
            "unit_id": self.unit_id,
            "device_id": device_id,
            "quantity": m.quantity,
            "value": m.value,
            "unit": m.unit,
            "loinc": m.loinc,
            "mdc": m.mdc,
            "device_time": m.device_time,
            "received_at": at,
            "clock_source": str(clock),
            "flags": json.dumps(flags),
            "absent_reason": m.absent_reason,
            "context": json.dumps([list(kv) for kv in m.context]),
            "raw": m.raw,
            "encounter_id": encounter,
        }

    # --- queries (through the writer, so they see every committed write) -------------------
    def stats(self) -> dict[str, int]:
        def op(db: Database) -> dict[str, int]:
            row = db.execute(
                "SELECT count(*), count(*) FILTER (WHERE sent_at IS NULL), "
                "count(*) FILTER (WHERE sent_at IS NOT NULL) FROM readings"
            ).fetchone()
            rejects = db.execute("SELECT count(*) FROM rejects").fetchone()[0]
            return {
                "readings_total": row[0],
                "readings_pending_sync": row[1],
                "readings_sent": row[2],
                "rejects": rejects,
            }

        return self.call(op)

    def log_event(self, kind: str, detail: str = "", device_id: str | None = None) -> Future[int]:
        row = {"at": utc_now(), "kind": kind, "device_id": device_id, "detail": detail}
        return self.submit(lambda db: _insert(db, "events", row))

    def cursor_load(self, device_id: str) -> int | None:
        def op(db: Database) -> int | None:
            row = db.execute(
                "SELECT cursor FROM device_cursors WHERE device_id = ?", [device_id]
            ).fetchone()
            return None if row is None else int(row[0])

        return self.call(op)

    def cursor_save(self, device_id: str, cursor: int) -> None:
        def op(db: Database) -> None:
            db.execute(
                "INSERT INTO device_cursors (device_id, cursor, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(device_id) DO UPDATE SET cursor = excluded.cursor, "
                "updated_at = excluded.updated_at",
                [device_id, cursor, utc_now()],
            )

        self.call(op)


def _insert(db: Database, table: str, row: dict[str, Any]) -> int:
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    cur = db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(row.values()))
    return int(cur.lastrowid or 0)


def read_stats(path: Path) -> dict[str, int]:
    """Stats for the CLI, opening the store briefly (it may be in use by the agent: WAL)."""
    with Store(path, unit_id="-") as store:
        return store.stats()


def put_state(db: Database, key: str, value: Any) -> None:
    db.execute(
        "INSERT INTO agent_state (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT(key) "
        "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        [key, json.dumps(value), utc_now()],
    )


def take_state(db: Database, key: str) -> Any:
    """Read and delete (a one-shot request such as ``sync-now``)."""
    row = db.execute("SELECT value FROM agent_state WHERE key = ?", [key]).fetchone()
    if row is None:
        return None
    db.execute("DELETE FROM agent_state WHERE key = ?", [key])
    return json.loads(row[0])


def get_state(db: Database, key: str) -> Any:
    row = db.execute("SELECT value FROM agent_state WHERE key = ?", [key]).fetchone()
    return None if row is None else json.loads(row[0])
