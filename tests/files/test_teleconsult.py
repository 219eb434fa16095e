"""An encounter in teleconsultation now (``down/cmd`` teleconsult): its files go before the
readings backlog and before other files (never before an alert)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from edge_agent.files.attachments import AttachmentStore
from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync import topics
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.files.uploader import SegmentSizer, SendInit, Uploader
from tests.broker import MosquittoBroker
from tests.files.kit import UNIT, complete, settings
from tests.sync.checker import wait_until, watching


def test_the_teleconsultation_files_go_first_and_the_current_one_steps_aside() -> None:
    up = Uploader(5.0, SegmentSizer(64_000))
    for name in "abc":
        up.add(name * 64, 1000)
    up.connected()
    assert up.next_send(0.0) == SendInit("a" * 64)
    up.sent(SendInit("a" * 64), 0.0)
    up.prioritise({"c" * 64})
    assert up.next_send(0.0) == SendInit("c" * 64)
    assert list(up.queue) == ["a" * 64, "b" * 64]  # a resumes (from central's offset) next
    up.prioritise({"z" * 64})  # nothing of that encounter: no change
    assert up.current is not None and up.current.file_id == "c" * 64


async def test_teleconsult_command_sends_that_encounters_files_before_the_backlog(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port, uplink_bps=128_000)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        for f in [store.append("ox", [measurement("spo2", 97.0)]) for _ in range(3000)]:
            f.result(30)
        big = AttachmentStore(store).add_bytes(os.urandom(400_000), name="clip.mp4")
        urgent = AttachmentStore(store, open_encounter=lambda db: "enc-1").add_bytes(
            b"%PDF-1.4\n" + os.urandom(20_000), name="ecg.pdf", kind="ecg"
        )
        async with watching(mosquitto.port, topics.EVENTS.of(UNIT), name="central") as (
            link,
            events,
        ):
            daemon = SyncDaemon(store, cfg)
            tasks = [
                asyncio.create_task(Receiver("127.0.0.1", mosquitto.port, central).run(stop)),
                asyncio.create_task(daemon.run(stop)),
            ]
            await wait_until(lambda: daemon.connected, 15, "connected")
            link.publish(
                topics.CMD.of(UNIT),
                json.dumps({"id": "t1", "cmd": "teleconsult", "encounter": "enc-1"}).encode(),
            )
            await wait_until(
                lambda: complete(central, urgent.file_id),
                30,
                "the teleconsultation's ECG at central",
            )
            big_done = complete(central, big.file_id)
            pending = store.stats()["readings_pending_sync"]
            await wait_until(
                lambda: store.stats()["readings_pending_sync"] == 0,
                60,
                "the backlog drains after it",
            )
            async with asyncio.timeout(10):
                while True:
                    event = await events.get()
                    if event.kind == "message" and b"cmd-done" in event.payload:
                        break
            stop.set()
            await asyncio.gather(*tasks)
    assert not big_done, "the ECG waited for the other file"
    assert pending > 0, "the ECG waited for the readings backlog"
    assert json.loads(event.payload)["encounter"] == "enc-1"
