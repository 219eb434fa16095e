"""Salvage keeps every table, survives a power cut at any step, and what `db check` and
`doctor` say about it afterwards (real SQLite files, a real subprocess killed mid-salvage)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edge_agent.checks import doctor
from edge_agent.cli import app
from edge_agent.errors import StoreError
from edge_agent.models import measurement
from edge_agent.settings import Settings, StoreSettings, UnitSettings
from edge_agent.store.database import get_state
from edge_agent.store.recovery import build_path, marker_path, quarantined_files
from edge_agent.store.salvage_plan import OWN_COLUMNS, OWN_TABLES
from edge_agent.store.writer import Store
from tests.store.test_recovery import garbage_mid_file, garble_header

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


# --- every table ----------------------------------------------------------------------------
def _value(table: str, column: str, decl: str) -> Any:
    decl = decl.upper()
    if "INT" in decl:
        return 7
    if "REAL" in decl:
        return 1.5
    if "BLOB" in decl:
        return b"\x01\x02"
    return f"{table}.{column}"


def _rows(conn: sqlite3.Connection, table: str, columns: list[str]) -> set[tuple[Any, ...]]:
    names = ", ".join(f'"{c}"' for c in columns)
    return set(conn.execute(f'SELECT {names} FROM "{table}"').fetchall())


def test_every_table_of_the_schema_survives_salvage(tmp_path: Path) -> None:
    """Enumerate ``sqlite_master`` of a migrated store, put one row in every table, salvage:
    every row is in the new store (less the columns the new store gives its own values).
    A table a later migration adds is covered without changing this test."""
    path = tmp_path / "unit.db"
    Store(path, "mmu-01").close()
    filled: dict[str, tuple[list[str], tuple[Any, ...]]] = {}
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            if table in OWN_TABLES:
                continue
            info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
            columns = [r[1] for r in info]
            row = tuple(_value(table, r[1], r[2]) for r in info)
            marks = ", ".join("?" for _ in columns)
            conn.execute(f'INSERT INTO "{table}" VALUES ({marks})', row)
            kept = [c for c in columns if c not in OWN_COLUMNS.get(table, frozenset())]
            filled[table] = (kept, tuple(v for c, v in zip(columns, row, strict=True) if c in kept))
    assert {"readings", "encounters", "device_facts", "batches", "attachments"} <= set(filled)
    garble_header(path)  # the rows all readable, the store not

    with Store(path, "mmu-01") as store:
        assert store.prepared.recovery is not None
        salvaged = store.prepared.recovery.salvaged
    with contextlib.closing(sqlite3.connect(path)) as conn:
        missing = [t for t, (cols, row) in filled.items() if row not in _rows(conn, t, cols)]
        epoch = conn.execute("SELECT epoch FROM store_identity").fetchone()[0]
    assert missing == [], f"tables lost by the salvage: {missing}"
    assert all(salvaged[t] == 1 for t in filled), salvaged
    assert epoch != "store_identity.epoch"  # the new store's own identity (a new epoch)


# --- a power cut during the salvage -----------------------------------------------------------
READINGS = 3000
SENT = 1000

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edge_agent.store import recovery as store_recovery
    from edge_agent.store.writer import Store

    def stop_at(step):
        if step == sys.argv[2]:
            print(step, flush=True)
            time.sleep(3600)  # killed here

    store_recovery.step_hook = stop_at
    Store(Path(sys.argv[1]), "mmu-01").close()
    print("finished", flush=True)
""")


def make_unit_store(path: Path) -> dict[str, bool]:
    """READINGS readings (the first SENT sent), an open encounter they belong to, a device's
    facts; returns {reading id: sent}."""
    from edge_agent.store.encounters import open_encounter

    with Store(path, "mmu-01") as store:
        store.call(lambda db: open_encounter(db, "urn:oid:2.16.504", "P-CANARY-1"))
        for start in range(0, READINGS, 500):
            store.append(
                "ox",
                [
                    measurement("spo2", 90.0 + i % 10, raw=os.urandom(40))
                    for i in range(start, start + 500)
                ],
            ).result(10)
        store.call(
            lambda db: db.execute("UPDATE readings SET sent_at = 't' WHERE seq <= ?", [SENT])
        )
        store.call(
            lambda db: db.execute(
                "INSERT INTO device_facts (device_id, serial, updated_at) VALUES ('ox', 'S1', 't')"
            )
        )
        rows = store.call(lambda db: db.execute("SELECT id, sent_at FROM readings").fetchall())
    return {r[0]: r[1] is not None for r in rows}


