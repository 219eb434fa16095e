"""Downlink from central on a real broker: commands and config applied, bad ones refused and
reported on up/events, never applied."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync import topics
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.downlink import apply_config, parse_command
from sync.link import LinkEvent
from sync.refusals import DownlinkRefused
from tests.broker import MosquittoBroker
from tests.sync.checker import assert_exactly_once, wait_until, watching
from tests.sync.test_faults import settings

UNIT = "mmu-t"


async def events_until(queue: asyncio.Queue[LinkEvent], kind: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            event = await queue.get()
            if event.kind == "message" and event.topic == topics.EVENTS.of(UNIT):
                body: dict[str, Any] = json.loads(event.payload)
                if body["type"] == kind:
                    return body


async def test_commands_and_config_from_central(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = settings(tmp_path, mosquitto.port, batch=10)
    stop = asyncio.Event()
    async with watching(mosquitto.port, topics.EVENTS.of(UNIT), name="central") as (central, queue):
        with Store(cfg.store.path, UNIT) as store:
            for _ in range(40):
                store.append("ox", [measurement("spo2", 97.0)]).result()
            daemon = SyncDaemon(store, cfg)
            receiver = Receiver(
                "127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx"
            )
            tasks = [asyncio.create_task(receiver.run(stop)), asyncio.create_task(daemon.run(stop))]
            await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 30, "sync")

            def send(topic: topics.Topic, body: object) -> None:
                central.publish(topic.of(UNIT), json.dumps(body).encode())

            send(topics.CONFIG, {"version": 3, "sync": {"batch_size": 25}})
            assert (await events_until(queue, "config-applied"))["version"] == 3
            assert daemon.settings.sync.batch_size == 25
            send(topics.CONFIG, {"version": 2, "sync": {"batch_size": 5}})  # a replay
            refused = await events_until(queue, "downlink-refused")
            assert "not newer" in refused["reason"] and daemon.settings.sync.batch_size == 25
            send(topics.CONFIG, {"version": 4, "sync": {"batch_size": 0}})  # invalid
            assert "batch_size" in (await events_until(queue, "downlink-refused"))["reason"]
            send(topics.CMD, {"id": "c1", "cmd": "reboot"})  # unknown command
            assert "cmd" in (await events_until(queue, "downlink-refused"))["reason"]
            central.publish(topics.CMD.of(UNIT), b"\xff not json")
            assert "not JSON" in (await events_until(queue, "downlink-refused"))["reason"]
            send(topics.CMD, {"id": "c2", "cmd": "resend-from", "seq": 31})
            done = await events_until(queue, "cmd-done")
            assert done == {**done, "id": "c2", "readings": 10}
            await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 30, "resend")
            send(topics.CMD, {"id": "c3", "cmd": "diagnostics"})
            diag = await events_until(queue, "cmd-done")
            assert diag["store"] == {"readings": 40, "rejects": 0}
            assert daemon.refused_downlinks == 4
            stop.set()
            await asyncio.gather(*tasks)
        assert receiver.counts.duplicates == 10  # the resent readings, stored once
    assert assert_exactly_once(cfg.store.path, tmp_path / "central.db") == 40


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"id": "x", "cmd": "resend-from"}', "needs seq"),
        (b'{"id": "x", "cmd": "sync-now", "extra": 1}', "extra"),
        (b"[" * 100_000, "over"),
    ],
)
def test_commands_are_validated(payload: bytes, reason: str) -> None:
    with pytest.raises(DownlinkRefused, match=reason):
        parse_command(payload)


def test_config_outside_sync_is_refused(tmp_path: Path) -> None:
    cfg = settings(tmp_path, 1)
    with pytest.raises(DownlinkRefused, match="devices"):
        apply_config(cfg, b'{"version": 1, "devices": []}', 0)
    new, version = apply_config(cfg, b'{"version": 1, "sync": {"max_in_flight": 2}}', 0)
    assert (new.sync.max_in_flight, version, cfg.sync.max_in_flight) == (2, 1, 4)


def recognised(daemon: SyncDaemon) -> bool:
    return daemon.config_recognised == 1


async def test_remote_config_survives_a_restart_and_reaches_the_running_session(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Applied to the running session (window, timeout, pacing), kept in the store, applied
    again at the next start; the retained copy of the same version is then recognised, not
    refused."""
    cfg = settings(tmp_path, mosquitto.port, batch=10)
    change = {
        "version": 7,
        "sync": {"batch_size": 33, "max_in_flight": 2, "ack_timeout_s": 12.5, "uplink_bps": 64000},
    }
    async with watching(mosquitto.port, topics.EVENTS.of(UNIT), name="central") as (central, queue):
        central.publish(topics.CONFIG.of(UNIT), json.dumps(change).encode(), retain=True)
        with Store(cfg.store.path, UNIT) as store:
            for run in ("first", "after restart"):
                stop = asyncio.Event()
                daemon = SyncDaemon(store, cfg)  # the file's settings, each time
                task = asyncio.create_task(daemon.run(stop))
                if run == "first":
                    assert (await events_until(queue, "config-applied"))["version"] == 7
                else:
                    # the retained down/config arrives again: recognised, nothing to refuse
                    await wait_until(functools.partial(recognised, daemon), 20, "retained")
                assert daemon.settings.sync.batch_size == 33, run
                assert daemon.session.max_in_flight == 2, run
                assert daemon.session.ack_timeout == 12.5, run
                assert daemon.pacer.bits_per_second == 64000, run
                assert daemon.config_version == 7, run
                stop.set()
                await task
            assert daemon.refused_downlinks == 0
    while not queue.empty():  # and nothing was refused on up/events either
        event = queue.get_nowait()
        if event.kind == "message":
            assert json.loads(event.payload)["type"] != "downlink-refused"


