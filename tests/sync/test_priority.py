"""Clinical alerts leave first: an alert-range reading behind a backlog goes out at once in a
batch of its own (outside the in-flight window), long before the backlog, and only once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync import codec, fhir, topics
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import assert_exactly_once, wait_until, watching
from tests.sync.test_faults import UNIT, settings


async def test_alert_overtakes_a_full_window(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = settings(tmp_path, mosquitto.port, batch=50)
    stop = asyncio.Event()
    async with watching(mosquitto.port, f"mmu/v1/{UNIT}/up/#") as (_, queue):
        with Store(cfg.store.path, UNIT) as store:
            for _ in range(400):  # a backlog: 8 batches, at most 4 in flight, no receiver
                store.append("ox", [measurement("spo2", 97.0)])
            task = asyncio.create_task(SyncDaemon(store, cfg).run(stop))
            seen = 0
            async with asyncio.timeout(20):
                while seen < 4:  # the window is full: four backlog batches, no acks
                    event = await queue.get()
                    if event.kind == "message" and event.topic == topics.READINGS.of(UNIT):
                        seen += 1
            store.append("ox", [measurement("spo2", 84.0)]).result()  # seq 401: alert
            async with asyncio.timeout(20):
                while True:
                    event = await queue.get()
                    if event.kind == "message" and event.topic == topics.READINGS.of(UNIT):
                        batch = codec.decode_batch(event.payload)
                        props = dict(event.user_properties)
                        if props.get("priority") == "alert":
                            break
            pending = store.stats()["readings_pending_sync"]
            stop.set()
            await task
    assert [r.resource["valueQuantity"]["value"] for r in batch.readings] == [84.0]
    assert {"url": fhir.EXT_FLAGS, "valueString": "alert"} in (
        batch.readings[0].resource["extension"]
    )
    assert pending == 401  # nothing acknowledged: the alert did not wait for the backlog


async def test_an_alert_is_sent_once(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = settings(tmp_path, mosquitto.port, batch=50)
    stop = asyncio.Event()
    carried: dict[str, set[str]] = {}  # reading id -> the batches that carried it
    async with watching(mosquitto.port, f"mmu/v1/{UNIT}/up/#") as (_, queue):
        with Store(cfg.store.path, UNIT) as store:
            for i in range(200):
                store.append("ox", [measurement("spo2", 84.0 if i % 40 == 0 else 97.0)])
            store.append("ox", [measurement("spo2", 97.0)]).result()
            receiver = Receiver(
                "127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx"
            )
            tasks = [
                asyncio.create_task(receiver.run(stop)),
                asyncio.create_task(SyncDaemon(store, cfg).run(stop)),
            ]
            await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 30, "drain")
            stop.set()
            await asyncio.gather(*tasks)
        while not queue.empty():
            event = queue.get_nowait()
            if event.kind == "message" and event.topic == topics.READINGS.of(UNIT):
                batch = codec.decode_batch(event.payload)
                for carried_reading in batch.readings:
                    carried.setdefault(carried_reading.id, set()).add(batch.batch_id)
            assert event.topic != topics.EVENTS.of(UNIT) or b"clinical-alert" not in (event.payload)
    assert assert_exactly_once(cfg.store.path, tmp_path / "central.db") == 201
    # Every reading in exactly one batch (a batch may be re-sent under its id: that is the
    # delivery protocol, not a second copy); alerts were not also sent as events.
    assert len(carried) == 201
    assert all(len(batches) == 1 for batches in carried.values())
