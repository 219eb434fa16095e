"""Acks are authenticated: central signs each ``down/ack`` (Ed25519 over the ack's bytes, the
unit and the topic, in two MQTT 5 user properties). A client posing as central on the broker
(a rogue MQTT client, real Mosquitto) cannot make the unit forget readings or move its clock
trust; the genuine receiver's signed acks still mark them sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_agent.public_keys import public_key_text
from edge_agent.settings import Settings, TrustSettings
from edge_agent.store.writer import Store
from sync import topics
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.link import LinkEvent, MqttLink
from sync.refusals import DownlinkRefused
from sync.signing import Signer, Trust, verify_ack
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until, watching
from tests.sync.test_faults import UNIT, fill, settings

ACK = (
    b'{"batch_id": "b1", "epoch": "e1", "stored": 3, "refused": [], '
    b'"last_contiguous_seq": 3, "t_origin": 1.0, "t_recv": 2.0, "t_send": 2.1}'
)


def trust_of(*signers: Signer, require_signed: bool = True) -> Trust:
    return Trust.from_texts(
        [public_key_text(s.private.public_key()) for s in signers], require_signed
    )


def test_a_signed_ack_checks_and_every_forgery_is_refused_with_its_reason() -> None:
    central, attacker = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    trust = trust_of(central)
    props = central.ack_properties(UNIT, ACK)
    assert verify_ack(trust, unit=UNIT, payload=ACK, properties=props) is True
    tampered = ACK.replace(b'"stored": 3', b'"stored": 4')
    cases = {
        "unsigned ack": [],
        "unknown key": attacker.ack_properties(UNIT, ACK),
        "bad signature": [("kid", central.kid), attacker.ack_properties(UNIT, ACK)[1]],
        "bad signature ": props,  # the same signature on other bytes (tampered below)
        "not base64": [("kid", central.kid), ("sig", "%%%")],
    }
    for want, properties in cases.items():
        payload = tampered if want.endswith(" ") else ACK
        with pytest.raises(DownlinkRefused, match=want.strip()):
            verify_ack(trust, unit=UNIT, payload=payload, properties=properties)
    # Bound to the unit: another unit's genuine ack replayed to this one is refused.
    with pytest.raises(DownlinkRefused, match="bad signature"):
        verify_ack(
            trust, unit=UNIT, payload=ACK, properties=central.ack_properties("mmu-other", ACK)
        )
    # Development (no keys): unsigned acks as before; a rollout takes unsigned, checks signed.
    assert verify_ack(Trust.from_texts([]), unit=UNIT, payload=ACK, properties=[]) is False
    rollout = trust_of(central, require_signed=False)
    assert verify_ack(rollout, unit=UNIT, payload=ACK, properties=[]) is False
    with pytest.raises(DownlinkRefused, match="unknown key"):
        verify_ack(rollout, unit=UNIT, payload=ACK, properties=attacker.ack_properties(UNIT, ACK))


def wire_bytes(user_properties: list[tuple[str, str]]) -> int:
    """The bytes of a PUBLISH's properties as MQTT 5 encodes them (content type included)."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: untyped
    props.ContentType = topics.ACK.content_type
    if user_properties:
        props.UserProperty = user_properties
    return len(props.pack())  # type: ignore[no-untyped-call]


def test_bytes_the_signature_adds_per_ack() -> None:
    central = Signer(Ed25519PrivateKey.generate())
    added = wire_bytes(central.ack_properties(UNIT, ACK)) - wire_bytes([])
    print(
        f"\nack signature: +{added} bytes per ack (one ack per batch), on an ack of "
        f"{len(ACK)} bytes of payload"
    )
    assert added == 121  # kid (16 hex) and sig (88 base64): 2 user properties, 120 + 1


