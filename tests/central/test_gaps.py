"""The receiver finds a sequence gap in a unit's current epoch that does not fill by itself and
asks the unit to resend from the first missing seq (down/cmd, with the epoch), on a real broker.
An old epoch's gap is listed, never asked for: that store is gone."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from sync import topics
from sync.central.receiver import Receiver
from tests.broker import MosquittoBroker
from tests.central.central_kit import rows, stub_unit

UNIT = "mmu-g"
OLD, NEW = str(uuid.uuid4()), str(uuid.uuid4())


async def test_a_lasting_gap_is_asked_for_again_in_the_current_epoch_only(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    stop = asyncio.Event()
    receiver = Receiver(
        "127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx", gap_timeout=0.3
    )
    task = asyncio.create_task(receiver.run(stop))
    try:
        await asyncio.wait_for(receiver.connected.wait(), 10)
        async with stub_unit(mosquitto.port, UNIT) as unit:
            ack_topic, cmd_topic = topics.ACK.of(UNIT), topics.CMD.of(UNIT)
            unit.send(OLD, rows(range(1, 4)))
            assert (await unit.next(ack_topic))["last_contiguous_seq"] == 3
            unit.send(OLD, rows(range(6, 8)))  # 4 and 5 are missing
            assert (await unit.next(ack_topic))["last_contiguous_seq"] == 3
            command = await unit.next(cmd_topic)
            assert command == {**command, "cmd": "resend-from", "seq": 4, "epoch": OLD}
            unit.send(OLD, rows(range(4, 6)))  # the unit resends
            ack = await unit.next(ack_topic)
            assert (ack["epoch"], ack["last_contiguous_seq"]) == (OLD, 7)
            requests = receiver.resend_requests
            assert requests >= 1
            # A gap again in OLD, then the unit starts over with a new store (NEW) that has
            # a gap of its own: only NEW's is asked for, twice over.
            unit.send(OLD, rows(range(9, 10)))
            await unit.next(ack_topic)
            unit.send(NEW, rows(range(1, 3)))
            unit.send(NEW, rows(range(4, 5)))
            await unit.next(ack_topic)
            await unit.next(ack_topic)
            unit.commands.clear()
            while len([c for c in unit.commands if c["epoch"] == NEW]) < 2:
                await unit.next(cmd_topic)
            assert [(c["epoch"], c["seq"]) for c in unit.commands] == [(NEW, 3), (NEW, 3)]
            unit.send(NEW, rows(range(3, 4)))
            assert (await unit.next(ack_topic))["last_contiguous_seq"] == 4
            requests = receiver.resend_requests
    finally:
        stop.set()
        await task
    assert receiver.resend_requests == requests  # gap filled: no more requests
