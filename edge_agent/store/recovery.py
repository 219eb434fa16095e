"""A damaged store is moved aside, never deleted, and what is readable carries on in a new one.

At every exclusive open (no other process has the store open) the store gets a bounded
``PRAGMA quick_check`` through a read-only connection (a read-only connection never
checkpoints, so the bytes of a damaged file and its WAL stay as they were). On failure:

1. **quarantine**: the file and its ``-wal``/``-shm`` are renamed, in the same directory, to
   ``<name>.corrupt-<UTC stamp>`` (+ ``-wal``/``-shm``), mode 0600; nothing is deleted;
2. **salvage**: every table is copied row by row from the quarantined file (read-only) into a
   new store; a scan that hits a damaged page continues past it with point look-ups, so only
   the rows on unreadable pages are lost. A file whose 100-byte header is garbled is read
   through a copy with a rebuilt header (the copy is deleted afterwards).
   Readings keep their ``id`` (central recognises what it already holds) and their
   ``sent_at`` (sent stays sent), get new seqs in the new store (a new store, a new epoch),
   ``batch_id`` is cleared (the old batches' seq ranges mean nothing in the new store);
3. **report**: an ``events`` row ``store.recovered`` with the counts, ``agent_state`` key
   ``store-health`` (for ``edge-agent db check``, the nurse's status and sync), one log line
   (counts and file names only, never row contents).

Why not ``sqlite3 .recover``: Debian bookworm's ``sqlite3`` 3.40.1 CLI is built without
``SQLITE_ENABLE_DBPAGE_VTAB``; its ``.recover`` fails with "no such table: sqlite_dbpage"
(checked on this machine), so the row-by-row copy is the one path.

The check is bounded: a progress handler interrupts ``quick_check`` after
``check_seconds`` (default 10 s) and the store opens with ``check: "incomplete"`` recorded;
``quick_check(N)`` stops after N problems. Ownership: a sidecar ``<name>.lock`` (flock). Every
open holds it shared for the store's lifetime; only an open that gets it exclusively (nobody
else has the store open) checks and recovers, so a file in use is never renamed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.durable import fsync_path
from edge_agent.errors import StoreError
from edge_agent.store import connect as store_connect
from edge_agent.store.connect import errors, operational_errors, page_errors

log = logging.getLogger(__name__)

CHECK_SECONDS = 10.0
CHECK_MAX_ERRORS = 20
HEALTH_KEY = "store-health"
# Tables copied, in this order; anything else in the old file is left in the quarantine.
TABLES = ("readings", "rejects", "events", "device_cursors", "agent_state")
SIDE_FILES = ("-wal", "-shm")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    complete: bool
    problems: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass
class Recovery:
    quarantined: str
    salvaged: dict[str, int] = field(default_factory=dict)
    readings_lost_estimate: int = 0
    unreadable_spots: int = 0
    header_rebuilt: bool = False
    problems: tuple[str, ...] = ()


def _unreadable() -> tuple[type[Exception], ...]:
    return (*page_errors(), StoreError)


# --- check ---------------------------------------------------------------------------------
def quick_check(
    path: Path, *, seconds: float = CHECK_SECONDS, max_errors: int = CHECK_MAX_ERRORS
) -> CheckResult:
    """``PRAGMA quick_check`` through a read-only connection, stopped after ``seconds``.
    A key that does not open the store is a StoreError, not a failed check."""
    start = time.monotonic()
    deadline = start + seconds
    try:
        conn = store_connect.connect(path, mode="ro", timeout=30)
    except errors() as exc:
        return CheckResult(False, True, (str(exc),), time.monotonic() - start)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        rows = [r[0] for r in conn.execute(f"PRAGMA quick_check({int(max_errors)})")]
    except operational_errors() as exc:
        if "interrupted" in str(exc):
            return CheckResult(True, False, (), time.monotonic() - start)
        return CheckResult(False, True, (str(exc),), time.monotonic() - start)
    except page_errors() as exc:
        return CheckResult(False, True, (str(exc),), time.monotonic() - start)
    finally:
        conn.close()
    ok = rows == ["ok"]
    return CheckResult(ok, True, () if ok else tuple(rows), time.monotonic() - start)


# --- ownership -----------------------------------------------------------------------------
class StoreGuard:
    """The store's sidecar lock: shared while open; exclusive only to check and recover."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.exclusive = True
        except BlockingIOError:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            self.exclusive = False

    def share(self) -> None:
        if self.exclusive:
            fcntl.flock(self._fd, fcntl.LOCK_SH)  # atomic downgrade is not promised: fine
            self.exclusive = False

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@dataclass
class Prepared:
    guard: StoreGuard
    check: CheckResult | None = None
    recovery: Recovery | None = None

    def release(self) -> None:
        self.guard.release()


