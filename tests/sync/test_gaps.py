"""The receiver finds a per-unit sequence gap that does not fill by itself and asks the unit
to resend from the first missing seq (down/cmd), on a real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from sync import codec, topics
from sync.link import LinkEvent, LinkOptions, MqttLink
from sync.receiver import Receiver
from tests.broker import MosquittoBroker

UNIT = "mmu-g"


def rows(seqs: range) -> list[dict[str, object]]:
    return [{"seq": s, "id": str(uuid.uuid4()), "device_id": "ox", "quantity": "spo2",
             "value": 97.0, "unit": "%", "loinc": "59408-5", "mdc": 150456, "device_time": None,
             "received_at": "2026-11-23T08:00:00.000Z", "clock_source": "system", "flags": "[]",
             "absent_reason": None, "encounter_id": None} for s in seqs]


async def next_message(queue: asyncio.Queue[LinkEvent], topic: str) -> dict[str, object]:
    async with asyncio.timeout(15):
        while True:
            event = await queue.get()
            if event.kind == "message" and event.topic == topic:
                body: dict[str, object] = json.loads(event.payload)
                return body


async def test_a_lasting_gap_is_asked_for_again(tmp_path: Path,
                                                mosquitto: MosquittoBroker) -> None:
    unit = MqttLink(LinkOptions(UNIT, "127.0.0.1", mosquitto.port, clean_start=True))
    queue = unit.start()
    stop = asyncio.Event()
    receiver = Receiver("127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx",
                        gap_timeout=0.3)
    task = asyncio.create_task(receiver.run(stop))
    try:
        async with asyncio.timeout(10):
            while (await queue.get()).kind != "connected":
                pass
            await receiver.connected.wait()
        unit.subscribe([(topics.CMD.of(UNIT), 1), (topics.ACK.of(UNIT), 1)])

        def send(seqs: range) -> None:
            unit.publish(topics.READINGS.of(UNIT), codec.encode_batch(
                UNIT, str(uuid.uuid4()), rows(seqs), "2026-11-23T08:00:00Z"))

        send(range(1, 4))
        ack = await next_message(queue, topics.ACK.of(UNIT))
        assert ack["last_contiguous_seq"] == 3
        send(range(6, 8))  # 4 and 5 are missing
        ack = await next_message(queue, topics.ACK.of(UNIT))
        assert ack["last_contiguous_seq"] == 3
        command = await next_message(queue, topics.CMD.of(UNIT))
        assert command["cmd"] == "resend-from" and command["seq"] == 4
        send(range(4, 6))  # the unit resends
        ack = await next_message(queue, topics.ACK.of(UNIT))
        assert ack["last_contiguous_seq"] == 7
        requests = receiver.resend_requests
        assert requests >= 1
    finally:
        stop.set()
        await task
        unit.stop()
    assert receiver.resend_requests == requests  # gap filled: no more requests
