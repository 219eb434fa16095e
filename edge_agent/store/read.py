"""The command line's way into an existing store: read-only, never migrated, no writer thread.

``edge-agent db stats``, ``sync status`` and any other view open the file with SQLite's
``file:PATH?mode=ro`` URI, which reads a WAL store while the agent writes to it and can
never change it: no migration, no checkpoint, no writer thread. What a read may touch: SQLite
keeps its WAL index in ``PATH-shm`` (and needs a ``PATH-wal``); when the agent is stopped
and those files are absent, a read creates them empty, with the store's owner and mode. The
store file itself (contents and mtime) is never written.

The schema is the list of :mod:`edge_agent.store.migrations` steps recorded in the store. A store
written by an older edge-agent is read if it has the steps the view needs, else refused
with its version and the fix (run the agent, which upgrades it); a store with steps this
program does not know was written by a newer edge-agent and is refused.

:func:`requesting` is the one write the CLI makes (a request the running agent picks up,
``sync now``): same checks, ``mode=rw`` (never creates the file), one short transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database, Migrations

from edge_agent.errors import StoreError
from edge_agent.store import connect as store_connect
from edge_agent.store.migrations import migrations

BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class SchemaVersion:
    applied: tuple[str, ...]  # steps of this program's migration set found in the store
    known: tuple[str, ...]  # every step this program knows, in order
    unknown: tuple[str, ...]  # steps in the store this program does not know (newer)

    @property
    def number(self) -> int:
        """Steps applied, as long as they are this program's first steps in order."""
        n = 0
        while n < len(self.known) and self.known[n] in self.applied:
            n += 1
        return n

    def describe(self) -> str:
        return f"schema version {self.number} of {len(self.known)}"


def schema_version(db: Database, migration_set: Migrations = migrations) -> SchemaVersion:
    """Read-only: the steps recorded in ``db`` against the ones ``migration_set`` knows."""
    known = tuple(m.name for m in migration_set.pending(Database(memory=True)))
    applied = tuple(m.name for m in migration_set.applied(db))
    return SchemaVersion(
        applied=applied, known=known, unknown=tuple(a for a in applied if a not in known)
    )


def check_schema(path: Path, version: SchemaVersion, needs: str) -> None:
    """Refuse a store this view cannot read: none, newer, or older than ``needs``."""
    if not version.applied:
        raise StoreError(
            "store.not_edge_agent",
            f"{path}: not an edge-agent store (no schema recorded). Fix: check [store] path "
            "in the config or --db",
        )
    if version.unknown:
        raise StoreError(
            "store.newer",
            f"{path}: written by a newer edge-agent (schema steps {', '.join(version.unknown)} "
            f"are unknown to this one, which has {len(version.known)}). Fix: use the "
            "edge-agent that runs on this unit (edge-agent --version), or upgrade this one",
        )
    if needs not in version.applied or version.known.index(needs) >= version.number:
        raise StoreError(
            "store.older",
            f"{path}: {version.describe()} (written by an older edge-agent); this command "
            f"needs version {version.known.index(needs) + 1}. Fix: start the agent once "
            "(edge-agent run, or restart the service): it upgrades the store",
        )


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    if not path.exists():
        raise StoreError(
            "store.missing",
            f"no store at {path}. Fix: check [store] path in the config (or --db); the agent "
            "creates the store when it first runs",
        )
    if not path.is_file():
        raise StoreError(
            "store.not_a_file", f"{path}: not a store file. Fix: give the store's file path"
        )
    try:
        conn = store_connect.connect(
            path.resolve(),
            mode=mode,
            key_of=path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
        )
    except store_connect.errors() as exc:
        raise _unreadable(path, exc) from None
    return conn


def _unreadable(path: Path, exc: Exception) -> StoreError:
    text = str(exc)
    if "unable to open" in text or "readonly" in text:
        fix = (
            "run as the agent's user (e.g. sudo -u edge-agent), or make the store and its "
            "folder readable to this user (SQLite also needs its -shm file there)"
        )
    else:
        fix = (
            "the file is damaged or is not an edge-agent store: stop the agent, keep a "
            "copy of the file, restore the store from a backup, or move it aside and let "
            "the agent start a new one (readings not yet synced are in the damaged file)"
        )
    return StoreError(
        "store.unreadable",
        f"{path}: cannot read the store ({text}). Fix: {fix}{store_connect.encrypted_hint(path)}",
    )


@contextmanager
def _session(path: Path, mode: str, needs: str) -> Iterator[Database]:
    conn = _connect(path, mode)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db = Database(conn)
        check_schema(path, schema_version(db), needs)
        yield db
    except store_connect.database_errors() as exc:
        raise _unreadable(path, exc) from None
    finally:
        conn.close()


@contextmanager
def reading(path: Path, needs: str = "m001_initial") -> Iterator[Database]:
    """A read-only view of the store at ``path``; ``needs``: the schema step the caller's
    queries need (older stores without it are refused with the fix)."""
    with _session(path, "ro", needs) as db:
        db.execute("PRAGMA query_only=1")
        yield db


@contextmanager
def requesting(path: Path, needs: str) -> Iterator[Database]:
    """The store at ``path`` (never created, never migrated) for one small write, committed
    when the block ends."""
    with _session(path, "rw", needs) as db, db.conn:  # one transaction
        yield db
