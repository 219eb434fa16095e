"""Under a low uplink cap an alert batch goes at once, while ordinary batches wait for their
bandwidth, and its bytes are charged to the cap all the same (what follows waits for them).
Real Mosquitto, real store; no receiver (nothing is acknowledged, so nothing is sent twice)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent.models import measurement
from edge_agent.settings import SyncSettings
from edge_agent.store.writer import Store
from sync import topics
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until, watching
from tests.sync.test_faults import UNIT, fill, settings


async def test_an_alert_goes_at_once_under_the_cap_and_its_bytes_are_charged(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port)
    # 1000 bit/s (the lowest cap): three batches of 300 readings (~10 KB each) overrun the
    # 16 KB burst, so the third waits tens of seconds. No re-send, no later status meanwhile.
    cfg = cfg.model_copy(
        update={
            "sync": SyncSettings(
                batch_size=300,
                max_in_flight=3,
                ack_timeout_s=600,
                uplink_bps=1000,
                status_interval_s=3600,
            )
        }
    )
    stop = asyncio.Event()
    readings = topics.READINGS.of(UNIT)
    async with watching(mosquitto.port, readings, topics.STATUS.of(UNIT)) as (_, queue):
        with Store(cfg.store.path, UNIT) as store:
            fill(store, 900)
            daemon = SyncDaemon(store, cfg)
            task = asyncio.create_task(daemon.run(stop))
            seen: list[bool] = []  # readings batches on the wire: alert or not
            status_seen = False

            async def take_events(until_alert: bool) -> None:
                nonlocal status_seen
                while not queue.empty() or until_alert:
                    event = await queue.get()
                    if event.kind != "message":
                        continue
                    if event.topic == readings:
                        alert = dict(event.user_properties).get("priority") == "alert"
                        seen.append(alert)
                        if alert:
                            payloads.append(len(event.payload))
                            return
                    elif event.topic == topics.STATUS.of(UNIT):
                        status_seen = True

            payloads: list[int] = []
            await wait_until(
                lambda: daemon.status()["in_flight_batches"] == 3, 30, "the window full"
            )
            async with asyncio.timeout(30):
                while not status_seen:
                    await take_events(False)
                    await asyncio.sleep(0.05)
            before = daemon.pacer.charged_bytes  # three batches and the status, all charged
            store.append("ox", [measurement("spo2", 84.0)]).result(10)  # an alert
            async with asyncio.timeout(20):  # the held batch waits far longer than this
                await take_events(True)
            charged = daemon.pacer.charged_bytes - before
            stop.set()
            await task
    assert seen.count(False) < 3, "the cap held an ordinary batch back"
    assert seen[-1] is True
    assert charged == payloads[0]  # the alert's bytes counted against the cap
