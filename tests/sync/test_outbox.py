"""The outbox over a real store file, through the store's single writer."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync import outbox


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "unit.db", "mmu-t", group_wait=0) as s:
        yield s


def add(store: Store, n: int) -> list[int]:
    return store.append("ox", [measurement("spo2", 97.0) for _ in range(n)]).result(10)


def take(store: Store, batch_id: str, limit: int) -> list[int]:
    """Form and record a batch as the daemon does (one writer operation)."""

    def op(db: Database) -> list[int]:
        rows = outbox.next_batch(db, limit)
        seqs = [r["seq"] for r in rows]
        assert outbox.record_batch(db, batch_id, seqs) == len(seqs)
        return seqs

    return store.call(op)


def sent(store: Store) -> dict[int, Any]:
    return dict(
        store.call(
            lambda db: db.execute(
                "SELECT seq, batch_id FROM readings WHERE sent_at IS NOT NULL"
            ).fetchall()
        )
    )


def test_batches_take_unsent_readings_by_seq_and_skip_those_in_flight(store: Store) -> None:
    add(store, 25)
    assert take(store, "a", 10) == list(range(1, 11))
    assert take(store, "b", 10) == list(range(11, 21))
    assert [b.batch_id for b in store.call(outbox.in_flight)] == ["a", "b"]
    assert store.call(outbox.backlog) == 25
    assert store.call(lambda db: outbox.mark_acked(db, "b")) == 10
    assert take(store, "c", 10) == [21, 22, 23, 24, 25]  # never b's readings again
    assert take(store, "d", 10) == []
    assert store.call(outbox.backlog) == 15


def test_mark_acked_marks_exactly_the_batch_and_is_idempotent(store: Store) -> None:
    add(store, 12)
    take(store, "a", 5)
    take(store, "b", 5)
    assert store.call(lambda db: outbox.mark_acked(db, "a", "2026-11-23T08:00:00Z")) == 5
    assert sent(store) == {s: "a" for s in range(1, 6)}
    assert store.call(lambda db: outbox.mark_acked(db, "a")) == 0  # duplicate ack
    assert store.call(lambda db: outbox.mark_acked(db, "never-recorded")) == 0
    assert sent(store) == {s: "a" for s in range(1, 6)}  # b untouched: not acked yet
    assert [b.batch_id for b in store.call(outbox.in_flight)] == ["b"]


def test_a_released_batch_is_taken_again_without_touching_the_next(store: Store) -> None:
    add(store, 30)
    take(store, "a", 10)
    take(store, "b", 10)
    store.call(lambda db: outbox.release(db, "a"))
    add(store, 5)
    # a's readings come back; b's stay b's
    assert take(store, "a2", 50) == [*range(1, 11), *range(21, 36)]
    assert store.call(lambda db: outbox.mark_acked(db, "a")) == 0  # late ack of a released one


def test_a_recorded_batch_reads_back_the_same_readings_after_a_restart(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", "mmu-t") as store:
        add(store, 8)
        take(store, "a", 8)
        before = store.call(lambda db: outbox.batch_readings(db, "a"))
    with Store(tmp_path / "unit.db", "mmu-t") as store:  # the unit rebooted
        (record,) = store.call(outbox.in_flight)
        assert (record.batch_id, record.seq_from, record.seq_to, record.count) == ("a", 1, 8, 8)
        assert store.call(lambda db: outbox.batch_readings(db, "a")) == before
        store.call(lambda db: outbox.record_batch(db, "a", list(range(1, 9))))  # again
        assert store.call(outbox.in_flight)[0].attempts == 2


def test_random_interleavings_mark_each_reading_once_by_the_batch_that_held_it(
    store: Store,
) -> None:
    rng = random.Random(5)
    holder: dict[int, str] = {}  # seq -> the in-flight batch that holds it
    acked: dict[int, str] = {}
    live: list[str] = []
    for step in range(300):
        op = rng.choice(["add", "take", "take", "ack", "dup", "release"])
        if op == "add":
            add(store, rng.randint(1, 7))
        elif op == "take" and len(live) < 4:
            batch = f"b{step}"
            seqs = take(store, batch, rng.randint(1, 9))
            assert not set(seqs) & set(holder) and not set(seqs) & set(acked)
            if seqs:
                holder.update(dict.fromkeys(seqs, batch))
                live.append(batch)
        elif op in ("ack", "release") and live:
            batch = live.pop(rng.randrange(len(live)))
            if op == "ack":
                changed = store.call(functools.partial(outbox.mark_acked, batch_id=batch))
                mine = [s for s, b in holder.items() if b == batch]
                assert changed == len(mine)
                acked.update(dict.fromkeys(mine, batch))
            else:
                store.call(functools.partial(outbox.release, batch_id=batch))
            holder = {s: b for s, b in holder.items() if b != batch}
        elif op == "dup" and acked:
            batch = rng.choice(sorted(set(acked.values())))
            assert store.call(functools.partial(outbox.mark_acked, batch_id=batch)) == 0
    assert sent(store) == acked
    total = store.stats()["readings_total"]
    assert store.call(outbox.backlog) == total - len(acked)


def test_an_ack_marks_only_what_the_batch_carried_even_after_resend_from(store: Store) -> None:
    """A batch is a set: a seq range would also cover readings re-queued meanwhile."""
    add(store, 10)
    take(store, "a", 10)
    store.call(lambda db: outbox.mark_acked(db, "a"))
    take_b = take(store, "b", 3)
    assert take_b == []
    # central lost 4..10 (restored backup): resend-from 4 re-queues them
    assert store.call(lambda db: outbox.resend_from(db, 4)) == 7
    assert take(store, "c", 3) == [4, 5, 6]
    add(store, 2)  # seqs 11, 12
    # a duplicate ack of "a" arrives late: it must not mark c's readings, nor 7..12
    assert store.call(lambda db: outbox.mark_acked(db, "a")) == 0
    assert store.call(outbox.backlog) == 9
    assert store.call(lambda db: outbox.mark_acked(db, "c")) == 3
    assert sorted(sent(store)) == [1, 2, 3, 4, 5, 6]


def test_alert_range_readings_leave_first_in_batches_of_their_own(store: Store) -> None:
    add(store, 5)
    store.append("ox", [measurement("spo2", 80.0), measurement("spo2", 81.0)]).result(10)
    add(store, 3)
    assert store.read(outbox.has_alerts)
    assert take(store, "alerts", 50) == [6, 7]
    assert store.read(outbox.in_flight)[0].batch_id == "alerts"
    assert not store.read(outbox.has_alerts)
    assert store.read(lambda db: outbox.next_batch(db, 50, alerts_only=True)) == []
    assert take(store, "rest", 50) == [1, 2, 3, 4, 5, 8, 9, 10]


def test_readings_central_refuses_are_kept_apart_not_sent_not_retaken(store: Store) -> None:
    add(store, 4)
    take(store, "a", 4)
    ids = store.read(lambda db: [r[0] for r in db.execute("SELECT id FROM readings ORDER BY seq")])
    marked = store.call(
        lambda db: outbox.mark_acked(
            db, "a", refused={ids[1]: "conflict: seq held by another reading"}
        )
    )
    assert marked == 3
    assert store.read(outbox.backlog) == 0
    assert store.read(outbox.refused_count) == 1
    assert take(store, "b", 10) == []
    assert store.stats()["readings_refused_by_central"] == 1


def test_store_counts_name_readings_and_rejected_frames_apart(store: Store) -> None:
    from drivers.base import Rejected

    add(store, 3)
    store.append("ox", [], [Rejected(b"\x01\x02", "checksum")]).result(10)
    assert store.read(outbox.store_counts) == {"readings": 3, "rejects": 1}


def test_data_version_changes_when_another_connection_commits(store: Store, tmp_path: Path) -> None:
    """``--only sync`` looks for another process's commits this way: one connection polls,
    another writes."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(tmp_path / "unit.db")) as reader:
        db = Database(reader)
        before = outbox.data_version(db)
        assert outbox.data_version(db) == before  # nothing committed elsewhere
        add(store, 1)
        assert outbox.data_version(db) != before
