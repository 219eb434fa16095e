"""The reference receiver on PostgreSQL (real server, started by the test): two receivers side
by side behind one broker (shared subscription) store every reading exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until
from tests.sync.test_faults import UNIT, fill, settings


async def test_two_receivers_into_one_postgres(tmp_path: Path, mosquitto: MosquittoBroker,
                                               postgres: str) -> None:
    import psycopg

    cfg = settings(tmp_path, mosquitto.port, batch=25)
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        fill(store, 1000)
        store.append("ox", [measurement("pulse_rate", 72.0)]).result()
        receivers = [Receiver("127.0.0.1", mosquitto.port, postgres, client_id=f"rx-{i}")
                     for i in (1, 2)]
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
