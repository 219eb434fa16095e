"""Cumulative acks: central acknowledges several batches of one unit's store in one signed
message (``{"acks": [...], "epoch", "last_contiguous_seq", "t_send"}``, sync/acks.py). The unit
takes it and the old single-batch form alike; a forged one is refused whole; the real receiver
sends one for the batches it commits together, and every reading still arrives exactly once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.public_keys import public_key_text
from edge_agent.settings import Settings, TrustSettings
from edge_agent.store.writer import Store
from sync import codec, topics
from sync.acks import parse_ack, parse_acks
from sync.central.receiver import Message, Receiver, cumulative_ack_body
from sync.central.store import Outcome, Refusal
from sync.daemon import SyncDaemon
from sync.link import LinkEvent
from sync.signing import Signer
from tests.broker import MosquittoBroker
from tests.sync.checker import assert_exactly_once, wait_until, watching
from tests.sync.test_ack_trust import pending
from tests.sync.test_faults import UNIT, fill, settings


def _outcome(batch_id: str, seq_to: int, refused: tuple[Refusal, ...] = ()) -> Outcome:
    batch = codec.Batch(UNIT, "e1", batch_id, seq_to - 9, seq_to, "2026-01-01T00:00:00Z", [])
    return Outcome(batch, 10 - len(refused), 10, refused, seq_to)


def test_both_forms_parse_and_the_receivers_cumulative_body_reads_back() -> None:
    single = (
        b'{"batch_id": "b1", "epoch": "e1", "stored": 3, "refused": [], '
        b'"last_contiguous_seq": 3, "t_origin": 1.0, "t_recv": 2.0, "t_send": 2.1}'
    )
    assert parse_acks(single) == [parse_ack(single)]
    message = Message("t", b"", 1, 1, t_recv=5.0, t_origin=4.0)
    done = [
        (message, _outcome("b1", 10)),
        (message, _outcome("b2", 20, (Refusal("r-15", 15, "conflict"),))),
        (message, _outcome("b3", 30)),
    ]
    acks = parse_acks(json.dumps(cumulative_ack_body(done, 6.0)).encode())
    assert [a.batch_id for a in acks] == ["b1", "b2", "b3"]
    assert {a.last_contiguous_seq for a in acks} == {30}  # after all of them
    assert {a.epoch for a in acks} == {"e1"} and acks[1].refused == {"r-15": "conflict"}
    assert (acks[2].t_origin, acks[2].t_recv, acks[2].t_send) == (4.0, 5.0, 6.0)
    for bad in (
        b'{"acks": []}',
        b'{"acks": {}}',
        b'{"acks": [1]}',
        b'{"acks": [{"batch_id": "b1"}, {"refused": []}]}',
        b'{"acks": [{"batch_id": "b1"}], "last_contiguous_seq": "3"}',
        json.dumps({"acks": [{"batch_id": str(i)} for i in range(257)]}).encode(),
    ):
        with pytest.raises(ValueError):
            parse_acks(bad)


async def _batches(queue: asyncio.Queue[LinkEvent], n: int) -> list[dict[str, str]]:
    """The user properties of the unit's next ``n`` batch messages."""
    seen: list[dict[str, str]] = []
    async with asyncio.timeout(30):
        while len(seen) < n:
            event = await queue.get()
            if event.kind == "message" and event.topic == topics.READINGS.of(UNIT):
                props = dict(event.user_properties)
                if props["batch_id"] not in {p["batch_id"] for p in seen}:
                    seen.append(props)
    return seen


def _cumulative(batches: list[dict[str, str]]) -> bytes:
    now = time.time()
    return json.dumps(
        {
            "acks": [
                {
                    "batch_id": p["batch_id"],
                    "stored": 10,
                    "refused": [],
                    "t_origin": float(p["sent_at"]),
                    "t_recv": now,
                }
                for p in batches
            ],
            "epoch": batches[0]["epoch"],
            "last_contiguous_seq": int(batches[-1]["seq_to"]),
            "t_send": now,
        },
        separators=(",", ":"),
    ).encode()


