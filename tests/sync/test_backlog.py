"""A long offline period drained over a real broker: a day of readings in the normal suite,
a week behind the ``soak`` marker (``scripts/soak``). Both end with the exactly-once check and
print the drain rate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import assert_exactly_once, wait_until
from tests.sync.test_faults import UNIT, settings

DAY = 20_000  # a day of one unit: spot checks, an oximeter's 1 Hz hours, BP, glucose
WEEK = 7 * DAY


def backlog(store: Store, n: int) -> None:
    batch = [measurement("spo2", 97.0), measurement("pulse_rate", 72.0)]
    futures = [store.append("ox", batch) for _ in range(n // 2)]
    for f in futures:
        f.result(120)


async def drain(tmp_path: Path, port: int, n: int) -> float:
    cfg = settings(tmp_path, port, batch=500, timeout=10.0)
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        backlog(store, n)
        receiver = Receiver("127.0.0.1", port, tmp_path / "central.db", client_id="rx")
        start = time.monotonic()
        tasks = [
            asyncio.create_task(receiver.run(stop)),
            asyncio.create_task(SyncDaemon(store, cfg).run(stop)),
        ]
        await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 600, "drain")
        elapsed = time.monotonic() - start
        stop.set()
        await asyncio.gather(*tasks)
    assert assert_exactly_once(cfg.store.path, tmp_path / "central.db") == n
    print(f"\ndrained {n} readings in {elapsed:.1f} s ({n / elapsed:.0f} readings/s)")
    return elapsed


async def test_a_day_offline_drains(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    await drain(tmp_path, mosquitto.port, DAY)


@pytest.mark.soak
async def test_a_week_offline_drains(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    await drain(tmp_path, mosquitto.port, WEEK)
