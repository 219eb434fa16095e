"""A damaged store is quarantined (never deleted), its readable rows carry on in a new store."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.models import measurement
from edge_agent.store.database import get_state
from edge_agent.store.recovery import quarantined_files, quick_check
from edge_agent.store.writer import Store

READINGS = 3000
SENT = 1000


def make_store(path: Path) -> dict[str, bool]:
    """A store with READINGS readings (with raw bytes), the first SENT marked sent; returns
    {reading id: sent}."""
    with Store(path, "mmu-01") as store:
        for start in range(0, READINGS, 500):
            store.append(
                "ox",
                [
                    measurement("spo2", 90.0 + i % 10, raw=os.urandom(60))
                    for i in range(start, start + 500)
                ],
            ).result(10)
        store.call(
            lambda db: db.execute(
                "UPDATE readings SET sent_at = 't', batch_id = 'b1' WHERE seq <= ?", [SENT]
            )
        )
        store.log_event("test.marker", "before damage").result(10)
        rows = store.call(lambda db: db.execute("SELECT id, sent_at FROM readings").fetchall())
    return {r[0]: r[1] is not None for r in rows}


def garbage_mid_file(path: Path) -> None:
    """Random bytes over the middle page of the readings table (a page in the middle of the
    file may be a free page, whose content no check reads: 1 run in 6 went undetected)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = [
            n
            for (n,) in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'readings' AND pagetype = 'leaf' "
                "ORDER BY pageno"
            )
        ]
    with open(path, "r+b") as f:
        f.seek((pages[len(pages) // 2] - 1) * size)
        f.write(os.urandom(size))


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def garble_header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(os.urandom(100))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("damage", "min_salvaged"),
    [(garbage_mid_file, 0.8), (truncate_half, 0.3), (garble_header, 0.95)],
    ids=["garbage-pages", "truncated", "garbled-header"],
)
def test_damaged_store_is_quarantined_and_salvaged(
    tmp_path: Path, damage: Callable[[Path], None], min_salvaged: float
) -> None:
    path = tmp_path / "unit.db"
    original = make_store(path)
    old_epoch = sqlite3.connect(path).execute("SELECT epoch FROM store_identity").fetchone()
    damage(path)
    assert not quick_check(path).ok
    damaged = digest(path)

    with Store(path, "mmu-01") as store:
        assert store.epoch and store.epoch != (old_epoch[0] if old_epoch else None)  # new epoch
        rows = store.call(
            lambda db: db.execute(
                "SELECT seq, id, sent_at, batch_id, raw FROM readings ORDER BY seq"
            ).fetchall()
        )
        seq = store.append("ox", [measurement("spo2", 97.0)]).result(10)[0]
        health = store.call(lambda db: get_state(db, "store-health"))
        events = store.call(
            lambda db: db.execute(
                "SELECT kind, detail FROM events WHERE kind = 'store.recovered'"
            ).fetchall()
        )
        kept_marker = store.call(
            lambda db: db.execute(
                "SELECT count(*) FROM events WHERE kind = 'test.marker'"
            ).fetchone()[0]
        )

    # The original is still there, bytes unchanged, 0600, beside the new store.
    [moved] = quarantined_files(path)
    assert moved.parent == tmp_path and moved.name.startswith("unit.db.corrupt-")
    assert digest(moved) == damaged
    assert stat.S_IMODE(moved.stat().st_mode) == 0o600
    # What was readable is in the new store: known ids, sent stays sent, new contiguous seqs.
    assert len(rows) >= min_salvaged * READINGS
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r[1] in original for r in rows)
    assert all((r[2] is not None) == original[r[1]] for r in rows)
    assert all(r[3] is None for r in rows)  # old batch ids mean nothing in the new store
    assert sum(original[r[1]] for r in rows) > 0 and sum(not original[r[1]] for r in rows) > 0
    assert seq == len(rows) + 1  # and a write works after
    # Reported: event with counts, state for the technician.
    assert health["state"] == "recovered" and health["quarantined"] == str(moved)
    assert health["salvaged"]["readings"] == len(rows)
    assert health["readings_lost_estimate"] == READINGS - len(rows)
    assert len(events) == 1 and json.loads(events[0][1])["salvaged"]["readings"] == len(rows)
    if damage is not truncate_half:
        assert kept_marker == 1
    assert quick_check(path).ok


def test_a_crash_left_wal_is_quarantined_with_the_file_bytes_unchanged(tmp_path: Path) -> None:
    """A writer that died leaves a WAL; the check must not checkpoint it into the damaged file."""
    live = tmp_path / "live.db"
    path = tmp_path / "unit.db"
    with Store(live, "mmu-01") as store:
        store.append(
            "ox", [measurement("spo2", 97.0, raw=os.urandom(60)) for _ in range(2000)]
        ).result(10)
        store.call(lambda db: db.execute("PRAGMA wal_autocheckpoint = 0"))
    with Store(live, "mmu-01") as store:  # (the checkpoint at close put those in the file)
        store.call(lambda db: db.execute("PRAGMA wal_autocheckpoint = 0"))
        store.append("ox", [measurement("spo2", 98.0) for _ in range(500)]).result(10)
        for suffix in ("", "-wal"):  # the files as a killed writer leaves them
            shutil.copyfile(f"{live}{suffix}", f"{path}{suffix}")
    size = path.stat().st_size
    for fraction in (0.5, 0.3, 0.7, 0.2, 0.8):  # a page the WAL does not supersede
        with open(path, "r+b") as f:
            f.seek(int(size * fraction) // 4096 * 4096)
            f.write(os.urandom(4096))
        if not quick_check(path).ok:
            break
    damaged = digest(path), digest(Path(f"{path}-wal"))
    assert not quick_check(path).ok
    with Store(path, "mmu-01") as store:
        assert store.stats()["readings_total"] >= 1000
    [moved] = quarantined_files(path)
    assert (digest(moved), digest(Path(f"{moved}-wal"))) == damaged


def test_healthy_store_is_left_in_place_and_marked_ok(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    make_store(path)
    with Store(path, "mmu-01") as store:
        health = store.call(lambda db: get_state(db, "store-health"))
        assert store.stats()["readings_total"] == READINGS
    assert health["state"] == "ok"
    assert quarantined_files(path) == []


def test_a_store_in_use_elsewhere_is_not_moved(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    with Store(path, "mmu-01") as first:
        first.append("ox", [measurement("spo2", 97.0)]).result(10)
        with Store(path, "mmu-01") as second:  # not exclusive: no check, no rename
            assert second.prepared.check is None
            assert second.stats()["readings_total"] == 1
    assert quarantined_files(path) == []


def test_db_check_reports_the_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    make_store(path)
    garbage_mid_file(path)
    runner = CliRunner()
    damaged = runner.invoke(app, ["db", "check", "--db", str(path)])
    assert damaged.exit_code == 1, damaged.output
    assert "damaged" in damaged.output and "Traceback" not in damaged.output
    Store(path, "mmu-01").close()  # the agent's open recovers it
    result = runner.invoke(app, ["db", "check", "--db", str(path)])
    assert result.exit_code == 1, result.output  # ok now, but a recovery needs a technician
    assert "recovered" in result.output and "unit.db.corrupt-" in result.output
    assert "readings lost (estimate)" in result.output
    as_json = json.loads(runner.invoke(app, ["db", "check", "--db", str(path), "--json"]).output)
    assert as_json["check"] == "ok" and len(as_json["quarantined"]) == 1


def test_check_is_bounded_in_time(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    make_store(path)
    result = quick_check(path, seconds=0.0)
    assert result.ok and not result.complete  # interrupted: "check incomplete", not damage
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