async def test_the_unit_takes_a_signed_multi_batch_ack_and_refuses_a_forged_one(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The central here is a test client that signs with central's key (it stores nothing):
    the cumulative form must be reached on purpose, whatever the receiver happens to group."""
    central, attacker = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    cfg: Settings = settings(tmp_path, mosquitto.port, batch=10, timeout=60).model_copy(
        update={
            "trust": TrustSettings(central_keys=[public_key_text(central.private.public_key())])
        }
    )
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        fill(store, 40)
        daemon = SyncDaemon(store, cfg)
        async with watching(mosquitto.port, topics.READINGS.of(UNIT), name="central") as (
            link,
            queue,
        ):
            task = asyncio.create_task(daemon.run(stop))
            try:
                batches = await _batches(queue, 4)  # the window: 4 batches of 10 in flight
                body = _cumulative(batches)
                # Forged: another key, and central's key id over other bytes (a batch added).
                link.publish(
                    topics.ACK.of(UNIT), body, user_properties=attacker.ack_properties(UNIT, body)
                )
                tampered = body.replace(b'"stored":10', b'"stored":11', 1)
                link.publish(
                    topics.ACK.of(UNIT),
                    tampered,
                    user_properties=central.ack_properties(UNIT, body),
                )
                await wait_until(lambda: daemon.refused_acks >= 2, 10, "2 forged acks refused")
                assert pending(cfg.store.path) == 40 and daemon.acked_readings == 0
                # Genuine: one message marks the four batches sent.
                link.publish(
                    topics.ACK.of(UNIT), body, user_properties=central.ack_properties(UNIT, body)
                )
                await wait_until(
                    lambda: pending(cfg.store.path) == 0,
                    10,
                    "40 readings marked sent by one cumulative ack",
                )
                assert daemon.acked_readings == 40 and daemon.refused_acks == 2
            finally:
                stop.set()
                await task


async def test_the_receiver_acks_batches_committed_together_in_one_message_exactly_once(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The real receiver and unit, signed acks. The unit's batches queue at the broker for the
    receiver's persistent session while it is away; back, it commits them together and
    answers with cumulative acks. Every reading arrives once and is marked sent."""
    central = Signer(Ed25519PrivateKey.generate())
    cfg: Settings = settings(tmp_path, mosquitto.port, batch=10, timeout=60).model_copy(
        update={
            "trust": TrustSettings(central_keys=[public_key_text(central.private.public_key())])
        }
    )
    central_db = tmp_path / "central.db"

    def receiver() -> Receiver:
        return Receiver(
            "127.0.0.1", mosquitto.port, central_db, client_id="rx", sign_ack=central.ack_properties
        )

    first, rx_stop = receiver(), asyncio.Event()
    rx = asyncio.create_task(first.run(rx_stop))
    await asyncio.wait_for(first.connected.wait(), 10)
    rx_stop.set()
    await rx  # away: its session keeps the subscription, the broker queues for it
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        fill(store, 200)
        daemon = SyncDaemon(store, cfg)
        async with watching(mosquitto.port, topics.READINGS.of(UNIT), name="watch") as (_, q):
            task = asyncio.create_task(daemon.run(stop))
            try:
                await _batches(q, 4)  # the window is full, queued for the receiver
                back, rx_stop = receiver(), asyncio.Event()
                rx = asyncio.create_task(back.run(rx_stop))
                try:
                    await wait_until(
                        lambda: pending(cfg.store.path) == 0, 60, "200 readings marked sent"
                    )
                finally:
                    rx_stop.set()
                    await rx
            finally:
                stop.set()
                await task
        assert daemon.refused_acks == 0
    assert back.counts.acks < back.counts.batches, "no batches were acknowledged together"
    assert assert_exactly_once(cfg.store.path, central_db) == 200
