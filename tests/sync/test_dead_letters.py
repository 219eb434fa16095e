"""A message central parks in ``dead_letters`` is told to its unit on ``down/ack`` (a
dead-letter notice): the unit logs and counts it and ``sync status`` shows it; ``receive
--stats`` lists the dead letters (never their payload). Real Mosquitto, real receiver, real
stores; the poison is planted in central's store (a subclass that refuses one batch)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.store.writer import Store
from sync import codec, topics
from sync.central.receiver import Receiver
from sync.central.store import Outcome, SqliteCentral
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until, watching
from tests.sync.test_sync_broker import UNIT, config, fill


class PoisonOnce(SqliteCentral):
    """Refuses the first real batch for good (not a transient error): a poison message."""

    poisoned: ClassVar[list[str]] = []  # batch ids refused, across the reopened stores

    def store_batches(self, batches: Sequence[codec.Batch], stored_at: str) -> list[Outcome]:
        if not PoisonOnce.poisoned:
            PoisonOnce.poisoned.append(batches[0].batch_id)
            raise ValueError("poison: the data says CANARY-PATIENT")
        return super().store_batches(batches, stored_at)


async def test_a_dead_letter_is_told_to_the_unit_and_listed(
    tmp_path: Path, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    PoisonOnce.poisoned.clear()
    cfg = config(tmp_path, mosquitto.port, batch=10, timeout=30)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        daemon = SyncDaemon(store, cfg)
        receiver = Receiver(
            "127.0.0.1",
            mosquitto.port,
            central,
            client_id="rx-dead",
            open_store=lambda: PoisonOnce(central),
        )
        tasks = [asyncio.create_task(receiver.run(stop)), asyncio.create_task(daemon.run(stop))]
        await wait_until(
            lambda: daemon.connected and receiver.connected.is_set(),
            20,
            "daemon and receiver connected",
        )
        # 1. Not a batch at all, on the unit's uplink, naming a batch id: parked, told.
        async with watching(mosquitto.port, topics.ACK.of(UNIT), name="forger") as (forger, _):
            forger.publish(
                topics.READINGS.of(UNIT),
                b"not a batch",
                user_properties=[("batch_id", "forged-1"), ("epoch", store.epoch)],
            )
            await wait_until(lambda: daemon.dead_letters == 1, 20, "the unit told")
        assert daemon.last_dead_letter is not None
        assert daemon.last_dead_letter["batch_id"] == "forged-1"
        assert daemon.last_dead_letter["reason"].startswith("codec: not zlib data")
        assert "dead letter" in str(daemon.status()["last_error"])
        # 2. A real batch central's store refuses for good: parked, refused, told.
        fill(store, 10)
        await wait_until(lambda: daemon.dead_letters == 2, 20, "the unit told again")
        assert daemon.last_dead_letter["batch_id"] == PoisonOnce.poisoned[0]
        assert daemon.last_dead_letter["reason"] == "central-store-error: ValueError"
        await wait_until(lambda: daemon.refused_readings == 10, 20, "its readings refused")
        fill(store, 10)  # and sync goes on
        await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 30, "drain")
        stop.set()
        await asyncio.gather(*tasks)
    assert any(
        "as a dead letter" in r.getMessage() for r in caplog.records if r.name == "sync.daemon"
    )
    runner = CliRunner()
    status = runner.invoke(app, ["sync", "status", "--db", str(cfg.store.path), "--json"])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)
    assert shown["dead_letters"] == 2
    assert shown["last_dead_letter"]["reason"] == "central-store-error: ValueError"
    text = runner.invoke(app, ["sync", "status", "--db", str(cfg.store.path)])
    assert "dead letters:      2 parked by central" in text.stdout
    listed = runner.invoke(app, ["receive", "--stats", "--db", str(central)])
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.stdout)["dead_letters"]
    assert [(d["batch_id"], d["reason"]) for d in letters] == [
        (PoisonOnce.poisoned[0], "central-store-error: ValueError"),  # newest first
        (
            "forged-1",
            "codec: not zlib data: Error -3 while decompressing data: incorrect header check",
        ),
    ]
    assert letters[1]["bytes"] == len(b"not a batch") and letters[1]["unit"] == UNIT
    assert "CANARY" not in listed.stdout + status.stdout + text.stdout
