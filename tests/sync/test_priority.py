"""Clinical alerts leave first: an alert reading behind a backlog reaches central at once on
up/events, long before the readings batch that carries it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge_agent.models import measurement
from edge_agent.store import Store
from sync import topics
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import watching
from tests.sync.test_faults import UNIT, settings


async def test_alert_overtakes_the_backlog(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = settings(tmp_path, mosquitto.port, batch=50)
    stop = asyncio.Event()
    async with watching(mosquitto.port, f"mmu/v1/{UNIT}/up/#") as (_, queue):
        with Store(cfg.store.path, UNIT) as store:
            for _ in range(400):  # a backlog: 8 batches, at most 4 in flight, no receiver
                store.append("ox", [measurement("spo2", 97.0)])
            store.append("ox", [measurement("spo2", 84.0)]).result()  # seq 401: alert
            task = asyncio.create_task(SyncDaemon(store, cfg).run(stop))
            async with asyncio.timeout(20):
                while True:
                    event = await queue.get()
                    if event.kind == "message" and event.topic == topics.EVENTS.of(UNIT):
                        alert = json.loads(event.payload)
                        break
            pending = store.stats()["readings_pending_sync"]
            stop.set()
            await task
    assert alert["type"] == "clinical-alert"
    obs = alert["observation"]
    assert obs["valueQuantity"]["value"] == 84.0
    assert {"url": "urn:mmu:fhir:flags", "valueString": "alert"} in obs["extension"]
    assert pending == 401  # nothing acknowledged yet: the alert did not wait for the backlog
