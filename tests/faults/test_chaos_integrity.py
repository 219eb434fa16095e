"""The chaos harness's integrity check after a kill leaves the store as the kill left it: the
WAL of a killed writer stays for the next start (a real writer process, SIGKILLed)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.faults.chaos import integrity_ok, wal_left

WRITER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # every commit stays in the WAL
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    for i in range(200):
        conn.execute("INSERT INTO t (v) VALUES (?)", ["x" * 200])
    print("committed", flush=True)
    time.sleep(3600)  # killed here, the connection open
""")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_check_after_a_kill_keeps_the_wal_for_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "unit.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "committed"  # the child exits on any error
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    wal = tmp_path / "unit.db-wal"
    assert wal_left(db)
    before = _digest(db), _digest(wal)

    assert integrity_ok(db)
    assert integrity_ok(db)  # twice: still nothing checkpointed
    assert wal_left(db) and (_digest(db), _digest(wal)) == before