def prepare(path: Path, *, check_seconds: float = CHECK_SECONDS) -> Prepared:
    """Before the store is opened: check it (when we own it alone) and recover it if damaged.

    The store's one hook (``Store.__init__``); ``record(db, prepared)`` writes the report into
    the (new) store once it is open and migrated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    guard = StoreGuard(path)
    prepared = Prepared(guard)
    try:
        if guard.exclusive and path.exists() and path.stat().st_size > 0:
            prepared.check = quick_check(path, seconds=check_seconds)
            if not prepared.check.ok:
                prepared.recovery = recover(path, prepared.check.problems)
    except BaseException:
        guard.release()
        raise
    guard.share()
    return prepared


def record(db: Any, prepared: Prepared) -> None:
    """Write the outcome into the open store: ``store-health`` state (and an event on recovery)."""
    from edge_agent.clock import utc_now
    from edge_agent.store.database import put_state

    check, rec = prepared.check, prepared.recovery
    if check is None:
        return
    now = utc_now()
    if rec is not None:
        health: dict[str, Any] = {"state": "recovered", "at": now, **asdict(rec)}
        db.execute(
            "INSERT INTO events (at, kind, device_id, detail) "
            "VALUES (?, 'store.recovered', NULL, ?)",
            [now, json.dumps(asdict(rec))],
        )
    else:
        previous = _get(db, HEALTH_KEY)
        if previous is not None and previous.get("state") == "recovered":
            return  # keep the recovery visible until a technician acknowledges it
        health = {"state": "ok" if check.complete else "check-incomplete", "at": now,
                  "check_seconds": round(check.seconds, 3)}
    put_state(db, HEALTH_KEY, health)


def _get(db: Any, key: str) -> Any:
    row = db.execute("SELECT value FROM agent_state WHERE key = ?", [key]).fetchone()
    return None if row is None else json.loads(row[0])


# --- quarantine and salvage ----------------------------------------------------------------
def quarantine(path: Path, stamp: str | None = None) -> Path:
    """Rename the store and its side files aside (same directory, 0600); return the new path."""
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in SIDE_FILES:  # side files first: the main file's name is the commit point
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
            os.chmod(target.with_name(target.name + suffix), 0o600)
    os.replace(path, target)
    os.chmod(target, 0o600)
    fsync_path(path.parent)
    return target


def recover(path: Path, problems: tuple[str, ...] = ()) -> Recovery:
    from edge_agent.store.database import open_database

    hint = store_connect.encrypted_hint(path)
    moved = quarantine(path)
    rec = Recovery(quarantined=str(moved), problems=problems[:5])
    source, scratch = _readable_source(moved, rec, path)
    db = open_database(path)  # a new store (new epoch), migrated
    try:
        if source is not None:
            db.conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: random-key index inserts
            with db.conn:
                _copy_all(source, db.conn, rec)
            source.close()
    finally:
        db.close()
        if scratch is not None:
            for suffix in ("", *SIDE_FILES):
                scratch.with_name(scratch.name + suffix).unlink(missing_ok=True)
    log.warning(
        "store: %s was damaged (%s); moved to %s; salvaged %s; readings lost (estimate): %d%s",
        path, "; ".join(p.splitlines()[-1] for p in rec.problems if p)[:200] or "check failed",
        moved.name, rec.salvaged,
        rec.readings_lost_estimate,
        f"{hint}, then move {moved.name} back" if hint else "",
    )
    return rec


def _readable_source(
    moved: Path, rec: Recovery, store: Path
) -> tuple[sqlite3.Connection | None, Path | None]:
    conn = _open_ro(moved, store)
    if conn is not None:
        return conn, None
    # Not a database at all: maybe only the header is garbled. Read a copy with a rebuilt one.
    scratch = moved.with_name(moved.name + ".salvage")
    try:
        shutil.copyfile(moved, scratch)
        os.chmod(scratch, 0o600)
        wal = moved.with_name(moved.name + "-wal")
        if wal.exists():
            shutil.copyfile(wal, scratch.with_name(scratch.name + "-wal"))
        with open(scratch, "r+b") as f:
            f.write(rebuilt_header(os.path.getsize(scratch)))
    except OSError as exc:
        log.error("store: cannot make a salvage copy of %s: %s", moved.name, exc)
        scratch.unlink(missing_ok=True)
        return None, None
    conn = _open_ro(scratch, store)
    if conn is None:
        return None, scratch
    rec.header_rebuilt = True
    return conn, scratch


def _open_ro(path: Path, store: Path) -> sqlite3.Connection | None:
    """``path`` (a quarantined copy of ``store``) read-only, with the store's key."""
    try:
        conn = store_connect.connect(path, mode="ro", key_of=store)
        conn.execute("SELECT name FROM sqlite_master").fetchall()
        return conn
    except _unreadable():
        return None


