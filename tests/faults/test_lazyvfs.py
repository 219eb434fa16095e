"""The lazy VFS drops exactly the unsynced writes on SIGKILL: with ``synchronous=FULL`` every
acknowledged commit survives, with NORMAL acknowledged commits are lost (the VFS's own negative
control), and the file is intact either way. Limits: see tests/faults/lazyvfs.py."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.faults import lazyvfs

ROOT = Path(__file__).resolve().parents[2]


def kill_after(db: Path, synchronous: str, acks: int) -> list[int]:
    """Run the writer until it acknowledged ``acks`` commits, SIGKILL it: the acked ids."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.lazy_writer", str(db), synchronous],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    acked: list[int] = []
    for line in proc.stdout:  # blocks on the writer's progress; it never stops by itself
        acked.append(int(line))
        if len(acked) >= acks:
            break
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=30)
    acked += [int(x) for x in rest.split()]
    assert proc.returncode == -signal.SIGKILL, "the writer failed before the kill"
    return acked


def stored(db: Path) -> tuple[set[int], str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        try:
            ids = {r[0] for r in conn.execute("SELECT id FROM t")}
        except sqlite3.OperationalError:  # the CREATE TABLE itself was never synced
            ids = set()
    return ids, check


def test_full_keeps_every_acknowledged_commit(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    acked = kill_after(db, "FULL", 300)
    ids, check = stored(db)
    assert check == "ok"
    assert set(acked) <= ids


def test_normal_loses_acknowledged_commits(tmp_path: Path) -> None:
    # Far below the 1000-page auto-checkpoint: nothing after the CREATE was ever synced.
    db = tmp_path / "w.db"
    acked = kill_after(db, "NORMAL", 300)
    ids, check = stored(db)
    assert check == "ok"
    assert len(set(acked) - ids) >= 300


def test_register_twice_is_harmless_and_plain_connections_stay_native(tmp_path: Path) -> None:
    lazyvfs.register()
    lazyvfs.register()
    db = tmp_path / "plain.db"
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (1)")
    assert lazyvfs.pending_bytes() == 0
    uri = f"file:{tmp_path / 'lazy.db'}?vfs={lazyvfs.NAME}"
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as conn:
        conn.execute("PRAGMA synchronous=OFF")  # no sync at all: everything stays pending
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (?)", [b"y" * 5000])
        assert lazyvfs.pending_bytes() > 5000
        assert conn.execute("SELECT length(x) FROM t").fetchone()[0] == 5000
    assert lazyvfs.pending_bytes() == 0  # a clean close writes them out
    with contextlib.closing(sqlite3.connect(tmp_path / "lazy.db")) as conn:
        assert conn.execute("SELECT length(x) FROM t").fetchone()[0] == 5000
