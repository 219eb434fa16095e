"""An ack that names another store epoch (the store this unit's store replaced) is not about
this store's batches: it marks nothing, even when it names a batch id in flight here. Real
Mosquitto, real store; central is played by a plain client that publishes the acks."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from edge_agent.store.writer import Store
from sync import codec, topics
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until, watching
from tests.sync.test_sync_broker import UNIT, config, fill


async def test_an_ack_for_another_store_epoch_marks_nothing(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = config(tmp_path, mosquitto.port, batch=10, timeout=600)
    stop = asyncio.Event()
    async with watching(mosquitto.port, topics.READINGS.of(UNIT)) as (central, queue):
        with Store(cfg.store.path, UNIT) as store:
            fill(store, 10)
            daemon = SyncDaemon(store, cfg)
            task = asyncio.create_task(daemon.run(stop))
            async with asyncio.timeout(20):
                while (event := await queue.get()).kind != "message":
                    pass
            batch = codec.decode_batch(event.payload)
            assert batch.epoch == store.epoch

            def ack(epoch: str) -> bytes:
                return json.dumps(
                    {
                        "batch_id": batch.batch_id,
                        "epoch": epoch,
                        "stored": len(batch.readings),
                        "refused": [],
                        "last_contiguous_seq": batch.seq_to,
                    }
                ).encode()

            central.publish(topics.ACK.of(UNIT), ack(str(uuid.uuid4())))
            central.publish(topics.ACK.of(UNIT), b"not an ack")  # in order, after it
            await wait_until(lambda: daemon.refused_downlinks == 1, 20, "both downlinks handled")
            assert store.stats()["readings_sent"] == 0
            assert daemon.status()["in_flight_batches"] == 1
            assert daemon.session.central_seq == 0  # its seq is another store's too
            central.publish(topics.ACK.of(UNIT), ack(store.epoch))  # this store's: marked
            await wait_until(lambda: store.stats()["readings_sent"] == 10, 20, "marked sent")
            stop.set()
            await task
