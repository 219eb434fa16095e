"""A damaged store is moved aside, never deleted, and what is readable carries on in a new one.

At every exclusive open (no other process has the store open) the store gets a bounded
``PRAGMA quick_check`` through a read-only connection (a read-only connection never
checkpoints, so the bytes of a damaged file and its WAL stay as they were). On failure:

0. **marker**: ``<name>.salvage-pending`` (fsynced) names the quarantine before anything
   moves; a start that finds it finishes the salvage first (a power cut interrupted it);
1. **quarantine**: the file and its ``-wal``/``-shm`` are renamed, in the same directory, to
   ``<name>.corrupt-<UTC stamp>`` (+ ``-wal``/``-shm``), mode 0600; nothing is deleted;
2. **salvage**: every table of the new store's schema (:mod:`edge_agent.store.salvage_plan`: derived
   from ``sqlite_master``, less the new store's own identity) is copied row by row from the
   quarantined file (read-only) into a new store built as ``<name>.salvaging``, in one
   transaction; a scan that hits a damaged page continues past it with point look-ups, so
   only the rows on unreadable pages are lost. A file whose 100-byte header is garbled is read
   through a copy with a rebuilt header (the copy is deleted afterwards).
   Readings keep their ``id`` (central recognises what it already holds) and their
   ``sent_at`` (sent stays sent), get new seqs in the new store (a new store, a new epoch),
   ``batch_id`` is cleared (the old batches' seq ranges mean nothing in the new store);
3. **report**, in the same transaction: an ``events`` row ``store.recovered`` with the counts,
   ``agent_state`` key ``store-health`` (for ``edge-agent db check``, ``doctor``, the nurse's
   status and sync); then the new file is fsynced and renamed to ``<name>`` (atomic), and the
   marker removed; one log line (counts and file names only, never row contents).

A quarantine is never called deletable while it holds readings central has not acknowledged
(neither there nor from the new store) or rows that could not be read (:func:`check_report`).

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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.durable import fsync_path
from edge_agent.errors import StoreError
from edge_agent.store import connect as store_connect
from edge_agent.store.connect import errors, operational_errors, page_errors
from edge_agent.store.salvage_plan import (
    columns_to_copy,
    may_delete_quarantine,
    quarantine_advice,
    tables_to_copy,
)

log = logging.getLogger(__name__)

CHECK_SECONDS = 10.0
CHECK_MAX_ERRORS = 20
HEALTH_KEY = "store-health"
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
    resumed: bool = False  # finished by a later start (a power cut interrupted it)


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
    """Before the store is opened: finish a salvage a power cut interrupted; check the store
    (when we own it alone) and recover it if damaged.

    The store's one hook (``Store.__init__``); ``record(db, prepared)`` writes the check's
    outcome into the store once it is open (a recovery's report is already in it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    guard = StoreGuard(path)
    prepared = Prepared(guard)
    try:
        if guard.exclusive and marker_path(path).exists():
            prepared.recovery = resume(path)
            prepared.check = CheckResult(False, True, prepared.recovery.problems)
        elif guard.exclusive and path.exists() and path.stat().st_size > 0:
            prepared.check = quick_check(path, seconds=check_seconds)
            if not prepared.check.ok:
                prepared.recovery = recover(path, prepared.check.problems)
    except BaseException:
        guard.release()
        raise
    guard.share()
    return prepared


def record(db: Any, prepared: Prepared) -> None:
    """Write the check's outcome into the open store (``store-health`` state). A recovery's
    report (state and event) was written with the salvaged rows, in the same transaction."""
    from edge_agent.clock import utc_now
    from edge_agent.store.database import put_state

    check = prepared.check
    if check is None or prepared.recovery is not None:
        return
    previous = _get(db, HEALTH_KEY)
    if previous is not None and previous.get("state") == "recovered":
        return  # keep the recovery visible until a technician acknowledges it
    put_state(
        db,
        HEALTH_KEY,
        {
            "state": "ok" if check.complete else "check-incomplete",
            "at": utc_now(),
            "check_seconds": round(check.seconds, 3),
        },
    )


def _get(db: Any, key: str) -> Any:
    row = db.execute("SELECT value FROM agent_state WHERE key = ?", [key]).fetchone()
    return None if row is None else json.loads(row[0])


# --- quarantine and salvage ----------------------------------------------------------------
# A salvage is atomic: the new store is built under a temporary name and renamed into place
# only after its one transaction committed and its file was fsynced. A durable marker, written
# before the damaged store is renamed aside, names the quarantine: a start that finds the
# marker (a power cut during the salvage) finishes the salvage before anything else opens the
# store, so an interrupted salvage never leaves an empty store in place of the readings.
MARKER_SUFFIX = ".salvage-pending"
BUILD_SUFFIX = ".salvaging"
# Tests set this to stop (and be killed) at a step: "quarantined", "copied" (before the
# COMMIT), "committed" (before the rename into place), "renamed" (before the marker goes).
step_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if step_hook is not None:
        step_hook(name)


def marker_path(path: Path) -> Path:
    return path.with_name(path.name + MARKER_SUFFIX)


def build_path(path: Path) -> Path:
    return path.with_name(path.name + BUILD_SUFFIX)


def quarantine_name(path: Path, stamp: str | None = None) -> Path:
    stamp = stamp or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists() or target.with_name(target.name + "-wal").exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    return target


def quarantine(path: Path, stamp: str | None = None, *, target: Path | None = None) -> Path:
    """Rename the store and its side files aside (same directory, 0600); return the new path."""
    target = target or quarantine_name(path, stamp)
    for suffix in SIDE_FILES:  # side files first: the main file's name is the commit point
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, target.with_name(target.name + suffix))
            os.chmod(target.with_name(target.name + suffix), 0o600)
    os.replace(path, target)
    os.chmod(target, 0o600)
    fsync_path(path.parent)
    return target


