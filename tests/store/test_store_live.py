"""Issue 25, defect 3: the agent's writer beside the nurse's patient actions.

A real store and its writer committing readings without pause (two "oximeters": threads
appending as the drivers' sink does) while the patient is opened and closed hundreds of times:
from another process (``edge-agent patient open/close``: its own connection, BEGIN IMMEDIATE)
and from the console inside the agent (through the agent's writer). No append may fail (a
failed append restarts the device task and loses its readings). Real SQLite files, a real
second process; nothing mocked.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlite_utils import Database

from edge_agent.console import actions
from edge_agent.models import measurement
from edge_agent.store import connect as store_connect
from edge_agent.store import encounters
from edge_agent.store.writer import Store

CYCLES = 300  # patient open + close, as in the issue (280 console actions)

CLI_LOOP = """
import sys
from pathlib import Path
from edge_agent.store import encounters

path, cycles = Path(sys.argv[1]), int(sys.argv[2])
print("ready", flush=True)
for i in range(cycles):
    encounters.write_beside(path, lambda db: encounters.open_encounter(
        db, "urn:mmu:patient:test", f"TEST-{i:04d}"))
    encounters.write_beside(path, encounters.close_encounter)
print("done", flush=True)
"""


class Oximeters:
    """Two devices appending one reading at a time, as fast as the writer commits, until
    stopped; every failed append is kept."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.stop = threading.Event()
        self.stored = 0
        self.failures: list[BaseException] = []
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(f"ox-{n}",), daemon=True) for n in (1, 2)
        ]

    def _run(self, device: str) -> None:
        while not self.stop.is_set():
            try:
                self.store.append(device, [measurement("spo2", 97.0)]).result(120)
            except BaseException as exc:  # every failure is the finding
                with self._lock:
                    self.failures.append(exc)
            else:
                with self._lock:
                    self.stored += 1

    def __enter__(self) -> Oximeters:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(150)


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(0.05)


def _encounters(path: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        total, still_open = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE closed_at IS NULL) FROM encounters"
        ).fetchone()
    return int(total), int(still_open)


