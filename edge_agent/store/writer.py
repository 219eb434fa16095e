"""The unit's SQLite store: the only contract between acquisition and sync.

One file, opened through sqlite-utils, WAL with ``synchronous=FULL`` (checked on every open:
in WAL mode NORMAL may lose the last commits on power loss), mode 0600, schema only from
:mod:`edge_agent.store.migrations`.

One writer thread owns the write connection. Callers submit operations and get a future that
resolves only after the COMMIT that contains them. Group commit is the classic kind: the writer
never sleeps; it commits at once when nothing else is queued and gathers into one transaction
what arrived while the previous commit was being synced (each operation in its own savepoint,
so a failing operation fails alone). A reading is *accepted* when its future resolves, never
before. A caller that gives up (a cancelled task, a timeout) never harms the writer.

Reads do not queue behind writes: :meth:`Store.read` and :meth:`Store.read_async` run on
read-only connections of their own (WAL readers see every committed transaction).

Readings from an identifiable source record (``Measurement.source_key``: an HL7 message and OBX,
an analyser's specimen and test, a meter's record number) get a deterministic id, so a record a
device resends after a lost acknowledgement is recognised, stored once and answered again.
Listeners registered with :meth:`Store.add_commit_listener` hear of every commit that added
readings (the sync loop wakes on them instead of polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from drivers.base import Rejected
from edge_agent.backoff import Backoff
from edge_agent.catalogue import range_flags
from edge_agent.clock import utc_now
from edge_agent.errors import StoreError, StoreFull
from edge_agent.models import ClockSource, Measurement, new_reading_id
from edge_agent.store import connect as store_connect
from edge_agent.store import recovery as store_recovery
from edge_agent.store.database import open_database
from edge_agent.store.encounters import OpenEncounter

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[Database], Any]
# Deterministic reading ids: uuid5 in this namespace of "unit \x1f device \x1f source key".
_POSITION = frozenset({"latitude", "longitude", "altitude"})
READING_NS = uuid.UUID("5b1f7c1e-3f0a-4d8e-9a57-6d0c8e2b4a11")
# A group that meets a lock (SQLITE_BUSY past the busy timeout, or one SQLite returns at
# once) is tried again this many times, after a jittered backoff from 50 ms up to 2 s.
BUSY_RETRIES = 8
BUSY_BACKOFF_S = 0.05
BUSY_BACKOFF_CAP_S = 2.0


def reading_id(unit_id: str, device_id: str, source_key: str | None) -> str:
    if source_key is None:
        return new_reading_id()
    return str(uuid.uuid5(READING_NS, f"{unit_id}\x1f{device_id}\x1f{source_key}"))


@dataclass(frozen=True)
class CommitNote:
    """What one commit added (for listeners: the sync loop)."""

    readings: int
    alerts: int


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, store_connect.operational_errors()) and (
        "full" in str(exc) or getattr(exc, "sqlite_errorcode", 0) == sqlite3.SQLITE_FULL
    )


@dataclass
class _Job:
    op: Op
    future: Future[Any]


def _resolve(future: Future[Any], value: Any = None, error: BaseException | None = None) -> None:
    """Settle a caller's future; a caller that gave up (cancelled) is no concern of the writer."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except InvalidStateError:
        pass


