"""Store -> SyncDaemon -> real Mosquitto -> Receiver, on loopback: every reading stored centrally
exactly once, and marked sent in the unit's store only after central acknowledged it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edge_agent.models import measurement
from edge_agent.settings import BrokerSettings, Settings, StoreSettings, SyncSettings, UnitSettings
from edge_agent.store import device_facts
from edge_agent.store.writer import Store
from sync import codec, topics
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.link import LinkEvent, LinkOptions, MqttLink
from tests.broker import MosquittoBroker
from tests.sync.checker import assert_exactly_once, wait_until

UNIT = "mmu-t"


def config(tmp: Path, port: int, *, batch: int = 20, timeout: float = 0.5) -> Settings:
    return Settings(
        unit=UnitSettings(id=UNIT),
        store=StoreSettings(path=tmp / "unit.db"),
        broker=BrokerSettings(host="127.0.0.1", port=port, tls=False, keepalive_s=5),
        sync=SyncSettings(batch_size=batch, ack_timeout_s=timeout, max_in_flight=3),
    )


def fill(store: Store, n: int) -> None:
    store.append("ox", [measurement("spo2", 97.0) for _ in range(n)]).result(10)


@contextlib.asynccontextmanager
async def spy(port: int, topic: str) -> AsyncIterator[asyncio.Queue[LinkEvent]]:
    """A plain MQTT client watching ``topic``: its events, once subscribed."""
    link = MqttLink(LinkOptions("spy", "127.0.0.1", port, clean_start=True))
    events = link.start()
    try:
        async with asyncio.timeout(10):
            while (await events.get()).kind != "connected":
                pass
            link.subscribe([(topic, 1)])
            while (await events.get()).kind != "subscribed":
                pass
        yield events
    finally:
        link.stop()


async def batches_seen(events: asyncio.Queue[LinkEvent], count: int) -> list[LinkEvent]:
    seen: list[LinkEvent] = []
    async with asyncio.timeout(15):
        while len(seen) < count:
            event = await events.get()
            if event.kind == "message":
                seen.append(event)
    return seen


def sent_after_stored(unit_db: Path, central_db: Path) -> bool:
    """Every reading's sent_at (unit) is no earlier than its stored_at (central)."""
    with (
        contextlib.closing(sqlite3.connect(unit_db)) as u,
        contextlib.closing(sqlite3.connect(central_db)) as c,
    ):
        sent = dict(u.execute("SELECT id, sent_at FROM readings"))
        stored = dict(c.execute("SELECT id, stored_at FROM observations"))
    return all(sent[i] is not None and sent[i] >= stored[i] for i in sent)


async def test_nothing_is_marked_sent_until_central_stores_it(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = config(tmp_path, mosquitto.port)
    central = tmp_path / "central.db"
    stop, rx_stop = asyncio.Event(), asyncio.Event()
    with Store(cfg.store.path, UNIT, group_wait=0.002) as store:
        fill(store, 150)
        async with spy(mosquitto.port, topics.READINGS.of(UNIT)) as uplink:
            daemon = SyncDaemon(store, cfg)
            task = asyncio.create_task(daemon.run(stop))
            # No receiver: the broker takes every batch (PUBACK), nobody acknowledges. Seeing
            # a batch id twice proves the ack timeout ran out, and still nothing is sent.
            seen = await batches_seen(uplink, 8)
            ids = [dict(e.user_properties)["batch_id"] for e in seen]
            assert len(set(ids)) < len(ids), "an unacknowledged batch is sent again"
            first = codec.decode_batch(seen[0].payload)
            props = dict(seen[0].user_properties)
            assert (
                props["schema"],
                props["batch_id"],
                int(props["seq_from"]),
                int(props["seq_to"]),
            ) == (codec.SCHEMA, first.batch_id, first.seq_from, first.seq_to)
            # What the payload is, for a platform that is not ours (docs/wire-format.md).
            assert (props["encoding"], props["inner-content-type"], props["zlib-dictionary"]) == (
                "zlib+dict3",
                "application/fhir+json; fhirVersion=4.0",
                "mmu-zdict-3",
            )
            assert int.from_bytes(seen[0].payload[2:6], "big") == zlib.adler32(codec.ZDICT_V3)
        assert store.stats()["readings_sent"] == 0
        assert daemon.status()["connected"] is True and daemon.status()["in_flight"] == 3
        # Central comes up: the same batches are stored once and acknowledged.
        receiver = Receiver("127.0.0.1", mosquitto.port, central, client_id="rx-1")
        rx = asyncio.create_task(receiver.run(rx_stop))
        fill(store, 50)
        await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 30, "drain")
        assert daemon.status()["last_ack_at"] is not None
        stop.set()
        rx_stop.set()
        await asyncio.gather(task, rx)
    assert assert_exactly_once(cfg.store.path, central, unit=UNIT) == 200
    assert sent_after_stored(cfg.store.path, central)
    assert receiver.counts.rejected == 0 and receiver.counts.stored == 200


