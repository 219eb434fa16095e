"""Every connection to the agent's store is opened here: plain SQLite or SQLCipher.

The store's interface stays a path: :class:`edge_agent.store.writer.Store`, the CLI's readers
(:mod:`edge_agent.store.read`) and recovery (:mod:`edge_agent.store.recovery`) call
:func:`connect` with the store's path, and the key that path needs is looked up here. The CLI
registers it once, when it loads the unit's settings (:func:`configure`, resolved at the first
open: a command that never opens the store never reads the key file). A path nobody registered
is plain SQLite, exactly as before (tests, benchmarks, the central receiver).

With a key, the connection is ``sqlcipher3.dbapi2`` (the sqlite3 DB-API over SQLCipher) and
``PRAGMA key`` is its first statement, checked at once by reading the schema: a key that does
not open the store is a :class:`StoreError` ("the store key does not open this store"), never
"file is not a database" later. Without one, ``sqlite3.connect(path, ...)`` is called as
before (the chaos harness replaces ``sqlite3.connect`` for its lazy VFS).

SQLCipher's exceptions are not sqlite3's: code that catches database errors on the store's
connections catches :func:`database_errors` / :func:`operational_errors` / :func:`errors` (tuples
holding both). sqlite-utils' ``Database(conn)`` takes either connection (it only checks for a
path); its own ``except sqlite3.OperationalError`` are feature probes that do not fail on
SQLCipher's SQLite (3.51: STRICT tables and upserts exist).

With a key, a file whose first page does not decrypt is told apart from damage
(:func:`key_problem`): a plain SQLite header ("not encrypted": run ``db encrypt``), or a first
page that looks random (entropy: page 1 of a plain store is schema text and b-tree headers, of
an encrypted one uniform bytes): "the store key does not open this store". Recovery never
quarantines a store for these: the open is refused (an encrypted store whose first page is
damaged looks the same as a wrong key; refusing is the safe side). Damage elsewhere in an
encrypted store is recovered as in a plain one (SQLCipher reports a page whose HMAC fails as
out of memory: :func:`page_errors`). Without a key, an encrypted store cannot be told from random
bytes: it is handled as damage (moved aside, never deleted), with a hint
(:func:`encrypted_hint`).
"""

from __future__ import annotations

import math
import sqlite3
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from edge_agent.errors import StoreError
from edge_agent.store.key import StoreKey, resolve_key

if TYPE_CHECKING:
    from edge_agent.settings import StoreSettings

PLAIN_HEADER = b"SQLite format 3\x00"
ENCRYPTED_ENTROPY = 7.0  # bits per byte over page 1: random ~7.95, SQLite schema page < 6


def _both(name: str) -> tuple[type[Exception], ...]:
    """sqlite3's exception class ``name``, and SQLCipher's once its binding is loaded (only a
    keyed store loads it: it costs 6 MB of RSS, so a plain agent never imports it). Called in
    ``except`` clauses, which are evaluated when an exception is being matched."""
    mine: type[Exception] = getattr(sqlite3, name)
    cipher = sys.modules.get("sqlcipher3.dbapi2")
    return (mine,) if cipher is None else (mine, getattr(cipher, name))


def errors() -> tuple[type[Exception], ...]:
    """Any DB-API error of either binding."""
    return _both("Error")


def database_errors() -> tuple[type[Exception], ...]:
    return _both("DatabaseError")


def operational_errors() -> tuple[type[Exception], ...]:
    return _both("OperationalError")


def page_errors() -> tuple[type[Exception], ...]:
    """An unreadable page: SQLCipher reports a page whose HMAC check fails inside a statement
    as out of memory (MemoryError), for recovery an unreadable page like any other."""
    return (*_both("DatabaseError"), MemoryError)


@dataclass
class _Entry:
    settings: StoreSettings | None
    config: str
    key: StoreKey | None = None
    resolved: bool = False


_lock = threading.Lock()
_entries: dict[Path, _Entry] = {}


def _id(path: Path | str) -> Path:
    return Path(path).resolve()


def configure(path: Path | str, settings: StoreSettings, config: str) -> None:
    """The store at ``path`` is opened as ``settings`` say (the key is read at the first open)."""
    with _lock:
        _entries[_id(path)] = _Entry(settings, config)


def use_key(path: Path | str, key: StoreKey | None) -> None:
    """Open the store at ``path`` with ``key`` (None: plain)."""
    with _lock:
        _entries[_id(path)] = _Entry(None, "", key, resolved=True)