def test_a_replayed_or_altered_config_version_is_refused(tmp_path: Path) -> None:
    cfg = settings(tmp_path, 1)
    new, version = apply_config(cfg, b'{"version": 5, "sync": {"batch_size": 50}}', 4)
    assert version == 5 and new.sync.batch_size == 50
    with pytest.raises(DownlinkRefused, match="not newer"):
        apply_config(new, b'{"version": 5, "sync": {"batch_size": 60}}', 5, {"batch_size": 50})
    with pytest.raises(DownlinkRefused, match="not newer"):
        apply_config(new, b'{"version": 4, "sync": {"batch_size": 50}}', 5, {"batch_size": 50})


async def test_sync_now_from_central_sends_the_batches_in_flight_again(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """``down/cmd`` sync-now: the batch in flight goes again at once, under its own id, long
    before its ack timeout (no central acknowledges here)."""
    cfg = settings(tmp_path, mosquitto.port, batch=10, timeout=600.0)
    stop = asyncio.Event()
    async with watching(
        mosquitto.port, topics.EVENTS.of(UNIT), topics.READINGS.of(UNIT), name="central"
    ) as (central, queue):
        with Store(cfg.store.path, UNIT) as store:
            for _ in range(3):
                store.append("ox", [measurement("spo2", 97.0)]).result()
            task = asyncio.create_task(SyncDaemon(store, cfg).run(stop))
            sent: list[str] = []
            done: dict[str, Any] | None = None
            try:
                async with asyncio.timeout(30):
                    while len(sent) < 2 or done is None:
                        event = await queue.get()
                        if event.kind != "message":
                            continue
                        if event.topic == topics.READINGS.of(UNIT):
                            sent.append(dict(event.user_properties)["batch_id"])
                            if len(sent) == 1:
                                central.publish(
                                    topics.CMD.of(UNIT),
                                    json.dumps({"id": "s1", "cmd": "sync-now"}).encode(),
                                )
                        elif json.loads(event.payload)["type"] == "cmd-done":
                            done = json.loads(event.payload)
            finally:
                stop.set()
                await task
    assert sent[0] == sent[1] and done is not None and done["id"] == "s1"