async def test_in_flight_batches_are_resent_under_their_ids_after_a_restart(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = config(tmp_path, mosquitto.port, timeout=5.0)
    central = tmp_path / "central.db"
    with Store(cfg.store.path, UNIT, group_wait=0.002) as store:
        fill(store, 100)
        stop = asyncio.Event()
        async with spy(mosquitto.port, topics.READINGS.of(UNIT)) as uplink:
            task = asyncio.create_task(SyncDaemon(store, cfg).run(stop))
            first_run = {dict(e.user_properties)["batch_id"] for e in await batches_seen(uplink, 3)}
            stop.set()
            await task  # returns promptly: stop is honoured between events
        assert store.stats()["readings_sent"] == 0
        stop, rx_stop = asyncio.Event(), asyncio.Event()
        receiver = Receiver("127.0.0.1", mosquitto.port, central, client_id="rx-1")
        rx = asyncio.create_task(receiver.run(rx_stop))
        await asyncio.wait_for(receiver.connected.wait(), 10)
        # the broker restarts too (persistence on, same port) while the unit drains
        mosquitto.restart()
        task = asyncio.create_task(SyncDaemon(store, cfg).run(stop))
        await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 30, "drain")
        stop.set()
        rx_stop.set()
        await asyncio.gather(task, rx)
    with contextlib.closing(sqlite3.connect(central)) as c:
        stored_ids = {r[0] for r in c.execute("SELECT DISTINCT batch_id FROM observations")}
    assert first_run <= stored_ids  # the first run's batches, not new ids for old readings
    assert assert_exactly_once(cfg.store.path, central, unit=UNIT) == 100


async def test_a_bad_downlink_is_refused_and_sync_goes_on(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = config(tmp_path, mosquitto.port)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    bad = [
        b"",
        b"\xff\xfe",
        b"[" * 100_000,
        b'{"batch_id": 3}',
        b"{}" + b" " * 10_000,
        json.dumps({"batch_id": "x", "last_contiguous_seq": "7"}).encode(),
    ]
    with Store(cfg.store.path, UNIT, group_wait=0.002) as store:
        daemon = SyncDaemon(store, cfg)
        receiver = Receiver("127.0.0.1", mosquitto.port, central)
        tasks = [asyncio.create_task(daemon.run(stop)), asyncio.create_task(receiver.run(stop))]
        await wait_until(
            lambda: daemon.connected and receiver.connected.is_set(),
            10,
            "daemon and receiver connected",
        )
        forger = MqttLink(LinkOptions("forger", "127.0.0.1", mosquitto.port, clean_start=True))
        events = forger.start()
        async with asyncio.timeout(10):
            while (await events.get()).kind != "connected":
                pass
        for payload in bad:
            forger.publish(topics.ACK.of(UNIT), payload)
        forger.publish(topics.READINGS.of(UNIT), b"not a batch")  # the receiver refuses it
        await wait_until(
            lambda: daemon.refused_downlinks == len(bad) and receiver.counts.dead_letters == 1,
            10,
            "refusals",
        )
        forger.stop()
        fill(store, 60)
        await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 30, "drain")
        stop.set()
        await asyncio.gather(*tasks)
    assert assert_exactly_once(cfg.store.path, central, unit=UNIT) == 60
    with contextlib.closing(sqlite3.connect(central)) as c:  # parked for a human, as it came
        parked = c.execute("SELECT topic, payload, reason FROM dead_letters").fetchall()
    assert [(t, p) for t, p, _ in parked] == [(topics.READINGS.of(UNIT), b"not a batch")]
    assert parked[0][2].startswith("codec: not zlib data")


