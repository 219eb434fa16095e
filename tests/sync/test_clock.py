"""Time: readings stamped while the unit clock is not trusted are flagged; central's time in
an ack confirms a good clock, and exposes a wrong one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from edge_agent.models import ClockSource, measurement
from edge_agent.store import Store
from sync.daemon import SyncDaemon
from sync.receiver import Receiver
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until
from tests.sync.test_faults import settings


def flags(store: Store) -> list[tuple[str, list[str]]]:
    return store.call(lambda db: [(r[0], json.loads(r[1])) for r in db.execute(
        "SELECT clock_source, flags FROM readings ORDER BY seq")])


async def test_central_confirms_an_unsynchronised_clock(tmp_path: Path,
                                                        mosquitto: MosquittoBroker) -> None:
    cfg = settings(tmp_path, mosquitto.port)
    stop = asyncio.Event()
    with Store(cfg.store.path, "mmu-t") as store:
        store.clock_source = ClockSource.UNTRUSTED  # booted offline, kernel says unsynced
        store.append("ox", [measurement("spo2", 97.0)]).result()
        receiver = Receiver("127.0.0.1", mosquitto.port, tmp_path / "central.db",
                            client_id="rx")
        daemon = SyncDaemon(store, cfg)
        tasks = [asyncio.create_task(receiver.run(stop)), asyncio.create_task(daemon.run(stop))]
        await wait_until(lambda: store.clock_source is ClockSource.SYSTEM, 30, "confirmation")
        store.append("ox", [measurement("spo2", 96.0)]).result()
        stop.set()
        await asyncio.gather(*tasks)
        got = flags(store)
    assert got[0] == ("untrusted", ["clock-untrusted"])  # flagged, not dropped, not re-dated
    assert got[1] == ("system", [])
    assert daemon.clock_offset_s is not None and abs(daemon.clock_offset_s) < 2


@pytest.mark.parametrize("offset", [-3600.0, 86400.0])
def test_a_wrong_clock_is_flagged_again(tmp_path: Path, offset: float) -> None:
    cfg = settings(tmp_path, 1)
    with Store(cfg.store.path, "mmu-t") as store:
        daemon = SyncDaemon(store, cfg)
        seen = []
        for measured in (offset, 0.4):
            daemon._check_clock(measured)
            seen.append(store.clock_source)
    assert seen == [ClockSource.UNTRUSTED, ClockSource.SYSTEM]