def _write_marker(path: Path, content: dict[str, Any]) -> None:
    marker = marker_path(path)
    tmp = marker.with_name(marker.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(content).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, marker)
    fsync_path(path.parent)


def read_marker(path: Path) -> dict[str, Any] | None:
    """The pending salvage's marker (None: no salvage pending, or an unreadable marker)."""
    try:
        value = json.loads(marker_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def recover(path: Path, problems: tuple[str, ...] = ()) -> Recovery:
    """Quarantine the damaged store at ``path`` and salvage it into a new one."""
    moved = quarantine_name(path)
    _write_marker(path, {"quarantined": str(moved), "problems": list(problems[:5])})
    hint = store_connect.encrypted_hint(path)
    quarantine(path, target=moved)
    _step("quarantined")
    return _salvage(path, moved, Recovery(quarantined=str(moved), problems=problems[:5]), hint)


def resume(path: Path) -> Recovery:
    """Finish the salvage the marker beside ``path`` names (a power cut interrupted it)."""
    marker = read_marker(path)
    if marker is None or not isinstance(marker.get("quarantined"), str):
        raise StoreError(
            "store.salvage_marker",
            f"{marker_path(path)}: a store salvage was interrupted but its marker cannot be "
            "read. Fix: keep every file beside the store; give support the folder's listing",
        )
    moved = Path(marker["quarantined"])
    problems = tuple(str(p) for p in marker.get("problems", ()))[:5]
    rec = Recovery(quarantined=str(moved), problems=problems, resumed=True)
    if not moved.exists():
        if not path.exists():
            raise StoreError(
                "store.salvage_lost",
                f"{marker_path(path)}: names {moved.name}, which is not there. Fix: keep every "
                "file beside the store; give support the folder's listing",
            )
        log.warning(
            "store: a salvage of %s was interrupted before the move aside: resuming", path.name
        )
        quarantine(path, target=moved)
    elif path.exists():
        # The salvaged store was renamed into place: only the marker's removal was left.
        done = _salvaged_from(path)
        if done is not None and done.get("quarantined") == str(moved):
            log.warning("store: the salvage into %s had finished; marker removed", path.name)
            _remove_marker(path)
            return _recovery_from(done)
        raise StoreError(
            "store.salvage_conflict",
            f"{path}: a salvage of {moved.name} was interrupted, and a store not made by it is "
            "in place. Fix: stop the agent; give support the folder's listing (nothing was "
            "changed)",
        )
    else:
        log.warning(
            "store: a salvage of %s was interrupted (power cut?): resuming from %s",
            path.name,
            moved.name,
        )
    return _salvage(path, moved, rec, store_connect.encrypted_hint(moved))


def _salvaged_from(path: Path) -> dict[str, Any] | None:
    try:
        conn = store_connect.connect(path, mode="ro")
        try:
            value = _get(conn, HEALTH_KEY)
        finally:
            conn.close()
    except _unreadable():
        return None
    return value if isinstance(value, dict) and value.get("state") == "recovered" else None


def _recovery_from(health: dict[str, Any]) -> Recovery:
    names = {f.name for f in fields(Recovery)}
    values = {k: v for k, v in health.items() if k in names}
    values["problems"] = tuple(values.get("problems", ()))
    return Recovery(**{**values, "resumed": True})


def _remove_marker(path: Path) -> None:
    marker_path(path).unlink(missing_ok=True)
    fsync_path(path.parent)


def _remove_build(build: Path) -> None:
    for suffix in ("", *SIDE_FILES):
        build.with_name(build.name + suffix).unlink(missing_ok=True)


def _salvage(path: Path, moved: Path, rec: Recovery, hint: str) -> Recovery:
    """Copy what is readable in ``moved`` into a new store built beside ``path``, report in it,
    then rename it into place and remove the marker."""
    from edge_agent.clock import utc_now
    from edge_agent.store.database import open_database, put_state

    build = build_path(path)
    _remove_build(build)  # what an interrupted salvage left: never committed into place
    store_connect.use_key(build, store_connect.key_for(path))
    source, scratch = _readable_source(moved, rec, path)
    try:
        db = open_database(build)  # a new store (new epoch), migrated
        try:
            db.conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: random-key index inserts
            with db.conn:
                # One transaction: _insert_many's SAVEPOINTs would otherwise each commit.
                db.conn.execute("BEGIN")
                if source is not None:
                    _copy_all(source, db.conn, rec)
                now = utc_now()
                report = asdict(rec)
                put_state(db, HEALTH_KEY, {"state": "recovered", "at": now, **report})
                db.conn.execute(
                    "INSERT INTO events (at, kind, device_id, detail) "
                    "VALUES (?, 'store.recovered', NULL, ?)",
                    [now, json.dumps(report)],
                )
                _step("copied")
            db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
    finally:
        if source is not None:
            source.close()
        store_connect.forget(build)
        if scratch is not None:
            _remove_build(scratch)
    for suffix in SIDE_FILES:  # checkpointed and closed: nothing of the store is in them
        build.with_name(build.name + suffix).unlink(missing_ok=True)
    fsync_path(build)
    _step("committed")
    os.replace(build, path)
    fsync_path(path.parent)
    _step("renamed")
    _remove_marker(path)
    log.warning(
        "store: %s was damaged (%s); moved to %s; salvaged %s; readings lost (estimate): %d%s%s",
        path,
        "; ".join(p.splitlines()[-1] for p in rec.problems if p)[:200] or "check failed",
        moved.name,
        rec.salvaged,
        rec.readings_lost_estimate,
        " (resumed after an interruption)" if rec.resumed else "",
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
    """Every table of the new store's schema (:func:`edge_agent.store.salvage_plan.tables_to_copy`)
    that the damaged store has, row by row."""
    schema = [r[0] for r in dst.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables_to_copy(schema):
        want = [r[1] for r in dst.execute(f'PRAGMA table_info("{table}")')]
        cols = columns_to_copy(table, _columns(src, table), want)
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
        p
        for p in path.parent.glob(path.name + ".corrupt-*")
        if not p.name.endswith(("-wal", "-shm", ".salvage"))
    )


def inspect_quarantine(moved: Path, store: Path, current: Any | None) -> dict[str, Any]:
    """What a quarantined store still holds that central does not: its readings that are
    neither sent there nor sent from the current store (``current``: a read-only connection
    to it, None when it cannot be read), and how many could not be read. The file is opened
    read-only, as the salvage reads it (a garbled header: through a copy, deleted after)."""
    out: dict[str, Any] = {
        "file": str(moved),
        "readable": False,
        "readings": 0,
        "not_at_central": 0,
        "unreadable": 0,
    }
    rec = Recovery(quarantined=str(moved))
    conn, scratch = _readable_source(moved, rec, store)
    if conn is not None:
        try:
            upper = _sequence(conn, "readings")
            count = last = missing = 0
            unsent: list[str] = []  # checked against the current store 500 at a time
            if _columns(conn, "readings"):
                for row in salvage_rows(conn, "readings", ["id", "sent_at"], upper, rec):
                    count, last = count + 1, row[0]
                    if row[2] is None:
                        unsent.append(str(row[1]))
                    if len(unsent) >= 500:
                        missing += len(unsent) - _sent_in(current, unsent)
                        unsent = []
            missing += len(unsent) - _sent_in(current, unsent)
            out.update(
                readable=True,
                readings=count,
                not_at_central=missing,
                unreadable=max(0, max(upper or 0, last) - count),
            )
        finally:
            conn.close()
    if scratch is not None:
        _remove_build(scratch)
    out["may_delete"] = may_delete_quarantine(
        out["readable"], out["not_at_central"], out["unreadable"]
    )
    out["advice"] = quarantine_advice(out["readable"], out["not_at_central"], out["unreadable"])
    return out


def _sent_in(current: Any | None, ids: list[str]) -> int:
    """How many of ``ids`` (at most 500) the current store has sent (central acknowledged)."""
    if current is None or not ids:
        return 0
    marks = ", ".join("?" for _ in ids)
    return int(
        current.execute(
            f"SELECT count(*) FROM readings WHERE id IN ({marks}) AND sent_at IS NOT NULL", ids
        ).fetchone()[0]
    )


def check_report(path: Path, *, seconds: float = CHECK_SECONDS) -> dict[str, Any]:
    """What ``edge-agent db check`` shows: the live check, the last recovery, quarantined files
    (each with what it still holds that central does not), a salvage left pending."""
    result: dict[str, Any] = {"store": str(path)}
    marker = read_marker(path) if marker_path(path).exists() else None
    result["salvage_pending"] = (
        None if not marker_path(path).exists() else ((marker or {}).get("quarantined") or "?")
    )
    check = (
        quick_check(path, seconds=seconds)
        if path.exists()
        else CheckResult(False, True, ("no store file",))
    )
    result["check"] = (
        "ok" if check.ok and check.complete else ("incomplete" if check.ok else "damaged")
    )
    if result["salvage_pending"] is not None and not check.ok:
        result["check"] = "salvage-pending"
    result["problems"] = list(check.problems)
    quarantined = quarantined_files(path)
    result["quarantined"] = [str(p) for p in quarantined]
    health = None
    current = None
    if check.ok:
        try:
            current = store_connect.connect(path, mode="ro")
            health = _get(current, HEALTH_KEY)
        except page_errors():
            health = None
    try:
        result["quarantine"] = [inspect_quarantine(q, path, current) for q in quarantined]
    finally:
        if current is not None:
            current.close()
    result["health"] = health
    return result