def pending(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as c:
        return int(c.execute("SELECT count(*) FROM readings WHERE sent_at IS NULL").fetchone()[0])


async def forge_acks(
    rogue: MqttLink,
    queue: asyncio.Queue[LinkEvent],
    attacker: Signer,
    central: Signer,
    n: int,
    reports: list[dict[str, Any]],
) -> None:
    """Answer the unit's next ``n`` batches as a rogue central would: acks with times an hour
    ahead, unsigned, signed with another key, or with central's key id and a bad signature.
    The unit's reports on up/events go to ``reports``."""
    forged = 0
    async with asyncio.timeout(30):
        while forged < n:
            event = await queue.get()
            if event.kind == "message" and event.topic == topics.EVENTS.of(UNIT):
                reports.append(json.loads(event.payload))
            if event.kind != "message" or event.topic != topics.READINGS.of(UNIT):
                continue
            props = dict(event.user_properties)
            now = time.time()
            body = json.dumps(
                {
                    "batch_id": props["batch_id"],
                    "epoch": props["epoch"],
                    "stored": 1,
                    "refused": [],
                    "t_origin": float(props["sent_at"]),
                    "t_recv": now + 3600,
                    "t_send": now + 3600,
                }
            ).encode()
            signature = [
                [],
                attacker.ack_properties(UNIT, body),
                [("kid", central.kid), attacker.ack_properties(UNIT, body)[1]],
            ][forged % 3]
            rogue.publish(topics.ACK.of(UNIT), body, user_properties=signature)
            forged += 1


async def test_a_rogue_client_on_the_broker_cannot_mark_readings_sent(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    central, attacker = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    cfg: Settings = settings(tmp_path, mosquitto.port, batch=10, timeout=30).model_copy(
        update={
            "trust": TrustSettings(central_keys=[public_key_text(central.private.public_key())])
        }
    )
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        fill(store, 40)
        source = store.clock_source
        daemon = SyncDaemon(store, cfg)
        async with watching(
            mosquitto.port, topics.READINGS.of(UNIT), topics.EVENTS.of(UNIT), name="rogue"
        ) as (rogue, queue):
            task = asyncio.create_task(daemon.run(stop))
            try:
                reports: list[dict[str, Any]] = []
                await forge_acks(rogue, queue, attacker, central, 4, reports)
                await wait_until(
                    lambda: daemon.refused_acks >= 4 or pending(cfg.store.path) < 40,
                    10,
                    "4 acks refused (or believed)",
                )
                assert pending(cfg.store.path) == 40  # nothing forgotten
                async with asyncio.timeout(10):
                    while not reports:
                        event = await queue.get()
                        if event.kind == "message" and event.topic == topics.EVENTS.of(UNIT):
                            reports.append(json.loads(event.payload))
                assert daemon.acked_readings == 0
                assert daemon.clock_offset_s is None and store.clock_source is source
                assert reports[0]["type"] == "downlink-refused" and reports[0]["topic"] == "ack"
                assert "ack" in reports[0]["reason"] and "batch" not in json.dumps(reports[0])
                assert daemon.status()["refused_acks"] == daemon.refused_acks
                # The genuine receiver's signed acks mark them (re-sent after the timeout or
                # the reconnect sync-now forces).
                receiver = Receiver(
                    "127.0.0.1",
                    mosquitto.port,
                    tmp_path / "central.db",
                    client_id="rx",
                    sign_ack=central.ack_properties,
                )
                rx_stop = asyncio.Event()
                rx = asyncio.create_task(receiver.run(rx_stop))
                try:
                    await asyncio.wait_for(receiver.connected.wait(), 10)
                    daemon.request_sync_now()
                    await wait_until(
                        lambda: pending(cfg.store.path) == 0,
                        60,
                        "every reading marked sent by central's signed acks",
                    )
                finally:
                    rx_stop.set()
                    await rx
                assert daemon.clock_offset_s is not None and abs(daemon.clock_offset_s) < 5
            finally:
                stop.set()
                await task
