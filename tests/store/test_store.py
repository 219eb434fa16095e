"""The store on real files: durability settings, modes, migrations, group commit, reopen."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from drivers.base import Rejected
from edge_agent.errors import StoreError
from edge_agent.models import measurement
from edge_agent.store.database import open_database
from edge_agent.store.migrations import migrations
from edge_agent.store.writer import Store


def test_new_store_is_0600_wal_full_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    with Store(path, "mmu-01") as store:
        store.append("ox", [measurement("spo2", 97.0)]).result()
        # -wal exists while the store is open; SQLite gives it the database's mode
        for name in ("unit.db", "unit.db-wal"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
        assert store.call(lambda db: db.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
        assert store.call(lambda db: db.execute("PRAGMA synchronous").fetchone()[0]) == 2
        applied = store.call(lambda db: [m.name for m in migrations.applied(db)])
    assert applied == [m.name for m in migrations._migrations]


def test_group_commit_puts_concurrent_appends_in_few_transactions(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-01", group_wait=0.05) as store:
        futures = [store.append("ox", [measurement("spo2", 90.0 + i % 10)]) for i in range(300)]
        seqs = [f.result(10)[0] for f in futures]
        assert seqs == list(range(1, 301))
        assert store.accepted == 300
        assert store.commits < 30  # 300 operations, grouped


def test_reading_counted_only_after_commit_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    with Store(path, "mmu-01") as store:
        fut = store.append("ox", [measurement("pulse_rate", 72.0)], [Rejected(b"\x01\x02", "crc")])
        assert fut.result(10) == [1]
    with Store(path, "mmu-01") as store:
        assert store.stats() == {
            "readings_total": 1,
            "readings_pending_sync": 1,
            "readings_sent": 0,
            "rejects": 1,
            "readings_refused_by_central": 0,
        }
        # a reopened store continues the sequence: seq is never reused
        assert store.append("ox", [measurement("pulse_rate", 73.0)]).result(10) == [2]


def test_implausible_value_is_stored_with_a_flag_not_dropped(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        store.append("ox", [measurement("spo2", 140.0), measurement("spo2", 85.0)]).result(10)
        flags = store.call(
            lambda db: [r[0] for r in db.execute("SELECT flags FROM readings ORDER BY seq")]
        )
    assert flags == ['["implausible"]', '["alert"]']


def test_failing_operation_fails_alone_in_its_group(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-01", group_wait=0.05) as store:
        good = store.append("ox", [measurement("spo2", 97.0)])
        bad = store.submit(lambda db: db.execute("INSERT INTO nowhere VALUES (1)"))
        good2 = store.append("ox", [measurement("spo2", 96.0)])
        assert good.result(10) == [1]
        with pytest.raises(sqlite3.OperationalError):
            bad.result(10)
        assert good2.result(10) == [2]
        assert store.stats()["readings_total"] == 2


def test_a_file_that_is_not_a_store_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match="not a readable SQLite store"):
        open_database(path)
    assert path.read_bytes().startswith(b"this is not SQLite")  # untouched


def test_committed_readings_survive_kill_9_mid_stream(tmp_path: Path) -> None:
    """A writer killed with SIGKILL loses nothing it reported as accepted."""
    path = tmp_path / "unit.db"
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from edge_agent.models import measurement
        from edge_agent.store.writer import Store
        store = Store(Path({str(path)!r}), "mmu-01", group_wait=0.001)
        i = 0
        while True:
            seq = store.append("ox", [measurement("spo2", 90.0)]).result()[0]
            print(seq, flush=True)
            i += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked = 0
    for line in proc.stdout:
        acked = int(line)
        if acked >= 200:
            break
    proc.kill()
    proc.wait()
    proc.stdout.close()
    with Store(path, "mmu-01") as store:
        total = store.stats()["readings_total"]
        ok = store.call(lambda db: db.execute("PRAGMA integrity_check").fetchone()[0])
    assert ok == "ok"
    assert total >= acked  # every acknowledged reading is there (and maybe a few more)
