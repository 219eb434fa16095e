"""The reference receiver on PostgreSQL (real server, started by the test): two receivers side
by side behind one broker (shared subscription) store every reading exactly once, several
units at once, and keep each unit's gap right when both hold overlapping batches of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edge_agent.models import measurement
from edge_agent.settings import Settings
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.central.store import open_central
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.central.central_kit import batch, rows
from tests.sync.checker import wait_until
from tests.sync.test_faults import UNIT, fill, settings

EPOCH = str(uuid.uuid4())
NOW = "2026-11-23T08:00:00.000Z"


async def test_two_receivers_into_one_postgres(
    tmp_path: Path, mosquitto: MosquittoBroker, postgres: str
) -> None:
    import psycopg

    cfg = settings(tmp_path, mosquitto.port, batch=25)
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        fill(store, 1000)
        store.append("ox", [measurement("pulse_rate", 72.0)]).result()
        receivers = [
            Receiver("127.0.0.1", mosquitto.port, postgres, client_id=f"rx-{i}") for i in (1, 2)
        ]
        tasks = [asyncio.create_task(r.run(stop)) for r in receivers]
        await asyncio.gather(*(r.connected.wait() for r in receivers))
        tasks.append(asyncio.create_task(SyncDaemon(store, cfg).run(stop)))
        await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 60, "drain")
        stop.set()
        await asyncio.gather(*tasks)
        unit_rows = store.call(lambda db: dict(db.execute("SELECT id, seq FROM readings")))
    with psycopg.connect(postgres) as conn:
        central = conn.execute("SELECT id, seq FROM observations").fetchall()
        last = conn.execute("SELECT last_contiguous_seq FROM epochs").fetchone()
    assert dict(central) == unit_rows and len(central) == 1001  # each reading once
    assert last is not None and last[0] == 1001
    assert all(r.counts.batches > 0 for r in receivers)  # both took a share


async def test_a_small_reconnect_storm_into_two_receivers_on_postgres(
    tmp_path: Path, mosquitto: MosquittoBroker, postgres: str
) -> None:
    """Issue 19, the suite's size of the storm (``scripts/bench storm`` is the full one): five
    units with a backlog each reconnect at once; two receivers share them (Mosquitto hands a
    unit's batches to either in turn). Every reading is acknowledged and held once, seqs are
    contiguous per (unit, epoch), no conflict."""
    import psycopg

    units, per_unit = 5, 500
    stop = asyncio.Event()
    with contextlib.ExitStack() as stack:
        stores: dict[str, Store] = {}
        for i in range(units):
            unit = f"mmu-storm-{i}"
            cfg = settings(tmp_path / unit, mosquitto.port, batch=50, timeout=10)
            (tmp_path / unit).mkdir()
            store = stack.enter_context(Store(cfg.store.path, unit))
            store.append("ox", [measurement("spo2", 97.0) for _ in range(per_unit)]).result(60)
            stores[unit] = store
        receivers = [
            Receiver("127.0.0.1", mosquitto.port, postgres, client_id=f"rx-{i}") for i in (1, 2)
        ]
        tasks = [asyncio.create_task(r.run(stop)) for r in receivers]
        await asyncio.gather(*(r.connected.wait() for r in receivers))
        tasks += [
            asyncio.create_task(
                SyncDaemon(store, settings_with_unit(tmp_path / unit, mosquitto.port, unit)).run(
                    stop
                )
            )
            for unit, store in stores.items()
        ]
        await wait_until(
            lambda: all(s.stats()["readings_pending_sync"] == 0 for s in stores.values()),
            120,
            "every unit acknowledged",
        )
        stop.set()
        await asyncio.gather(*tasks)
        held = {
            unit: store.call(
                lambda db: (
                    dict(db.execute("SELECT id, seq FROM readings")),
                    db.execute("SELECT epoch FROM store_identity").fetchone()[0],
                )
            )
            for unit, store in stores.items()
        }
    with psycopg.connect(postgres) as conn:
        for unit, (rows, epoch) in held.items():
            central = conn.execute(
                "SELECT id, seq FROM observations WHERE unit = %s", [unit]
            ).fetchall()
            assert dict(central) == rows and len(central) == per_unit  # 0 lost, 0 twice
            assert conn.execute(
                "SELECT epoch, last_contiguous_seq, max_seq FROM epochs WHERE unit = %s", [unit]
            ).fetchall() == [(epoch, per_unit, per_unit)]
        assert conn.execute("SELECT count(*) FROM conflicts").fetchone() == (0,)
    assert all(r.counts.batches > 0 for r in receivers)  # both took a share


def settings_with_unit(folder: Path, port: int, unit: str) -> Settings:
    cfg = settings(folder, port, batch=50, timeout=10)
    return cfg.model_copy(update={"unit": cfg.unit.model_copy(update={"id": unit})})


def test_two_receivers_holding_overlapping_batches_of_one_unit_keep_the_gap_right(
    postgres: str,
) -> None:
    """Mosquitto's shared subscription hands a unit's batches to either receiver in turn, so
    two receivers can hold overlapping batches of one unit at the same moment (a resend beside
    the original, batches either side of a gap). Made to overlap for sure: a third session
    holds the unit's epoch row while both receivers start their transaction, so both wait on
    it together, then it lets go. Receiver 1 holds seqs 3..10 and 21..30 (a gap 11..20);
    receiver 2 holds 11..20 and a resend of 5..15 (the same ids). Each reading is new once,
    the gap opens then closes, and the epoch ends at last contiguous = highest = 30."""
    import psycopg

    readings = {r["seq"]: r for r in rows(range(1, 31), "r")}
    first = open_central(postgres)
    second = open_central(postgres)
    try:
        first.store_batches([batch(UNIT, EPOCH, [readings[s] for s in (1, 2)])], NOW)
        one = [
            batch(UNIT, EPOCH, [readings[s] for s in range(3, 11)]),
            batch(UNIT, EPOCH, [readings[s] for s in range(21, 31)]),
        ]
        two = [
            batch(UNIT, EPOCH, [readings[s] for s in range(11, 21)]),
            batch(UNIT, EPOCH, [readings[s] for s in range(5, 16)]),
        ]
        with psycopg.connect(postgres) as holder, ThreadPoolExecutor(2) as pool:
            holder.execute(
                "SELECT 1 FROM epochs WHERE unit = %s AND epoch = %s FOR UPDATE", [UNIT, EPOCH]
            )
            ran = [pool.submit(first.store_batches, one, NOW)]
            wait_for_waiters(holder, 1)  # receiver 1 first in the queue: a known order
            ran.append(pool.submit(second.store_batches, two, NOW))
            wait_for_waiters(holder, 2)
            holder.rollback()  # both go, one after the other
            outcomes_one, outcomes_two = (f.result(timeout=60) for f in ran)
        assert [(o.new, o.held, o.refused, o.last_contiguous_seq) for o in outcomes_one] == [
            (8, 8, (), 10),
            (10, 10, (), 10),
        ]  # seqs 11..20 missing: a gap after 10
        assert [(o.new, o.held, o.refused, o.last_contiguous_seq) for o in outcomes_two] == [
            (10, 10, (), 30),
            (0, 11, (), 30),
        ]  # the gap filled; the resend held, not new
        assert first.query("SELECT last_contiguous_seq, max_seq FROM epochs") == [(30, 30)]
        assert first.gaps() == [] and second.gaps() == []
        assert sorted(first.query("SELECT seq, id FROM sequences")) == [
            (s, f"r{s}") for s in range(1, 31)
        ]
        assert first.query("SELECT count(*), count(DISTINCT id) FROM observations") == [(30, 30)]
        assert first.query("SELECT count(*) FROM conflicts") == [(0,)]
    finally:
        first.close()
        second.close()


def wait_for_waiters(conn: Any, count: int, timeout: float = 30) -> None:
    """Until ``count`` other sessions wait on a lock (bounded; no sleep-and-hope)."""
    deadline = time.monotonic() + timeout
    while (
        conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        ).fetchone()[0]
        < count
    ):
        assert time.monotonic() < deadline, f"{count} sessions never waited on the lock"
        time.sleep(0.02)