def test_patient_cli_loop_in_another_process_never_fails_the_writers_appends(
    tmp_path: Path,
) -> None:
    path = tmp_path / "unit.db"
    with Store(path, "mmu-01") as store:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        cli = subprocess.Popen(
            [sys.executable, "-c", CLI_LOOP, str(path), str(CYCLES)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert cli.stdout is not None
            assert cli.stdout.readline().strip() == "ready"
            with Oximeters(store) as ox:
                out, err = cli.communicate(timeout=600)
                stored_during = ox.stored
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        assert cli.returncode == 0, err
        assert "done" in out
        assert ox.failures == [], f"{len(ox.failures)} failed appends: {ox.failures[:3]}"
        assert stored_during > 0
        assert store.stats()["readings_total"] == ox.stored
    assert _encounters(path) == (CYCLES, 0)


def test_console_actions_inside_the_agent_go_through_its_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "unit.db"
    # A spy (the real function still runs): no second write connection in the agent process.
    second: list[Path] = []
    real_writing = encounters.writing

    def spied(p: Path):  # type: ignore[no-untyped-def]
        second.append(p)
        return real_writing(p)

    monkeypatch.setattr(encounters, "writing", spied)
    with Store(path, "mmu-01") as store, Oximeters(store) as ox:
        _wait_for(lambda: ox.stored > 0, 60, "a first reading")
        for i in range(CYCLES):
            opened = actions.open_encounter(path, f"TEST-{i:04d}", None, writer=store)
            assert opened.message == "action.opened"
            last = store.append("ox-3", [measurement("spo2", 95.0)]).result(60)
            closed = actions.close_encounter(path, writer=store)
            assert closed.message == "action.closed"
        ox.stop.set()
    assert ox.failures == []
    assert second == []
    assert _encounters(path) == (CYCLES, 0)
    # The writer bound the reading taken while the last patient was open to that patient.
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        bound = conn.execute(
            "SELECT e.patient_value FROM readings r JOIN encounters e "
            "ON e.id = r.encounter_id WHERE r.seq = ?",
            last,
        ).fetchone()
    assert bound == (f"TEST-{CYCLES - 1:04d}",)


def test_a_commit_that_meets_a_lock_is_tried_again_and_fails_no_reading(tmp_path: Path) -> None:
    """Another connection holds the write lock longer than the writer's busy timeout: the
    group is rolled back and tried again, its futures wait and then resolve."""
    path = tmp_path / "unit.db"
    with Store(path, "mmu-01") as store:
        store.append("ox", [measurement("spo2", 97.0)]).result(10)
        store.call(lambda db: db.execute("PRAGMA busy_timeout = 50"))  # the writer's own
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        before = store.busy_retries_done
        pending = store.append("ox", [measurement("spo2", 96.0)])
        _wait_for(lambda: store.busy_retries_done > before, 30, "the writer to meet the lock")
        assert not pending.done()
        other.execute("COMMIT")
        other.close()
        assert pending.result(60) == [2]
        assert store.stats()["readings_total"] == 2


def _corrupt_once(calls: list[int]) -> Callable[[Database], None]:
    def op(db: Database) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.DatabaseError("database disk image is malformed")

    return op


def test_malformed_seen_by_the_writer_reopens_its_connection_and_tries_again(
    tmp_path: Path,
) -> None:
    """A connection's stale view (the file is intact) is not declared damage: the writer
    reopens its connection and the group commits. (The error is raised by the operation:
    making SQLite itself see a stale WAL index on demand needs a second library in the
    process; the connection really is closed and reopened.)"""
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        calls: list[int] = []
        reading = store.append("ox", [measurement("spo2", 97.0)])
        flaky = store.submit(_corrupt_once(calls))
        assert reading.result(30) == [1]
        flaky.result(30)
        assert store.reopens == 1
        assert len(calls) == 2
        assert store.append("ox", [measurement("spo2", 96.0)]).result(30) == [2]


def test_malformed_again_after_the_reopen_fails_the_group(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-01") as store:

        def always(db: Database) -> None:
            raise sqlite3.DatabaseError("database disk image is malformed")

        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            store.submit(always).result(30)
        assert store.reopens == 1
        assert store.append("ox", [measurement("spo2", 96.0)]).result(30) == [1]


def test_busy_and_malformed_are_told_apart() -> None:
    locked = sqlite3.OperationalError("database is locked")
    assert store_connect.is_busy(locked)
    assert not store_connect.is_malformed(locked)
    bad = sqlite3.DatabaseError("database disk image is malformed")
    assert store_connect.is_malformed(bad)
    assert not store_connect.is_busy(bad)
    assert not store_connect.is_busy(sqlite3.OperationalError("no such table: x"))


def test_opening_the_store_again_in_the_agents_process_keeps_the_writers_locks(
    tmp_path: Path,
) -> None:
    """Closing any descriptor of the store file drops every POSIX lock the process holds on
    it, SQLite's included: another process's connection closing then believes it is the last
    one, checkpoints and deletes the WAL under the agent's writer (the "malformed" of the
    issue). ``open_database`` must not open and close the file when it exists."""
    from edge_agent.store.database import open_database

    path = tmp_path / "unit.db"
    with Store(path, "mmu-01") as store:
        store.append("ox", [measurement("spo2", 97.0)]).result(30)
        open_database(path).close()  # e.g. a second Store or a CLI path in this process
        closing = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                "c.execute('SELECT count(*) FROM readings').fetchone(); c.close()",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert closing.returncode == 0, closing.stderr
        assert path.with_name("unit.db-wal").exists(), "the other process removed the WAL"
        assert store.append("ox", [measurement("spo2", 96.0)]).result(30) == [2]
