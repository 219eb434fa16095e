"""Parts for the central-side tests: readings out of real unit stores, and a stub unit (a plain
MQTT client) that publishes batches under an epoch of its choosing and collects central's acks
and commands, on a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync import codec, topics
from sync.link import LinkEvent, LinkOptions, MqttLink


def store_rows(path: Path, unit: str, n: int) -> list[dict[str, Any]]:
    """``n`` readings (seq 1..n) from a fresh real unit store at ``path``."""
    with Store(path, unit, group_wait=0.002) as store:
        store.append("ox", [measurement("spo2", 97.0 + i % 3) for i in range(n)]).result(30)
        return store.call(
            lambda db: [dict(r) for r in db.query("SELECT * FROM readings ORDER BY seq")]
        )


def rows(seqs: range, prefix: str = "") -> list[dict[str, Any]]:
    """Synthetic readings; ids random unless ``prefix`` names them ``<prefix><seq>``."""
    return [
        {
            "seq": s,
            "id": f"{prefix}{s}" if prefix else str(uuid.uuid4()),
            "device_id": "ox",
            "quantity": "spo2",
            "value": 97.0,
            "unit": "%",
            "loinc": "59408-5",
            "mdc": 150456,
            "device_time": None,
            "received_at": "2026-11-23T08:00:00.000Z",
            "clock_source": "system",
            "flags": "[]",
            "absent_reason": None,
            "encounter_id": None,
        }
        for s in seqs
    ]


def batch(
    unit: str, epoch: str, readings: list[dict[str, Any]], batch_id: str | None = None
) -> codec.Batch:
    payload = codec.encode_batch(
        unit, batch_id or str(uuid.uuid4()), readings, "2026-11-23T08:00:00Z", epoch=epoch
    )
    return codec.decode_batch(payload)


class StubUnit:
    def __init__(self, unit: str, link: MqttLink, queue: asyncio.Queue[LinkEvent]) -> None:
        self.unit, self.link, self.queue = unit, link, queue
        self.acks: dict[str, list[dict[str, Any]]] = {}
        self.commands: list[dict[str, Any]] = []
        self.dead_letters: list[dict[str, Any]] = []  # central's dead-letter notices

    def send(
        self,
        epoch: str,
        readings: list[dict[str, Any]],
        *,
        batch_id: str | None = None,
        sent_at: float | None = None,
        payload: bytes | None = None,
    ) -> str:
        batch_id = batch_id or str(uuid.uuid4())
        if payload is None:
            payload = codec.encode_batch(
                self.unit, batch_id, readings, "2026-11-23T08:00:00Z", epoch=epoch
            )
        props = [("sent_at", repr(sent_at))] if sent_at is not None else []
        self.link.publish(topics.READINGS.of(self.unit), payload, user_properties=props)
        return batch_id

    async def next(self, topic: str, timeout: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                event = await self.queue.get()
                if event.kind != "message":
                    continue
                body: dict[str, Any] = json.loads(event.payload)
                if event.topic == topics.ACK.of(self.unit) and "dead_letter" in body:
                    self.dead_letters.append(body["dead_letter"])  # a notice, not an ack
                elif event.topic == topics.ACK.of(self.unit):
                    outer = {k: v for k, v in body.items() if k != "acks"}
                    for one in body.get("acks", [body]):  # a cumulative ack: one per batch
                        self.acks.setdefault(one["batch_id"], []).append({**outer, **one})
                else:
                    self.commands.append(body)
                if event.topic == topic:
                    return body

    async def ack_for(self, batch_id: str, timeout: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while batch_id not in self.acks:
                await self.next(topics.ACK.of(self.unit))
        return self.acks[batch_id][0]


@contextlib.asynccontextmanager
async def stub_unit(port: int, unit: str) -> AsyncIterator[StubUnit]:
    link = MqttLink(LinkOptions(f"stub-{unit}", "127.0.0.1", port, clean_start=True))
    queue = link.start()
    try:
        async with asyncio.timeout(10):
            while (await queue.get()).kind != "connected":
                pass
            link.subscribe([(topics.ACK.of(unit), 1), (topics.CMD.of(unit), 1)])
            while (await queue.get()).kind != "subscribed":
                pass
        yield StubUnit(unit, link, queue)
    finally:
        link.stop()
