"""The writer's promises under stress: callers that give up, a COMMIT that fails, resent
records, cursors in the readings' transaction, reads beside writes, commit notifications."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from sqlite_utils import Database

from edge_agent.errors import StoreError
from edge_agent.models import Measurement, measurement
from edge_agent.store.writer import CommitNote, Store, reading_id


def _poison_commit(db: Database) -> None:
    """An operation whose savepoint succeeds but which makes the COMMIT itself fail: a
    deferred foreign key is only checked at COMMIT."""
    db.execute("CREATE TEMP TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY)")
    db.execute(
        "CREATE TEMP TABLE IF NOT EXISTS child (pid INTEGER REFERENCES parent(id) "
        "DEFERRABLE INITIALLY DEFERRED)"
    )
    db.execute("INSERT INTO child (pid) VALUES (42)")


def test_a_failing_commit_resolves_nothing_positively_and_stores_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-01", group_wait=0.2) as store:
        # Both land in one group (group_wait), the second makes the COMMIT fail.
        reading = store.append("ox", [measurement("spo2", 97.0)])
        poison = store.submit(_poison_commit)
        with pytest.raises(Exception, match="FOREIGN KEY"):
            reading.result(10)
        with pytest.raises(Exception, match="FOREIGN KEY"):
            poison.result(10)
        assert store.stats()["readings_total"] == 0
        assert store.accepted == 0
        # The writer goes on.
        # (seq 1 was never committed: it is free again, so seqs stay contiguous)
        assert store.append("ox", [measurement("spo2", 96.0)]).result(10) == [1]


async def test_the_writer_survives_a_caller_that_is_cancelled(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        gate = threading.Event()
        entered = threading.Event()

        def slow(db: Database) -> int:
            entered.set()
            gate.wait(10)
            return 1

        blocker = asyncio.wrap_future(store.submit(slow))
        # queued behind the slow operation, then its caller gives up
        waiting = asyncio.ensure_future(
            asyncio.wrap_future(store.append("ox", [measurement("spo2", 97.0)]))
        )
        await asyncio.to_thread(entered.wait, 10)
        waiting.cancel()
        blocker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        # Every later write still works: the writer thread is alive.
        for value in (95.0, 94.0):
            seqs = await asyncio.wrap_future(store.append("ox", [measurement("spo2", value)]))
            assert len(seqs) == 1
        assert store.writer_alive()
        # The cancelled append was still written (the device's reading is not lost).
        assert store.stats()["readings_total"] == 3


def test_a_resent_record_is_stored_once_and_answered_with_its_seq(tmp_path: Path) -> None:
    keyed = Measurement("spo2", 97.0, "%", source_key="hl7:MON^WARD:MSG0001:1:59408-5")
    other = Measurement("spo2", 97.0, "%", source_key="hl7:MON^WARD:MSG0002:1:59408-5")
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        first = store.append("monitor", [keyed]).result(10)
        again = store.append("monitor", [keyed]).result(10)
        third = store.append("monitor", [other]).result(10)
        assert first == again == [1]
        assert third == [2]
        assert store.stats()["readings_total"] == 2
        assert (store.accepted, store.recognised) == (2, 1)
        ids = store.read(
            lambda db: [r[0] for r in db.execute("SELECT id FROM readings ORDER BY seq")]
        )
    assert ids[0] == reading_id("mmu-01", "monitor", keyed.source_key)
    # the same source on another device, or in another unit, is another reading
    assert reading_id("mmu-01", "monitor-2", keyed.source_key) != ids[0]
    assert reading_id("mmu-02", "monitor", keyed.source_key) != ids[0]
    # without a source key, every reading is new
    assert reading_id("mmu-01", "monitor", None) != reading_id("mmu-01", "monitor", None)


def test_a_cursor_moves_only_with_its_readings(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        store.append("meter", [measurement("glucose", 5.4)], cursor=("meter/racp/X1", 7)).result(10)
        assert store.cursor_load("meter/racp/X1") == 7
        store.call(
            lambda db: db.execute(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON readings WHEN NEW.value = 5.6 "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        )
        with pytest.raises(Exception, match="refused by the test"):
            store.append(
                "meter",
                [measurement("glucose", 5.4), measurement("glucose", 5.6)],
                cursor=("meter/racp/X1", 9),
            ).result(10)
        assert store.cursor_load("meter/racp/X1") == 7
        assert store.stats()["readings_total"] == 1


def test_reads_do_not_wait_behind_queued_writes(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        store.append("ox", [measurement("spo2", 97.0)]).result(10)
        gate = threading.Event()
        entered = threading.Event()

        def slow(db: Database) -> None:
            entered.set()
            gate.wait(10)

        held = store.submit(slow)
        assert entered.wait(10)
        # the writer is busy: a read still answers, with what is committed
        assert store.stats()["readings_total"] == 1
        gate.set()
        held.result(10)


def test_commit_listeners_hear_new_readings_and_alerts(tmp_path: Path) -> None:
    notes: list[CommitNote] = []
    with Store(tmp_path / "unit.db", "mmu-01") as store:
        store.add_commit_listener(notes.append)
        store.append("ox", [measurement("spo2", 97.0)]).result(10)
        store.append("ox", [measurement("spo2", 80.0)]).result(10)  # alert range
        store.log_event("device.ok").result(10)  # no readings: no note
    assert notes == [CommitNote(1, 0), CommitNote(1, 1)]


def test_a_closed_store_refuses_writes(tmp_path: Path) -> None:
    store = Store(tmp_path / "unit.db", "mmu-01")
    store.close()
    with pytest.raises(StoreError):
        store.submit(lambda db: None)


def test_the_store_has_an_epoch_that_a_new_store_does_not_share(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db", "mmu-01") as a:
        epoch_a = a.epoch
    with Store(tmp_path / "a.db", "mmu-01") as again:
        assert again.epoch == epoch_a
    with Store(tmp_path / "b.db", "mmu-01") as b:
        assert b.epoch and b.epoch != epoch_a