def forget(path: Path | str) -> None:
    with _lock:
        _entries.pop(_id(path), None)


def key_for(path: Path | str) -> StoreKey | None:
    """The key the store at ``path`` needs (None: plain); ConfigError if it cannot be had."""
    with _lock:
        entry = _entries.get(_id(path))
        if entry is None:
            return None
        if not entry.resolved:
            assert entry.settings is not None
            entry.key = resolve_key(entry.settings, entry.config)
            entry.resolved = True
        return entry.key


def connect(
    path: Path, *, mode: str | None = None, key_of: Path | None = None, **kwargs: Any
) -> sqlite3.Connection:
    """A connection to ``path`` with the key of the store at ``key_of`` (default: ``path``;
    recovery opens a quarantined copy with its store's key). ``mode``: ``"ro"``/``"rw"``
    opens ``file:PATH?mode=...`` (never creates the file). The connection's first statement
    is ``PRAGMA key`` when there is a key; a key that does not open the file is a StoreError."""
    key = key_for(key_of if key_of is not None else path)
    if key is None:
        plain: sqlite3.Connection
        if mode is None:
            plain = sqlite3.connect(path, **kwargs)
        else:
            plain = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, **kwargs)
        return plain
    from sqlcipher3 import dbapi2 as cipher

    target = str(path) if mode is None else f"file:{quote(str(path))}?mode={mode}"
    conn: sqlite3.Connection = cipher.connect(target, uri=mode is not None, **kwargs)
    try:
        conn.execute(key.pragma())
        conn.execute("PRAGMA cipher_log_level = NONE")  # its errors are ours to report
        conn.execute("PRAGMA user_version").fetchone()  # page 1 only: decrypts or not
    except cipher.DatabaseError:
        conn.close()
        problem = key_problem(path, key)
        if problem is not None:
            raise problem from None
        raise  # damage: for the caller (recovery) to judge, as with a plain store
    return conn


def entropy(data: bytes) -> float:
    """Shannon entropy in bits per byte."""
    if not data:
        return 0.0
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


def file_kind(path: Path) -> str:
    """``plain`` (an SQLite header), ``encrypted`` (a first page of random-looking bytes),
    ``empty`` or ``other`` (damaged, or not a database)."""
    try:
        with open(path, "rb") as f:
            page = f.read(4096)
    except OSError:
        return "other"
    if not page:
        return "empty"
    if page.startswith(PLAIN_HEADER):
        return "plain"
    if len(page) >= 1024 and entropy(page[16:]) >= ENCRYPTED_ENTROPY:
        return "encrypted"
    return "other"


def key_problem(path: Path, key: StoreKey) -> StoreError | None:
    """The key problem that makes ``path`` unreadable with ``key``, if that is what it is
    (None: damage, for recovery to look at)."""
    kind = file_kind(path)
    if kind == "plain":
        return StoreError(
            "store.not_encrypted",
            f'{path}: this store is not encrypted but [store] encryption = "sqlcipher". Fix: '
            'stop the agent and run edge-agent db encrypt, or set encryption = "off"',
        )
    if kind == "encrypted":
        return StoreError(
            "store.wrong_key",
            f"{path}: the store key does not open this store (key from {key.source}). Fix: "
            "give the key this store was encrypted with ([store] key_file, or the store-key "
            "credential); without it the store cannot be read",
        )
    return None


def encrypted_hint(path: Path) -> str:
    """For a store opened without a key that is not a database: a hint when it looks like an
    encrypted one ("" otherwise). Without a key, an encrypted store and random bytes look the
    same: such a file is handled as damage (moved aside, never deleted) so the unit keeps
    acquiring; the hint says how to get it back."""
    if key_for(path) is not None or file_kind(path) != "encrypted":
        return ""
    return (
        ' (if this store is encrypted: set [store] encryption = "sqlcipher" and key_file '
        "to its key)"
    )


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED (any extended code: ``BUSY_SNAPSHOT``, ``BUSY_RECOVERY``):
    another connection holds what this one needs; trying again later can succeed."""
    if not isinstance(exc, operational_errors()):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def is_malformed(exc: BaseException) -> bool:
    """SQLITE_CORRUPT ("database disk image is malformed") as one connection saw it: it may be
    that connection's stale view (a WAL index rebuilt under it), not the file: reopen the
    connection and try once more before declaring the store damaged."""
    if not isinstance(exc, database_errors()):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_CORRUPT:
        return True
    return "malformed" in str(exc)
