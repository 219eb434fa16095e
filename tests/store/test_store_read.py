"""CLI views open the store read-only: never migrated, no writer thread, the file untouched."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlite_utils import Database, Migrations
from typer.testing import CliRunner

import edge_agent.store.writer
from edge_agent.cli import app
from edge_agent.models import measurement
from edge_agent.store import migrations as steps
from edge_agent.store.database import open_database
from edge_agent.store.migrations import migrations
from edge_agent.store.writer import Store

runner = CliRunner()


def applied(path: Path) -> list[str]:
    db = Database(path)
    try:
        return [r["name"] for r in db["_sqlite_migrations"].rows]
    finally:
        db.close()


def tables(path: Path) -> set[str]:
    db = Database(path)
    try:
        return set(db.table_names())
    finally:
        db.close()


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def older_store(path: Path) -> None:
    """A store as an edge-agent with only the first two schema steps left it."""
    old = Migrations("edge_agent")
    old()(steps.m001_initial)
    old()(steps.m002_reading_position)
    db = open_database(path, old)
    with db.conn:
        db.execute(
            "INSERT INTO readings (id, unit_id, device_id, quantity, value, unit, received_at, "
            "clock_source) VALUES ('r1', 'mmu-1', 'ox', 'spo2', 97, '%', '2026-01-01T00:00:00Z', "
            "'system')"
        )
    db.close()


def refuse_writers(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, fail any attempt to start a Store (writer thread) or to migrate."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a CLI view started a writer or migrated the store")

    monkeypatch.setattr(Store, "__init__", refuse)
    monkeypatch.setattr(edge_agent.store.writer, "open_database", refuse)
    monkeypatch.setattr(Migrations, "apply", refuse)


def test_db_stats_reads_an_older_store_without_migrating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "unit.db"
    older_store(path)
    refuse_writers(monkeypatch)
    before = fingerprint(path)
    result = runner.invoke(app, ["db", "stats", "--db", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["readings_total"] == 1
    assert fingerprint(path) == before
    assert applied(path) == ["m001_initial", "m002_reading_position"]
    assert "agent_state" not in tables(path)


def test_sync_status_refuses_an_older_store_with_its_version_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "unit.db"
    older_store(path)
    refuse_writers(monkeypatch)
    for command in (["sync", "status"], ["sync", "now"]):
        result = runner.invoke(app, [*command, "--db", str(path)])
        assert result.exit_code == 4, result.output
        assert f"schema version 2 of {len(migrations._migrations)}" in result.output
        assert "needs version 4" in result.output and "start the agent" in result.output
    assert applied(path) == ["m001_initial", "m002_reading_position"]


def test_a_store_from_a_newer_edge_agent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    Store(path, "mmu-1").close()
    db = Database(path)
    with db.conn:
        db.table("_sqlite_migrations").insert(
            {"migration_set": "edge_agent", "name": "m999_future", "applied_at": "2030"}
        )
    db.close()
    result = runner.invoke(app, ["db", "stats", "--db", str(path)])
    assert result.exit_code == 4
    assert "newer edge-agent" in result.output and "m999_future" in result.output


def test_a_sqlite_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    Database(path).table("t").insert({"x": 1})
    result = runner.invoke(app, ["db", "stats", "--db", str(path)])
    assert result.exit_code == 4 and "not an edge-agent store" in result.output
    assert tables(path) == {"t"}


def test_db_stats_on_a_live_store_runs_no_migration_and_no_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "unit.db"
    agent = Store(path, "mmu-1")
    refuse_writers(monkeypatch)
    try:
        writing = threading.Event()
        done = threading.Event()

        def append() -> None:
            while not done.is_set():
                agent.append("ox", [measurement("spo2", 97.0)]).result()
                writing.set()

        thread = threading.Thread(target=append)
        thread.start()
        try:
            assert writing.wait(10)
            writers = {t.ident for t in threading.enumerate() if t.name == "store-writer"}
            totals = []
            for _ in range(10):
                result = runner.invoke(app, ["db", "stats", "--db", str(path), "--json"])
                assert result.exit_code == 0, result.output
                totals.append(json.loads(result.output)["readings_total"])
                now = {t.ident for t in threading.enumerate() if t.name == "store-writer"}
                assert now == writers
        finally:
            done.set()
            thread.join()
        assert totals == sorted(totals) and totals[-1] > 0
        assert applied(path) == [m.name for m in migrations._migrations]
        result = runner.invoke(app, ["db", "stats", "--db", str(path), "--json"])
        assert json.loads(result.output)["readings_total"] == agent.stats()["readings_total"]
    finally:
        agent.close()


def test_a_read_changes_neither_the_store_nor_its_wal(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    wal = Path(f"{path}-wal")
    with Store(path, "mmu-1") as store:
        for _ in range(20):
            store.append("ox", [measurement("spo2", 97.0)]).result()
        # The agent is running and idle: the store and its WAL hold the readings.
        before, wal_before = fingerprint(path), fingerprint(wal)
        for command in (["db", "stats"], ["sync", "status"]):
            result = runner.invoke(app, [*command, "--db", str(path)])
            assert result.exit_code == 0, result.output
        assert fingerprint(path) == before and fingerprint(wal) == wal_before
    # The agent stopped (WAL checkpointed and removed): a read leaves the store as it was;
    # SQLite may create an empty -wal and the -shm index beside it (documented).
    before = fingerprint(path)
    result = runner.invoke(app, ["db", "stats", "--db", str(path), "--json"])
    assert json.loads(result.output)["readings_total"] == 20
    assert fingerprint(path) == before
    assert not wal.exists() or wal.stat().st_size == 0


def test_db_stats_in_its_own_process_while_the_agent_writes(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    with Store(path, "mmu-1") as store:
        store.append("ox", [measurement("spo2", 97.0)]).result()
        done = threading.Event()

        def append() -> None:
            while not done.is_set():
                store.append("ox", [measurement("spo2", 97.0)]).result()

        thread = threading.Thread(target=append)
        thread.start()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "edge_agent", "db", "stats", "--db", str(path), "--json"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            done.set()
            thread.join()
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["readings_total"] >= 1


def test_a_reading_session_cannot_write(tmp_path: Path) -> None:
    from edge_agent.errors import StoreError
    from edge_agent.store.read import reading

    path = tmp_path / "unit.db"
    Store(path, "mmu-1").close()
    before = fingerprint(path)
    with pytest.raises(StoreError, match="readonly"), reading(path) as db:
        db.execute("DELETE FROM readings")
    assert fingerprint(path) == before
