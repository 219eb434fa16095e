"""Issue 19: the unit's hot paths never read the store's history.

The ingest, take and ack paths run for real (``Store.append``, the outbox functions the sync
daemon calls) on a real store file that already holds acknowledged readings, while a trace
callback on the store's own connections records every statement they execute: a statement
added to these paths later is planned here too, it cannot escape. SQLite then plans each
statement (``EXPLAIN QUERY PLAN``, on the same file), with and without ``ANALYZE`` statistics.
A plan fails when it scans a table that grows with the history (``readings``, ``batches``,
``rejects``, ``events``) other than through a partial index that only holds what is not yet
acknowledged (its size is the backlog, not the history), when it runs a correlated subquery
(once per row taken), or when it sorts (``USE TEMP B-TREE``: the outbox's order must come from
its index, else every take reads and sorts the whole backlog).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Rejected
from edge_agent.models import measurement
from edge_agent.store import device_facts, encounters
from edge_agent.store.database import put_state
from edge_agent.store.writer import Store
from sync import fhir, outbox

UNIT = "mmu-hot"
HISTORY = 1200  # readings acknowledged before the paths run
HISTORY_TABLES = ("readings", "batches", "rejects", "events")
CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA", "--")
SCAN = re.compile(r"^SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?")


@dataclass
class Traced:
    """Statements by path, as the store's connections executed them (values bound)."""

    by_path: dict[str, list[str]]
    path: str = ""

    def __call__(self, statement: str) -> None:
        if self.path and not statement.lstrip().upper().startswith(CONTROL):
            self.by_path.setdefault(self.path, []).append(statement)


def backlog_indexes(conn: sqlite3.Connection) -> set[str]:
    """Partial indexes of readings that hold only readings central has not acknowledged."""
    return {
        name
        for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'readings' "
            "AND sql IS NOT NULL"
        ).fetchall()
        if re.search(r"WHERE\s+sent_at\s+IS\s+NULL", sql)
    }


def problems(conn: sqlite3.Connection, statement: str) -> list[str]:
    """What in this statement's plan reads the history (empty: index-backed)."""
    allowed = backlog_indexes(conn)
    found = []
    for *_, detail in conn.execute("EXPLAIN QUERY PLAN " + statement).fetchall():
        scan = SCAN.match(detail)
        if scan and scan[1] in HISTORY_TABLES and scan[2] not in allowed:
            found.append(detail)
        if "CORRELATED" in detail or "TEMP B-TREE" in detail:
            found.append(detail)
    return found


def spo2(value: float = 97.0, **kw: Any) -> Any:
    return measurement("spo2", value, **kw)


def settle_history(store: Store, n: int) -> None:
    """``n`` readings taken, sent and acknowledged by central, as the daemon does it."""
    store.append("ox-1", [spo2() for _ in range(n)]).result(30)
    i = 0
    while True:
        rows = store.read(functools.partial(outbox.next_batch, limit=500))
        if not rows:
            return
        batch_id = f"history-{i}"
        i += 1
        store.call(
            functools.partial(outbox.record_batch, batch_id=batch_id, seqs=[r["seq"] for r in rows])
        )
        store.call(functools.partial(outbox.mark_acked, batch_id=batch_id))


def run_paths(store: Store, trace: Traced) -> None:
    """Every statement of the ingest, take and ack paths, the rare branches included."""
    hl7 = [spo2(source_key=f"hl7:msg-{i}|1") for i in range(3)]
    trace.path = "ingest"
    store.append("ox-1", [spo2(), spo2(84.0)]).result(10)  # an alert
    store.append(
        "hl7-1", hl7, [Rejected(b"\x0bMSH|bad", "bad segment")], position=(33.59, -7.62)
    ).result(10)
    store.append("hl7-1", hl7[:1]).result(10)  # resent after a lost MSA: recognised
    store.append("bg-1", [spo2()], cursor=("bg-1", 17)).result(10)
    trace.path = ""

    def take(alerts_only: bool) -> tuple[str, list[dict[str, Any]]]:
        rows = store.read(functools.partial(outbox.next_batch, limit=500, alerts_only=alerts_only))
        batch_id = f"b-{rows[0]['seq']}"
        store.call(
            functools.partial(
                outbox.record_batch,
                batch_id=batch_id,
                seqs=[r["seq"] for r in rows],
                priority=rows[0]["priority"],
                device_versions=fhir.full_device_versions(rows),
            )
        )
        return batch_id, store.read(functools.partial(outbox.batch_readings, batch_id=batch_id))

    trace.path = "take"
    store.read(lambda db: (outbox.unbatched(db), outbox.has_alerts(db)))
    alert, _ = take(alerts_only=True)
    ordinary, rows = take(alerts_only=False)
    store.read(functools.partial(outbox.next_batch, limit=500))  # the outbox is empty now
    trace.path = ""
    # a nurse binds one of the batch's readings to the patient while it is in flight
    store.call(lambda db: encounters.assign(db, [rows[0]["seq"]]))
    trace.path = "ack"
    store.call(functools.partial(outbox.note_attempt, batch_id=ordinary))  # a resend
    store.call(
        functools.partial(
            outbox.mark_acked, batch_id=ordinary, refused={str(rows[1]["id"]): "conflict"}
        )
    )
    store.call(functools.partial(outbox.mark_acked, batch_id=ordinary))  # a duplicate ack
    store.call(functools.partial(outbox.release, batch_id=alert))  # the link went down
    trace.path = ""


