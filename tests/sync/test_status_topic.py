"""The unit's retained status: birth with version, backlog and device states; a device change
refreshes it; the last will says offline when the link dies."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from edge_agent.models import measurement
from edge_agent.service.supervisor import StoreSink
from edge_agent.store.writer import Store
from sync import topics
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.link import LinkEvent
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until, watching
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
            birth = await status_where(queue, lambda b: b["state"] == "online" and b.get("devices"))
            assert birth["devices"]["oximeter-1"]["state"] == "connected"
            assert birth["backlog"] == 3 and birth["version"]
            sink.device_status("oximeter-1", "disconnected", "cable pulled")
            changed = await status_where(
                queue,
                lambda b: (
                    (b.get("devices") or {}).get("oximeter-1", {}).get("state") == "disconnected"
                ),
            )
            assert changed["state"] == "online"
            stop.set()
            await task
        offline = await status_where(queue, lambda b: b["state"] == "offline")
        assert offline["unit"] == UNIT


async def test_a_status_under_a_spent_uplink_cap_does_not_stall_the_loop(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """A changed status (a few hundred bytes, at most once an interval) goes at once under a
    spent uplink cap, its bytes charged to the cap; the loop goes on, and an alert still leaves
    at once. (It slept inside the turn before: nothing was served until the status had gone,
    hours later here.)"""
    cfg = settings(tmp_path, mosquitto.port)
    cfg = cfg.model_copy(
        update={"sync": cfg.sync.model_copy(update={"uplink_bps": 8000, "status_interval_s": 1.0})}
    )
    stop = asyncio.Event()
    async with watching(mosquitto.port, topics.STATUS.of(UNIT)) as (_, queue):
        with Store(cfg.store.path, UNIT) as store:
            daemon = SyncDaemon(store, cfg)
            receiver = Receiver(
                "127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx-status"
            )
            tasks = [asyncio.create_task(receiver.run(stop)), asyncio.create_task(daemon.run(stop))]
            try:
                await status_where(queue, lambda b: b["state"] == "online")
                await wait_until(lambda: receiver.connected.is_set(), 10, "central up")
                await wait_until(
                    lambda: daemon._status.due(time.monotonic()) is None,
                    10,
                    "the status interval passed",
                )
                # The modem's share is spent for hours (a large upload went before): the
                # bucket is drained directly, as nothing on a loopback broker would.
                daemon.pacer.delay(10**7, time.monotonic())
                turns = daemon.wakeups
                daemon.devices_changed({"oximeter-1": {"state": "disconnected"}})
                await wait_until(lambda: daemon.wakeups > turns, 10, "the change noticed")
                store.append("oximeter-1", [measurement("spo2", 84.0)]).result()  # an alert
                await wait_until(
                    lambda: store.stats()["readings_pending_sync"] == 0,
                    30,
                    "the alert acknowledged under the spent cap",
                )
                changed = await status_where(
                    queue, lambda b: b["devices"] == {"oximeter-1": {"state": "disconnected"}}
                )
                assert changed["state"] == "online"  # the status went, hours before its share
            finally:
                stop.set()
                _, pending = await asyncio.wait(tasks, timeout=20)
                for task in pending:  # the old loop slept through the stop as well
                    task.cancel()
                assert not pending, "the sync loop did not stop"