def _killed_at(path: Path, step: str, timeout: float = 120.0) -> None:
    """Run the salvage in a subprocess, SIGKILL it when it reaches ``step``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), step],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    reached = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert reached.wait(timeout), f"the salvage never reached {step!r}"
        assert lines[0] == step, lines
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        reader.join(30)
        proc.stdout.close()


@pytest.mark.parametrize("step", ["quarantined", "copied", "committed", "renamed"])
def test_a_power_cut_during_salvage_loses_nothing(tmp_path: Path, step: str) -> None:
    """SIGKILL of the salvaging process at each step (after the move aside, before the COMMIT,
    before the rename into place, before the marker goes): the next start finishes the salvage
    and every reading, the encounter and the device's facts are there, once.

    A SIGKILL keeps the page cache: this tests the order of the steps and the marker, not the
    fsyncs (every rename and the new file are fsynced; FAULT-TESTING.md §2.3 for why a kill
    is not a power cut for unsynced writes)."""
    path = tmp_path / "unit.db"
    original = make_unit_store(path)
    garble_header(path)  # every row readable: nothing may be missing afterwards
    _killed_at(path, step)

    with Store(path, "mmu-01") as store:
        rec = store.prepared.recovery
        rows = store.call(
            lambda db: db.execute(
                "SELECT id, sent_at, encounter_id FROM readings ORDER BY seq"
            ).fetchall()
        )
        open_encounters = store.call(
            lambda db: db.execute("SELECT id FROM encounters WHERE closed_at IS NULL").fetchall()
        )
        facts = store.call(lambda db: db.execute("SELECT serial FROM device_facts").fetchall())
        health = store.call(lambda db: get_state(db, "store-health"))
    assert len(rows) == READINGS and {r[0] for r in rows} == set(original)
    assert all((r[1] is not None) == original[r[0]] for r in rows)  # sent stays sent
    assert len(open_encounters) == 1 and {r[2] for r in rows} == {open_encounters[0][0]}
    assert facts == [("S1",)]
    assert rec is not None and rec.resumed
    assert health["state"] == "recovered"
    assert health["resumed"] == (step != "renamed")  # renamed: only the marker was left
    assert len(quarantined_files(path)) == 1  # one quarantine, not a second of the new store
    assert not marker_path(path).exists() and not build_path(path).exists()

    report = json.loads(runner.invoke(app, ["db", "check", "--db", str(path), "--json"]).output)
    [q] = report["quarantine"]
    # The new store holds them all, but central has only the SENT ones: keep the quarantine.
    assert q["not_at_central"] == READINGS - SENT and not q["may_delete"]


def test_an_interrupted_salvage_is_reported_until_the_agent_finishes_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "unit.db"
    make_unit_store(path)
    garble_header(path)
    _killed_at(path, "copied")
    text = runner.invoke(app, ["db", "check", "--db", str(path)])
    assert text.exit_code == 1
    assert "salvage was interrupted" in text.output and "start the agent" in text.output
    assert "Traceback" not in text.output and "P-CANARY" not in text.output
    checks = doctor.check_store(_settings(path), datetime.now(UTC))
    assert checks[0].status == "fail"
    assert "salvage of a damaged store was interrupted" in checks[0].detail
    assert "start the agent" in checks[0].fix


@pytest.mark.parametrize("marker", ["{not json", '{"quarantined": "/nowhere/unit.db.corrupt-x"}'])
def test_a_marker_that_cannot_be_followed_is_refused_clearly(tmp_path: Path, marker: str) -> None:
    """A marker that is unreadable, or names a quarantine that is not there (and no store):
    the start is refused with what to do; nothing is created or deleted."""
    path = tmp_path / "unit.db"
    marker_path(path).write_text(marker)
    with pytest.raises(StoreError) as err:
        Store(path, "mmu-01")
    assert "Fix:" in str(err.value) and "salvage" in str(err.value)
    assert not path.exists() and marker_path(path).read_text() == marker


# --- what db check and doctor advise --------------------------------------------------------
def _settings(path: Path) -> Settings:
    return Settings(unit=UnitSettings(id="mmu-01"), store=StoreSettings(path=path))


def test_a_quarantine_with_readings_central_lacks_is_never_to_be_deleted(
    tmp_path: Path,
) -> None:
    """The reproduction's case: a quarantine whose unsent readings central does not have.
    db check must say to keep it, with the count, never "delete"."""
    path = tmp_path / "unit.db"
    make_unit_store(path)
    garbage_mid_file(path)
    Store(path, "mmu-01").close()  # recovered: the quarantine holds unsent readings
    result = runner.invoke(app, ["db", "check", "--db", str(path)])
    assert result.exit_code == 1
    assert "KEEP IT" in result.output and "do not delete it" in result.output
    assert "then delete" not in result.output and "may be deleted" not in result.output
    report = json.loads(runner.invoke(app, ["db", "check", "--db", str(path), "--json"]).output)
    [q] = report["quarantine"]
    assert q["readable"] and not q["may_delete"]
    assert q["not_at_central"] > 0 and q["unreadable"] > 0


def test_a_quarantine_whose_readings_central_all_has_may_be_deleted(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    make_unit_store(path)
    garble_header(path)
    with Store(path, "mmu-01") as store:  # salvaged whole; then central acks the rest
        store.call(
            lambda db: db.execute("UPDATE readings SET sent_at = 'later' WHERE sent_at IS NULL")
        )
    report = json.loads(runner.invoke(app, ["db", "check", "--db", str(path), "--json"]).output)
    [q] = report["quarantine"]
    assert q == {
        **q,
        "readable": True,
        "readings": READINGS,
        "not_at_central": 0,
        "unreadable": 0,
        "may_delete": True,
    }
    assert "may be deleted" in runner.invoke(app, ["db", "check", "--db", str(path)]).output


def test_doctor_says_what_the_recovery_did(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    make_unit_store(path)
    garbage_mid_file(path)
    Store(path, "mmu-01").close()
    [moved] = quarantined_files(path)
    store = doctor.check_store(_settings(path), datetime.now(UTC))[0]
    assert store.status == "fail"
    assert "quick_check" not in store.detail
    assert "recovered" in store.detail and "readings salvaged" in store.detail
    assert "lost" in store.detail and f"quarantine kept ({moved.name})" in store.detail
    assert f"keep {moved.name}" in store.fix and "delete" not in store.fix
    assert "P-CANARY" not in store.detail + store.fix
