"""A batch the broker refuses (PUBACK reason code >= 0x80: here an ACL that does not let the
unit publish its readings) stays in flight and is sent again by the same running agent once
the broker takes it: never dropped, never waiting for a restart. Real Mosquitto, real receiver,
real store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import assert_exactly_once, wait_until
from tests.sync.test_sync_broker import UNIT, config, fill

# Nobody may publish readings: the unit's batches are refused, central still subscribes.
DENY = (
    "topic readwrite mmu/v1/+/down/#\ntopic readwrite mmu/v1/+/up/status\n"
    "topic readwrite mmu/v1/+/up/events\ntopic read mmu/v1/+/up/readings\n"
)
ALLOW = "topic readwrite #\n"


async def test_a_refused_batch_is_sent_again_by_the_running_agent(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(DENY)
    (tmp_path / "broker").mkdir()
    broker = MosquittoBroker(tmp_path / "broker", extra_config=f"acl_file {acl}\n").start()
    try:
        cfg = config(tmp_path, broker.port, timeout=1.0)
        central = tmp_path / "central.db"
        stop = asyncio.Event()
        with Store(cfg.store.path, UNIT, group_wait=0.002) as store:
            fill(store, 30)
            daemon = SyncDaemon(store, cfg)
            receiver = Receiver("127.0.0.1", broker.port, central, client_id="rx-refused")
            tasks = [asyncio.create_task(daemon.run(stop)), asyncio.create_task(receiver.run(stop))]
            await wait_until(
                lambda: daemon.status()["broker_refusals"] >= 2,
                30,
                "the broker refused the batches",
            )
            assert store.stats()["readings_sent"] == 0 and receiver.counts.stored == 0
            assert "broker refused a batch" in str(daemon.status()["last_error"])
            acl.write_text(ALLOW)
            broker.reload()  # Mosquitto reads its ACL file again
            await wait_until(
                lambda: store.stats()["readings_pending_sync"] == 0,
                30,
                "the refused batches sent again and acknowledged",
            )
            stop.set()
            await asyncio.gather(*tasks)
        assert assert_exactly_once(cfg.store.path, central, unit=UNIT) == 30
    finally:
        broker.stop()