@pytest.fixture
def traced_store(tmp_path: Path) -> Iterator[tuple[Path, dict[str, list[str]]]]:
    path = tmp_path / "unit.db"
    with Store(path, UNIT) as store:
        store.call(lambda db: put_state(db, "unit-timezone", "Africa/Casablanca"))
        for device in ("ox-1", "hl7-1", "bg-1"):
            store.call(
                functools.partial(
                    device_facts.save,
                    device_id=device,
                    values={"serial": f"SN-{device}", "model": "m"},
                )
            )
        settle_history(store, HISTORY)
        store.call(
            functools.partial(encounters.open_encounter, system="urn:oid:1.2.3", value="P-HOT-1")
        )
        store.call(lambda db: store.encounters.invalidate())  # opened through the writer
        trace = Traced({})
        store.call(lambda db: db.conn.set_trace_callback(trace))  # the writer's connection
        store.read(lambda db: db.conn.set_trace_callback(trace))  # this thread's reader
        run_paths(store, trace)
        store.call(lambda db: db.conn.set_trace_callback(None))
        store.read(lambda db: db.conn.set_trace_callback(None))
    yield path, trace.by_path


def planner(path: Path, analyzed: bool) -> sqlite3.Connection:
    if analyzed:  # statistics as a long-lived store may gather them
        with sqlite3.connect(path) as conn:
            conn.execute("ANALYZE")
        conn.close()
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


@pytest.mark.parametrize("analyzed", [False, True], ids=["plain", "analyzed"])
def test_ingest_take_and_ack_statements_are_index_backed(
    traced_store: tuple[Path, dict[str, list[str]]], analyzed: bool
) -> None:
    path, by_path = traced_store
    conn = planner(path, analyzed)
    try:
        held = conn.execute("SELECT count(*) FROM readings WHERE sent_at IS NOT NULL").fetchone()[0]
        assert held >= HISTORY  # the history the paths must not read
        # the trace saw the real paths (a broken trace would pass vacuously)
        assert any(s.startswith("INSERT INTO readings") for s in by_path["ingest"])
        assert any(s.startswith("SELECT seq FROM readings WHERE id") for s in by_path["ingest"])
        assert any(" FROM readings WHERE " in s for s in by_path["take"])
        assert any(s.startswith("UPDATE readings SET batch_id") for s in by_path["take"])
        assert any(s.startswith("UPDATE readings SET sent_at") for s in by_path["ack"])
        assert any(s.startswith("UPDATE batches SET acked_at") for s in by_path["ack"])
        found = {
            f"{name}: {s}": p
            for name, statements in by_path.items()
            for s in statements
            if (p := problems(conn, s))
        }
    finally:
        conn.close()
    assert found == {}


def test_the_checker_sees_a_scan_of_the_history(
    traced_store: tuple[Path, dict[str, list[str]]],
) -> None:
    path, _ = traced_store
    conn = planner(path, analyzed=False)
    try:
        scan = problems(conn, "UPDATE readings SET sent_at = NULL WHERE batch_id = 'b-1'")
        correlated = problems(
            conn,
            "SELECT (SELECT e.id FROM encounters e WHERE e.id = "
            "readings.encounter_id) FROM readings WHERE batch_id = 'b-1' "
            "AND sent_at IS NULL",
        )
        backlog = problems(conn, "SELECT count(*) FROM readings WHERE sent_at IS NULL")
    finally:
        conn.close()
    assert scan == ["SCAN readings"]
    assert correlated and "CORRELATED" in correlated[0]
    assert backlog == []  # the readings_unsent index: the backlog only


def test_an_ack_counts_only_what_it_marked_sent(tmp_path: Path) -> None:
    """A reading attributed while its batch was in flight goes again: the ack does not count
    it as sent (nor mark it so on the way)."""
    with Store(tmp_path / "unit.db", UNIT) as store:
        store.append("ox-1", [spo2() for _ in range(3)]).result(10)
        seqs = [r["seq"] for r in store.read(functools.partial(outbox.next_batch, limit=10))]
        store.call(
            functools.partial(
                outbox.record_batch, batch_id="b", seqs=seqs, created_at="2026-01-01T00:00:00.000Z"
            )
        )
        store.call(lambda db: encounters.open_encounter(db, "urn:oid:1.2.3", "P-HOT-2"))
        store.call(lambda db: encounters.assign(db, seqs[:1]))
        assert store.call(functools.partial(outbox.mark_acked, batch_id="b")) == 2
        rows = store.read(functools.partial(outbox.next_batch, limit=10))
        assert [(r["seq"], r["attributed_at"] is not None) for r in rows] == [(seqs[0], True)]
