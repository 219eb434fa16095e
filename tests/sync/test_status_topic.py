"""The unit's retained status: birth with version, backlog and device states; a device change
refreshes it; the last will says offline when the link dies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from edge_agent.models import measurement
from edge_agent.service.supervisor import StoreSink
from edge_agent.store.writer import Store
from sync import topics
from sync.daemon import SyncDaemon
from sync.link import LinkEvent
from tests.broker import MosquittoBroker
from tests.sync.checker import watching
from tests.sync.test_faults import UNIT, settings


async def status_where(queue: asyncio.Queue[LinkEvent], check: Any) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            event = await queue.get()
            if event.kind == "message" and event.topic == topics.STATUS.of(UNIT):
                body: dict[str, Any] = json.loads(event.payload)
                if check(body):
                    return body


async def test_birth_and_device_changes(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = settings(tmp_path, mosquitto.port)
    stop = asyncio.Event()
    async with watching(mosquitto.port, topics.STATUS.of(UNIT)) as (_, queue):
        with Store(cfg.store.path, UNIT) as store:
            sink = StoreSink(store)
            sink.device_status("oximeter-1", "connected", "/dev/ttyUSB0")
            for _ in range(3):
                store.append("oximeter-1", [measurement("spo2", 97.0)]).result()
            daemon = SyncDaemon(store, cfg)
            sink.on_devices = daemon.devices_changed  # as the supervisor wires them
            task = asyncio.create_task(daemon.run(stop))
            birth = await status_where(queue, lambda b: b["state"] == "online"
                                       and b.get("devices"))
            assert birth["devices"]["oximeter-1"]["state"] == "connected"
            assert birth["backlog"] == 3 and birth["version"]
            sink.device_status("oximeter-1", "disconnected", "cable pulled")
            changed = await status_where(queue, lambda b: (b.get("devices") or {}).get(
                "oximeter-1", {}).get("state") == "disconnected")
            assert changed["state"] == "online"
            stop.set()
            await task
        offline = await status_where(queue, lambda b: b["state"] == "offline")
        assert offline["unit"] == UNIT