class Store:
    """The store, its single writer thread and its readers."""

    def __init__(
        self,
        path: Path,
        unit_id: str,
        *,
        group_max: int = 500,
        group_wait: float = 0.0,
    ) -> None:
        self.path = Path(path)
        self.unit_id = unit_id
        self.group_max = group_max
        # 0 (the default): classic group commit, never wait. > 0: linger that long for more
        # operations after the first (only worth it with many concurrent writers).
        self.group_wait = group_wait
        self.accepted = 0  # readings committed by this process (new ones)
        self.recognised = 0  # resent readings recognised (already stored)
        self.commits = 0  # transactions committed (group commit: commits <= operations)
        self.epoch = ""
        self.clock_source = ClockSource.SYSTEM
        # Central's clock minus this unit's, once the sync daemon measured it for certain
        # (sync/clock_trust.py); the drivers' sink corrects reception times with it.
        self.central_offset_s: float | None = None
        self.last_commit_at: float | None = None  # monotonic
        self.busy_retries = BUSY_RETRIES
        self.busy_retries_done = 0  # groups tried again after meeting a lock
        self.reopens = 0  # writer connections reopened after "malformed"
        self._lost_connection = False  # the writer's connection is closed (a reopen failed)
        # Readings appended without an encounter_id are bound to the open encounter, read
        # again only when another connection (the CLI) committed (edge_agent.store.encounters).
        self.encounters = OpenEncounter()
        self._note_readings = 0  # what the open transaction adds (writer thread only)
        self._note_alerts = 0
        self._listeners: list[Callable[[CommitNote], None]] = []
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # A damaged store is quarantined and salvaged before it is opened (store_recovery).
        self.prepared = store_recovery.prepare(self.path)
        self._ready: Future[None] = Future()
        self._local = threading.local()
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="store-reader")
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()
        self._ready.result()  # re-raises open errors in the caller
        self.submit(lambda db: store_recovery.record(db, self.prepared))

    # --- writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        try:
            db = open_database(self.path)
            row = db.execute("SELECT epoch FROM store_identity").fetchone()
            self.epoch = str(row[0])
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            stop = False
            while not stop:
                job = self._queue.get()
                if job is None:
                    return
                group = [job]
                stop = self._gather(group)
                try:
                    db = self._commit_group(db, group)
                except BaseException as exc:  # never let one group end the writer
                    log.exception("store: unexpected failure committing %d operations", len(group))
                    for item in group:
                        _resolve(item.future, error=exc)
        finally:
            db.close()

    def _gather(self, group: list[_Job]) -> bool:
        """Add what is queued now (and, with ``group_wait``, what comes meanwhile); True when
        a close request was met."""
        deadline = time.monotonic() + self.group_wait
        while len(group) < self.group_max:
            try:
                if self.group_wait > 0:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                else:
                    nxt = self._queue.get_nowait()
            except queue.Empty:
                return False
            if nxt is None:
                return True
            group.append(nxt)
        return False

    def _commit_group(self, db: Database, group: list[_Job]) -> Database:
        """Commit the group; the writer's connection afterwards (reopened once if it saw
        "malformed"). Busy/locked (another connection writing: a CLI) rolls the whole group
        back and runs it again after a backoff, at most ``busy_retries`` times: no operation
        fails for it. An operation may therefore run more than once: ops act on the
        database only."""
        backoff = Backoff(base=BUSY_BACKOFF_S, cap=BUSY_BACKOFF_CAP_S)
        reopened = False
        while True:
            try:
                if self._lost_connection:  # a reopen failed: try again for this group
                    db = self._reopen(db)
                results = self._try_group(db, group)
                break
            except Exception as exc:
                self.encounters.invalidate()  # it may have read inside the rolled-back group
                if store_connect.is_busy(exc) and backoff.attempt < self.busy_retries:
                    self.busy_retries_done += 1
                    delay = backoff.next_delay()
                    log.warning(
                        "store: commit of %d operations met a lock (%s); trying again in %.2f s",
                        len(group),
                        exc,
                        delay,
                    )
                    time.sleep(delay)  # the writer's own backoff; callers keep waiting
                    continue
                if store_connect.is_malformed(exc) and not reopened:
                    reopened = True
                    self.reopens += 1
                    log.warning("store: the writer's connection saw %r: reopening it", str(exc))
                    db = self._reopen(db)
                    continue
                full = isinstance(exc, StoreFull) or is_disk_full(exc)
                err: BaseException = StoreFull(str(self.path)) if full else exc
                if store_connect.is_malformed(exc):
                    log.error("store: damaged: %s, again on a reopened connection", exc)
                log.error("store: commit of %d operations failed: %s", len(group), exc)
                for job in group:
                    _resolve(job.future, error=err)
                return db
        note = CommitNote(self._note_readings, self._note_alerts)
        for job, value, failure in results:
            _resolve(job.future, value, failure)
        if note.readings:
            for listener in list(self._listeners):
                try:
                    listener(note)
                except Exception:
                    log.exception("store: commit listener failed")
        return db

    def _try_group(
        self, db: Database, group: list[_Job]
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """One attempt: BEGIN IMMEDIATE (the write lock first, waiting up to the busy
        timeout: a deferred transaction that read before writing could not take it once
        another connection had committed, SQLITE_BUSY at once), each operation in its own
        savepoint, COMMIT. Raises (all rolled back) for what fails the whole group."""
        results: list[tuple[_Job, Any, BaseException | None]] = []
        self._note_readings = self._note_alerts = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for job in group:
                try:
                    with db.atomic():  # a savepoint: a failing op fails alone
                        results.append((job, job.op(db), None))
                except Exception as exc:
                    if is_disk_full(exc):
                        # SQLite may have rolled back the whole transaction: nothing of
                        # this group is stored, so the whole group fails (and is retried).
                        raise StoreFull(str(self.path)) from exc
                    if store_connect.is_busy(exc) or store_connect.is_malformed(exc):
                        raise  # not this operation's fault: the whole group again
                    results.append((job, None, exc))
            db.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                with contextlib.suppress(*store_connect.errors()):
                    db.conn.rollback()
            raise
        self.commits += 1
        self.last_commit_at = time.monotonic()
        return results

    def _reopen(self, db: Database) -> Database:
        with contextlib.suppress(*store_connect.errors()):
            db.close()
        self._lost_connection = True
        fresh = open_database(self.path)
        self._lost_connection = False
        return fresh

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

    async def write(self, op: Callable[[Database], T]) -> T:
        """``submit`` for coroutines. Cancelling the awaiting task does not undo the write
        (it may still commit) and never disturbs the writer."""
        return await asyncio.wrap_future(self.submit(op))

    def read(self, op: Callable[[Database], T]) -> T:
        """Run ``op`` on this thread's read-only connection, in one read transaction (a
        consistent snapshot); never waits for the writer's queue. A connection that sees
        "malformed" is reopened and ``op`` run once more before the error is believed."""
        try:
            return self._read_once(op)
        except store_connect.database_errors() as exc:
            if not store_connect.is_malformed(exc):
                raise
            log.warning("store: a reader's connection saw %r: reopening it", str(exc))
            self._drop_reader()
            return self._read_once(op)

    def _read_once(self, op: Callable[[Database], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = store_connect.connect(
                self.path, check_same_thread=False, timeout=30, isolation_level=None
            )
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA busy_timeout = 30000")
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        conn.execute("BEGIN")
        try:
            return op(Database(conn))
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    def _drop_reader(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is None:
            return
        with self._reader_lock:
            if conn in self._reader_conns:
                self._reader_conns.remove(conn)
        with contextlib.suppress(*store_connect.errors()):
            conn.close()

    async def read_async(self, op: Callable[[Database], T]) -> T:
        """:meth:`read` on the store's reader threads, for the event loop."""
        return await asyncio.wrap_future(self._readers.submit(self.read, op))

    def add_commit_listener(self, listener: Callable[[CommitNote], None]) -> None:
        """``listener(note)`` runs in the writer thread after each commit that added
        readings: keep it tiny (e.g. ``loop.call_soon_threadsafe(event.set)``)."""
        self._listeners.append(listener)

    def outbox_changed(self, readings: int = 1) -> None:
        """Tell the listeners that readings wait again for central without a new reading: a
        commit of another kind (the console's assign or close through this writer) queued
        them. The sync loop then looks at the outbox at once."""
        note = CommitNote(max(1, readings), 0)
        for listener in list(self._listeners):
            try:
                listener(note)
            except Exception:
                log.exception("store: commit listener failed")

    def remove_commit_listener(self, listener: Callable[[CommitNote], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def writer_alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._readers.shutdown(wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
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
        cursor: tuple[str, int] | None = None,
    ) -> Future[list[int]]:
        """Queue readings (and rejects, and a device's download cursor, all in one
        transaction) for the next group commit; resolves to their seqs. A reading this store
        already holds (same deterministic id: a resent record) is not stored again: its
        existing seq is returned."""
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
        sql = _insert_sql("readings", rows[0]) if rows else ""
        keyed = [m.source_key is not None for m in measurements]
        counts = [0, 0]  # new, recognised

        def op(db: Database) -> list[int]:
            seqs: list[int] = []
            new = recognised = alerts = 0
            bound = encounter_id if encounter_id is not None or not rows else self.encounters.at(db)
            for row, deterministic in zip(rows, keyed, strict=True):
                # the van's position is no patient's; a control measurement is nobody's
                if row["quantity"] not in _POSITION and '"control"' not in row["flags"]:
                    row["encounter_id"] = bound
                # Look first (one writer: no race). INSERT ... ON CONFLICT DO NOTHING would
                # burn an AUTOINCREMENT value and leave a hole in the seqs central counts on.
                found = (
                    db.execute("SELECT seq FROM readings WHERE id = ?", [row["id"]]).fetchone()
                    if deterministic
                    else None
                )
                if found is not None:  # a resent record: already here
                    seqs.append(int(found[0]))
                    recognised += 1
                    continue
                cur = db.execute(sql, list(row.values()))
                seqs.append(int(cur.lastrowid or 0))
                new += 1
                alerts += row["priority"]
            for reject in reject_rows:
                _insert(db, "rejects", reject)
            if cursor is not None:
                _save_cursor(db, *cursor)
            counts[:] = [new, recognised]
            self._note_readings += new
            self._note_alerts += alerts
            return seqs

        fut = self.submit(op)
        fut.add_done_callback(lambda f: self._count(f, counts))
        return fut

    def _count(self, fut: Future[list[int]], counts: list[int]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.accepted += counts[0]
            self.recognised += counts[1]

    def _reading_row(
        self, device_id: str, m: Measurement, at: str, clock: ClockSource, encounter: str | None
    ) -> dict[str, Any]:
        control = "control" in m.flags  # QC: never alerts, never bound to a patient
        flags = list(
            dict.fromkeys((*m.flags, *range_flags(m.quantity, m.value, m.unit, control=control)))
        )
        if clock is ClockSource.UNTRUSTED:
            flags.append("clock-untrusted")
        return {
            "id": reading_id(self.unit_id, device_id, m.source_key),
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
            "encounter_id": None if control else encounter,
            "source_key": m.source_key,
            "priority": 1 if "alert" in flags else 0,
            "latitude": None,
            "longitude": None,
        }

    # --- queries (through the writer, so they see every committed write) -------------------
    def stats(self) -> dict[str, int]:
        return self.read(stats_query)

    def log_event(self, kind: str, detail: str = "", device_id: str | None = None) -> Future[int]:
        row = {"at": utc_now(), "kind": kind, "device_id": device_id, "detail": detail}
        return self.submit(lambda db: _insert(db, "events", row))

    def cursor_load(self, key: str) -> int | None:
        def op(db: Database) -> int | None:
            row = db.execute(
                "SELECT cursor FROM device_cursors WHERE device_id = ?", [key]
            ).fetchone()
            return None if row is None else int(row[0])

        return self.read(op)

    def cursor_save(self, key: str, cursor: int) -> None:
        """A cursor alone; with readings, pass ``cursor=`` to :meth:`append` instead."""
        self.call(lambda db: _save_cursor(db, key, cursor))


def _save_cursor(db: Database, key: str, cursor: int) -> None:
    db.execute(
        "INSERT INTO device_cursors (device_id, cursor, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(device_id) DO UPDATE SET cursor = excluded.cursor, "
        "updated_at = excluded.updated_at",
        [key, cursor, utc_now()],
    )


def _insert_sql(table: str, row: dict[str, Any], conflict: str = "") -> str:
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}) {conflict}".rstrip()


def _insert(db: Database, table: str, row: dict[str, Any]) -> int:
    cols = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    cur = db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", list(row.values()))
    return int(cur.lastrowid or 0)


def stats_query(db: Database) -> dict[str, int]:
    """What ``db stats`` and :meth:`Store.stats` show, on any connection (a store from before
    central could refuse readings has no ``refused`` column: none are)."""
    columns = {r[1] for r in db.execute("PRAGMA table_info(readings)").fetchall()}
    refused = "refused IS NOT NULL" if "refused" in columns else "0"
    row = db.execute(
        f"SELECT count(*), count(*) FILTER (WHERE sent_at IS NULL AND NOT ({refused})), "
        "count(*) FILTER (WHERE sent_at IS NOT NULL), "
        f"count(*) FILTER (WHERE {refused}) FROM readings"
    ).fetchone()
    rejects = db.execute("SELECT count(*) FROM rejects").fetchone()[0]
    return {
        "readings_total": row[0],
        "readings_pending_sync": row[1],
        "readings_sent": row[2],
        "readings_refused_by_central": row[3],
        "rejects": rejects,
    }


def read_stats(path: Path) -> dict[str, int]:
    """Stats for the CLI: read-only (the agent may be writing: WAL), never migrated, no writer
    thread (:mod:`edge_agent.store.read`)."""
    from edge_agent.store.read import reading

    with reading(path, needs="m001_initial") as db:
        return stats_query(db)