def test_the_receiver_stores_odd_but_valid_observations_without_crashing(tmp_path: Path) -> None:
    from sync.central.store import SqliteCentral

    seq = {"system": "urn:mmu:seq:u", "value": "1"}
    odd: list[dict[str, Any]] = [
        {
            "resourceType": "Observation",
            "id": "r1",
            "identifier": [seq],
            "code": "not a concept",
            "valueQuantity": [1],
            "effectiveDateTime": 5,
        },
        {
            "resourceType": "Observation",
            "id": "r2",
            "identifier": [{**seq, "value": "2"}],
            "code": {"coding": ["x", {"code": 1}]},
            "valueQuantity": {"value": 10**30, "code": None},
        },
    ]
    central = SqliteCentral(tmp_path / "central.db")
    batch = codec.Batch(
        "u", "e1", "b", 1, 2, "", [codec.Carried(str(o["id"]), i + 1, o) for i, o in enumerate(odd)]
    )
    stored = [(o.new, o.held, o.last_contiguous_seq) for o in central.store_batches([batch], "t")]
    assert stored == [(2, 2, 2)]
    again = central.store_batches([batch], "t")[0]
    assert (again.new, again.held, again.refused) == (0, 2, ())  # again: nothing new
    rows = central.query("SELECT id, code, value, effective FROM observations ORDER BY seq")
    assert rows == [("r1", None, None, None), ("r2", None, None, None)]
    central.close()


async def test_every_message_says_its_content_type(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Readings, acks, events and status all carry the MQTT 5 content type of the topic
    registry (sync/topics.py), so a platform that is not ours knows what each payload is."""
    cfg = config(tmp_path, mosquitto.port)
    central = tmp_path / "central.db"
    stop, rx_stop = asyncio.Event(), asyncio.Event()
    registry = {
        t.suffix: t.content_type
        for t in (
            topics.READINGS,
            topics.EVENTS,
            topics.STATUS,
            topics.ACK,
            topics.CONFIG,
            topics.CMD,
        )
    }
    with Store(cfg.store.path, UNIT, group_wait=0.002) as store:
        store.call(lambda db: device_facts.save(db, "ox", {"serial": "OX-1", "mdc_type": 528388}))
        fill(store, 30)
        async with spy(mosquitto.port, f"{topics.PREFIX}/{UNIT}/#") as watched:
            receiver = Receiver("127.0.0.1", mosquitto.port, central, client_id="rx-ct")
            rx = asyncio.create_task(receiver.run(rx_stop))
            task = asyncio.create_task(SyncDaemon(store, cfg).run(stop))
            await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 30, "drain")
            # The daemon recorded the facts its first batch carried; the ack says central
            # holds them (later batches carry the bare Device).
            await wait_until(
                lambda: (
                    store.read(
                        lambda db: db.execute(
                            "SELECT acked_version = updated_at FROM device_facts"
                        ).fetchone()[0]
                    )
                    == 1
                ),
                10,
                "the device facts acknowledged",
            )
            stop.set()
            rx_stop.set()
            await asyncio.gather(task, rx)
            seen: dict[str, set[str]] = {}
            while not watched.empty():
                event = watched.get_nowait()
                if event.kind == "message":
                    suffix = event.topic.split("/", 3)[3]
                    seen.setdefault(suffix, set()).add(event.content_type)
    assert {"up/readings", "down/ack", "status"} <= set(seen), seen
    for suffix, kinds in seen.items():
        assert kinds == {registry[suffix]}, (suffix, kinds)
    assert seen["up/readings"] == {codec.CONTENT_TYPE}
