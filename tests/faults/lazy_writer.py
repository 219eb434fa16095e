"""``python -m tests.faults.lazy_writer DB SYNCHRONOUS``: commits one row at a time through the
lazy VFS and prints each id after its COMMIT returned (the acknowledgement), until killed."""

from __future__ import annotations

import contextlib
import sqlite3
import sys

from tests.faults import lazyvfs


def main() -> None:
    path, synchronous = sys.argv[1], sys.argv[2]
    lazyvfs.register()
    conn = sqlite3.connect(f"file:{path}?vfs={lazyvfs.NAME}", uri=True, isolation_level=None)
    with contextlib.closing(conn):
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)")
        while True:
            cur = conn.execute("INSERT INTO t (v) VALUES (?)", ["x" * 200])
            rowid = cur.lastrowid
            # the writer reads its own unsynced writes back (xRead overlays pending writes)
            if conn.execute("SELECT max(id) FROM t").fetchone()[0] != rowid:
                sys.exit(3)
            print(rowid, flush=True)


if __name__ == "__main__":
    main()