def rebuilt_header(file_size: int, page_size: int = 4096) -> bytes:
    """A plausible 100-byte SQLite header for a WAL store of ``file_size`` bytes."""
    h = bytearray(100)
    h[0:16] = b"SQLite format 3\x00"
    h[16:18] = (page_size if page_size < 65536 else 1).to_bytes(2, "big")
    h[18], h[19] = 2, 2  # WAL
    h[21], h[22], h[23] = 64, 32, 32
    h[24:28] = (1).to_bytes(4, "big")  # change counter
    h[28:32] = (file_size // page_size).to_bytes(4, "big")
    h[40:44] = (1).to_bytes(4, "big")  # schema cookie
    h[44:48] = (4).to_bytes(4, "big")  # schema format
    h[56:60] = (1).to_bytes(4, "big")  # UTF-8
    h[92:96] = (1).to_bytes(4, "big")  # version-valid-for = change counter
    major, minor, patch = sqlite3.sqlite_version_info
    h[96:100] = (major * 1_000_000 + minor * 1000 + patch).to_bytes(4, "big")
    return bytes(h)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    try:
        return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    except page_errors():
        return []


def _sequence(conn: sqlite3.Connection, table: str) -> int | None:
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", [table]).fetchone()
    except page_errors():
        return None
    return None if row is None else int(row[0])


def salvage_rows(
    conn: sqlite3.Connection, table: str, columns: list[str], upper: int | None, rec: Recovery
) -> Iterator[tuple[Any, ...]]:
    """Rows of ``table`` in rowid order, stepping over unreadable pages.

    A scan that fails resumes with point look-ups (rowid + 1, + 2, …): a look-up that works
    and finds a row restarts the scan after it. ``upper`` bounds the look-ups (the table's
    AUTOINCREMENT high-water mark when readable; else 100,000 past the last row read)."""
    cols = ", ".join(f'"{c}"' for c in columns)
    scan = f'SELECT rowid, {cols} FROM "{table}" WHERE rowid > ? ORDER BY rowid'
    point = f'SELECT rowid, {cols} FROM "{table}" WHERE rowid = ?'
    last = -(2**63)
    while True:
        try:
            for row in conn.execute(scan, [last]):
                last = row[0]
                yield row
            return
        except page_errors():
            rec.unreadable_spots += 1
        if last == -(2**63):
            last = 0
        limit = max(upper or 0, last) if upper is not None else last + 100_000
        found = False
        r = last + 1
        while r <= limit:
            try:
                row = conn.execute(point, [r]).fetchone()
            except page_errors():
                row = None
            if row is not None:
                last = row[0]
                yield row
                found = True
                break
            r += 1
        if not found:
            return


def _copy_all(src: sqlite3.Connection, dst: sqlite3.Connection, rec: Recovery) -> None:
    for table in TABLES:
        have = _columns(src, table)
        want = [r[1] for r in dst.execute(f"PRAGMA table_info({table})")]
        skip = {"readings": {"seq", "batch_id"}, "rejects": {"id"}, "events": {"id"}}.get(
            table, set()
        )
        cols = [c for c in have if c in want and c not in skip]
        if not cols:
            rec.salvaged[table] = 0
            continue
        upper = _sequence(src, table)
        marks = ", ".join("?" for _ in cols)
        names = ", ".join(f'"{c}"' for c in cols)
        insert = f'INSERT OR IGNORE INTO "{table}" ({names}) VALUES ({marks})'
        count = 0
        last_seq = 0
        batch: list[list[Any]] = []
        for row in salvage_rows(src, table, cols, upper, rec):
            values = list(row[1:])
            if table == "agent_state" and values[cols.index("key")] == HEALTH_KEY:
                continue
            batch.append(values)
            last_seq = row[0]
            if len(batch) >= 500:
                count += _insert_many(dst, insert, batch)
                batch = []
        count += _insert_many(dst, insert, batch)
        rec.salvaged[table] = count
        if table == "readings":
            high = max(upper or 0, last_seq)
            rec.readings_lost_estimate = max(0, high - count)


def _insert_many(dst: sqlite3.Connection, sql: str, rows: list[list[Any]]) -> int:
    """Insert a batch; if one row is refused (damaged bytes: NOT NULL, types), row by row."""
    if not rows:
        return 0
    dst.execute("SAVEPOINT salvage")
    try:
        changed = dst.executemany(sql, rows).rowcount
        dst.execute("RELEASE salvage")
        return changed
    except errors():
        dst.execute("ROLLBACK TO salvage")
        dst.execute("RELEASE salvage")
    changed = 0
    for values in rows:
        try:
            changed += dst.execute(sql, values).rowcount
        except errors():
            continue
    return changed


# --- for `edge-agent db check` -------------------------------------------------------------
def quarantined_files(path: Path) -> list[Path]:
    return sorted(
        p for p in path.parent.glob(path.name + ".corrupt-*")
        if not p.name.endswith(("-wal", "-shm", ".salvage"))
    )


def check_report(path: Path, *, seconds: float = CHECK_SECONDS) -> dict[str, Any]:
    """What ``edge-agent db check`` shows: the live check, the last recovery, quarantined files."""
    result: dict[str, Any] = {"store": str(path)}
    check = quick_check(path, seconds=seconds)
    result["check"] = "ok" if check.ok and check.complete else (
        "incomplete" if check.ok else "damaged")
    result["problems"] = list(check.problems)
    result["quarantined"] = [str(p) for p in quarantined_files(path)]
    health = None
    if check.ok:
        try:
            conn = store_connect.connect(path, mode="ro")
            try:
                health = _get(conn, HEALTH_KEY)
            finally:
                conn.close()
        except page_errors():
            health = None
    result["health"] = health
    return result
