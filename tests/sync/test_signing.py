"""Downlink trust: a generated set of replayed, forged, expired, re-ordered, unsigned and
misdirected messages, every one refused with its reason (pure), then the same kinds through a
real broker to a real daemon, refused on up/events, the counter kept across a restart; the
receiver signs the resend-from commands it sends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from edge_agent.models import measurement
from edge_agent.public_keys import public_key_text
from edge_agent.settings import Settings, TrustSettings
from edge_agent.store.writer import Store
from sync import topics
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from sync.link import LinkEvent
from sync.refusals import AlreadyApplied, DownlinkRefused
from sync.signing import (
    MAX_COUNTER_AHEAD_US,
    MAX_LIFETIME_S,
    Counters,
    Signer,
    Trust,
    verify,
)
from tests.broker import MosquittoBroker
from tests.central.central_kit import rows, stub_unit
from tests.sync.checker import watching
from tests.sync.test_faults import settings

UNIT = "mmu-t"
N = 100  # messages of each kind
NOW = 1_900_000_000.0


def flip(envelope: bytes, field: str, rng: random.Random) -> bytes:
    """The envelope with one bit of ``field`` (decoded) flipped: a forgery."""
    outer = json.loads(envelope)
    raw = bytearray(base64.b64decode(outer[field]))
    raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    outer[field] = base64.b64encode(bytes(raw)).decode()
    return json.dumps(outer).encode()


class Kit:
    def __init__(self) -> None:
        self.central = Signer(Ed25519PrivateKey.generate())
        self.rotated = Signer(Ed25519PrivateKey.generate())  # central's next key
        self.attacker = Signer(Ed25519PrivateKey.generate())
        self.trust = Trust.from_texts(
            [public_key_text(s.private.public_key()) for s in (self.central, self.rotated)]
        )

    def cmd(self, signer: Signer, ctr: int, **kw: Any) -> bytes:
        body = {"id": uuid.uuid4().hex[:8], "cmd": "sync-now"}
        return signer.sign(
            kw.pop("unit", UNIT),
            kw.pop("topic", "cmd"),
            body,
            ctr=ctr,
            exp=kw.pop("exp", NOW + 600),
        )


def refused(kit: Kit, counters: Counters, payload: bytes, topic: str = "cmd") -> str:
    with pytest.raises(DownlinkRefused) as info:
        verify(kit.trust, counters, unit=UNIT, topic=topic, payload=payload, now=NOW)
    return str(info.value)


def accept(
    kit: Kit, counters: Counters, payload: bytes, topic: str = "cmd"
) -> tuple[dict[str, Any], Counters]:
    message, after = verify(kit.trust, counters, unit=UNIT, topic=topic, payload=payload, now=NOW)
    body: dict[str, Any] = json.loads(message)
    return body, after


def test_every_message_of_each_bad_kind_is_refused_with_its_reason() -> None:
    rng = random.Random(10)
    kit = Kit()
    counters = Counters({})
    ctr = 1_000
    reasons: dict[str, list[str]] = {}
    for i in range(N):
        ctr += rng.randint(1, 1000)
        signer = kit.central if i % 2 else kit.rotated  # either key (rotation)
        good = kit.cmd(signer, ctr)
        older = kit.cmd(signer, ctr - rng.randint(1, 500))  # sent before, arriving after
        body, counters = accept(kit, counters, good)
        assert body["cmd"] == "sync-now" and set(body) == {"id", "cmd"}
        plain = json.dumps(body).encode()
        kinds = {
            "replayed": good,
            "re-ordered": older,
            "forged message": flip(good, "msg", rng),
            "forged signature": flip(good, "sig", rng),
            "forged key": Signer(kit.attacker.private).sign(UNIT, "cmd", body, ctr=ctr + 1),
            "expired": kit.cmd(signer, ctr + 1, exp=NOW - 301 - rng.randint(0, 10**6)),
            "unsigned": plain,
            "other unit": kit.cmd(signer, ctr + 1, unit="mmu-other"),
            "other topic": kit.cmd(signer, ctr + 1, topic="config"),
        }
        # An attacker's key presented under central's key id:
        impostor = json.loads(kinds["forged key"])
        impostor["kid"] = kit.central.kid
        kinds["impostor"] = json.dumps(impostor).encode()
        for kind, payload in kinds.items():
            reasons.setdefault(kind, []).append(refused(kit, counters, payload))
    expected = {
        "replayed": "replayed or re-ordered",
        "re-ordered": "replayed or re-ordered",
        "forged message": "bad signature",
        "forged signature": "bad signature",
        "forged key": "unknown key",
        "impostor": "bad signature",
        "expired": "expired",
        "unsigned": "unsigned",
        "other unit": "for unit 'mmu-other'",
        "other topic": "signed for down/config",
    }
    for kind, got in reasons.items():
        assert len(got) == N
        assert all(expected[kind] in r for r in got), (kind, got[:3])


def test_the_retained_config_seen_again_is_recognised_and_its_counter_kept() -> None:
    kit = Kit()
    config = kit.central.sign(
        UNIT, "config", {"version": 2, "sync": {"batch_size": 20}}, ctr=50, exp=NOW + 60
    )
    body, counters = accept(kit, Counters({}), config, "config")
    assert body == {"version": 2, "sync": {"batch_size": 20}}
    assert Counters.from_json(json.loads(json.dumps(counters.to_json()))) == counters
    with pytest.raises(AlreadyApplied):  # even once expired: it was applied already
        verify(kit.trust, counters, unit=UNIT, topic="config", payload=config, now=NOW + 10**6)
    other = kit.central.sign(UNIT, "config", {"version": 3}, ctr=50, exp=NOW + 60)
    assert "replayed" in refused(kit, counters, other, "config")
    # Topics count apart: a command with a lower counter than the config is still new.
    accept(kit, counters, kit.cmd(kit.central, 10))


def test_without_keys_unsigned_passes_and_signed_cannot_be_checked() -> None:
    open_trust = Trust.from_texts([])
    assert not open_trust.require_signed
    plain = b'{"id": "1", "cmd": "sync-now"}'
    assert (
        verify(open_trust, Counters({}), unit=UNIT, topic="cmd", payload=plain, now=NOW)[0] == plain
    )
    signed = Signer(Ed25519PrivateKey.generate()).sign(UNIT, "cmd", {"id": "1", "cmd": "x"})
    with pytest.raises(DownlinkRefused, match="no central key"):
        verify(open_trust, Counters({}), unit=UNIT, topic="cmd", payload=signed, now=NOW)
    rollout = Trust.from_texts(
        [public_key_text(Ed25519PrivateKey.generate().public_key())], require_signed=False
    )
    assert verify(rollout, Counters({}), unit=UNIT, topic="cmd", payload=plain, now=NOW)[0]


async def events(queue: asyncio.Queue[LinkEvent], n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while len(got) < n:
            event = await queue.get()
            if event.kind == "message" and event.topic == topics.EVENTS.of(UNIT):
                body = json.loads(event.payload)
                if body["type"] in ("downlink-refused", "cmd-done", "config-applied"):
                    got.append(body)
    return got


def signed_settings(tmp_path: Path, port: int, kit: Kit) -> Settings:
    cfg = settings(tmp_path, port)
    keys = [public_key_text(s.private.public_key()) for s in (kit.central, kit.rotated)]
    return cfg.model_copy(update={"trust": TrustSettings(central_keys=keys)})


async def test_through_the_broker_bad_downlinks_are_refused_on_up_events_across_restarts(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    kit = Kit()
    cfg = signed_settings(tmp_path, mosquitto.port, kit)
    rng = random.Random(4)
    now = time.time()
    first = kit.central.sign(UNIT, "cmd", {"id": "first", "cmd": "diagnostics"})
    async with watching(mosquitto.port, topics.EVENTS.of(UNIT), name="central") as (central, queue):
        for run in range(2):  # the second run: a restarted agent, same store
            stop = asyncio.Event()
            with Store(cfg.store.path, UNIT) as store:
                store.append("ox", [measurement("spo2", 97.0)]).result()
                daemon = SyncDaemon(store, cfg)
                task = asyncio.create_task(daemon.run(stop))
                try:
                    async with asyncio.timeout(10):
                        while not daemon.connected:
                            await asyncio.sleep(0.02)
                    sent: list[tuple[str, bytes]] = []
                    if run == 0:
                        sent.append(("cmd-done", first))
                    else:
                        sent.append(("replayed", first))  # the counter outlived the restart
                    for i in range(10):
                        # diagnostics: sync-now reconnects, which may re-order the events
                        good = kit.central.sign(
                            UNIT, "cmd", {"id": f"g{run}{i}", "cmd": "diagnostics"}
                        )
                        stale = kit.central.sign(
                            UNIT, "cmd", {"id": "s", "cmd": "sync-now"}, ctr=1 + i
                        )
                        sent += [
                            ("cmd-done", good),
                            ("replayed", good),
                            ("re-ordered", stale),
                            ("bad signature", flip(good, rng.choice(["msg", "sig"]), rng)),
                            (
                                "unknown key",
                                kit.attacker.sign(UNIT, "cmd", {"id": "a", "cmd": "sync-now"}),
                            ),
                            (
                                "expired",
                                kit.central.sign(
                                    UNIT, "cmd", {"id": "e", "cmd": "sync-now"}, exp=now - 3600
                                ),
                            ),
                            ("unsigned", b'{"id": "u", "cmd": "sync-now"}'),
                        ]
                    for _, payload in sent:
                        central.publish(topics.CMD.of(UNIT), payload)
                    got = await events(queue, len(sent))
                    for (want, _), event in zip(sent, got, strict=True):
                        if want == "cmd-done":
                            assert event["type"] == "cmd-done", event
                        else:
                            assert event["type"] == "downlink-refused", (want, event)
                            word = "replayed or re-ordered" if want == "re-ordered" else want
                            assert word in event["reason"], (want, event)
                    assert daemon.refused_downlinks == len(sent) - (11 if run == 0 else 10)
                finally:
                    stop.set()
                    await task


async def test_the_receiver_signs_the_resend_commands_it_sends(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    kit = Kit()
    stop = asyncio.Event()
    receiver = Receiver(
        "127.0.0.1",
        mosquitto.port,
        tmp_path / "central.db",
        client_id="rx",
        gap_timeout=0.3,
        sign=kit.central.sign,
    )
    task = asyncio.create_task(receiver.run(stop))
    epoch = str(uuid.uuid4())
    try:
        await asyncio.wait_for(receiver.connected.wait(), 10)
        async with stub_unit(mosquitto.port, UNIT) as unit:
            unit.send(epoch, rows(range(1, 3)))
            unit.send(epoch, rows(range(5, 6)))
            envelope = await unit.next(topics.CMD.of(UNIT))
    finally:
        stop.set()
        await task
    message, _ = verify(
        kit.trust,
        Counters({}),
        unit=UNIT,
        topic="cmd",
        payload=json.dumps(envelope).encode(),
        now=time.time(),
    )
    command = json.loads(message)
    assert command == {**command, "cmd": "resend-from", "seq": 3, "epoch": epoch}


# --- bounds: no signed message locks a topic; central's signed reset and rotation ------------
NOW_US = int(NOW * 1_000_000)


def test_a_signed_counter_jump_and_a_ten_year_expiry_are_refused() -> None:
    kit = Kit()
    assert "days ahead of this unit's clock" in refused(
        kit, Counters({}), kit.cmd(kit.central, 2**62)
    )
    assert "days ahead, more than the 8" in refused(
        kit, Counters({}), kit.cmd(kit.central, NOW_US, exp=NOW + 10 * 365 * 86400)
    )
    # Within the bounds: accepted.
    accept(
        kit,
        Counters({}),
        kit.cmd(kit.central, NOW_US + MAX_COUNTER_AHEAD_US, exp=NOW + MAX_LIFETIME_S),
    )


@settings_(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 2**63),
            st.integers(-(10**10), 10**10),
            st.sampled_from(["cmd", "config", "trust"]),
        ),
        max_size=12,
    )
)
def test_whatever_central_signed_its_messages_of_30_days_later_pass(
    sent: list[tuple[int, int, str]],
) -> None:
    kit = KIT
    counters = Counters({})
    for ctr, ttl, track in sent:
        topic = "config" if track == "config" else "cmd"
        body = (
            {"id": "r", "cmd": "trust-reset"}
            if track == "trust"
            else {"version": 1}
            if topic == "config"
            else {"id": "c", "cmd": "sync-now"}
        )
        payload = kit.central.sign(UNIT, topic, body, ctr=ctr, exp=NOW + ttl)
        with contextlib.suppress(DownlinkRefused, AlreadyApplied):
            counters = verify(
                kit.trust, counters, unit=UNIT, topic=topic, payload=payload, now=NOW
            )[1]
    assert all(v <= NOW_US + MAX_COUNTER_AHEAD_US for v in counters.last.values())
    later = NOW + MAX_COUNTER_AHEAD_US / 1e6 + 1
    for topic, body in (("cmd", {"id": "n", "cmd": "sync-now"}), ("config", {"version": 9})):
        verify(
            kit.trust,
            counters,
            unit=UNIT,
            topic=topic,
            now=later,
            payload=kit.central.sign(UNIT, topic, body, ctr=int(later * 1e6), exp=later + 3600),
        )


KIT = Kit()


def reset(kit: Kit, ctr: int, signer: Signer | None = None, **body: Any) -> bytes:
    return (signer or kit.central).sign(
        UNIT, "cmd", {"id": "r1", "cmd": "trust-reset", **body}, ctr=ctr, exp=NOW + 600
    )


def test_a_signed_trust_reset_unlocks_a_stuck_unit_and_cannot_be_replayed() -> None:
    kit = Kit()
    stuck = Counters({"cmd": 2**62, "config": 2**62})  # what the old code accepted and kept
    assert "replayed" in refused(kit, stuck, kit.cmd(kit.central, NOW_US))
    body, after = accept(kit, stuck, reset(kit, NOW_US))
    assert body["cmd"] == "trust-reset"
    assert after.last == {"cmd": NOW_US, "config": NOW_US, "trust": NOW_US}
    assert "replayed" in refused(kit, after, reset(kit, NOW_US))  # a reset replayed
    assert "replayed" in refused(kit, after, kit.cmd(kit.central, NOW_US - 1))  # signed before
    accept(kit, after, kit.cmd(kit.central, NOW_US + 1))  # central's next message passes
    # A reset does not raise a counter that is below it.
    _, low = accept(kit, Counters({"cmd": 5}), reset(kit, NOW_US))
    assert low.last["cmd"] == 5
    # Unsigned, or signed by another key: refused, even by a unit without keys.
    plain = json.dumps({"id": "r", "cmd": "trust-reset"}).encode()
    with pytest.raises(DownlinkRefused, match="must be signed"):
        verify(Trust.from_texts([]), stuck, unit=UNIT, topic="cmd", payload=plain, now=NOW)
    assert "unknown key" in refused(kit, stuck, reset(kit, NOW_US, kit.attacker))
    assert "takes only" in refused(kit, stuck, reset(kit, NOW_US, extra=1))


def test_a_signed_rotate_key_replaces_the_keys_until_a_reset_to_config() -> None:
    kit = Kit()
    new = Signer(Ed25519PrivateKey.generate())
    rotate = kit.central.sign(
        UNIT,
        "cmd",
        {"id": "k", "cmd": "rotate-key", "keys": [public_key_text(new.private.public_key())]},
        ctr=NOW_US,
        exp=NOW + 600,
    )
    _, after = accept(kit, Counters({}), rotate)
    assert Counters.from_json(json.loads(json.dumps(after.to_json()))) == after
    configured = [public_key_text(s.private.public_key()) for s in (kit.central, kit.rotated)]
    trust = Trust.in_effect(configured, True, after)
    assert set(trust.keys) == {new.kid}
    cmd = kit.cmd(kit.central, NOW_US + 1)
    with pytest.raises(DownlinkRefused, match="unknown key"):  # the old key no longer counts
        verify(trust, after, unit=UNIT, topic="cmd", payload=cmd, now=NOW)
    verify(trust, after, unit=UNIT, topic="cmd", payload=kit.cmd(new, NOW_US + 1), now=NOW)
    _, back = verify(
        trust,
        after,
        unit=UNIT,
        topic="cmd",
        now=NOW,
        payload=reset(kit, NOW_US + 2, new, keys="config"),
    )
    assert set(Trust.in_effect(configured, True, back).keys) == {kit.central.kid, kit.rotated.kid}
    for keys, why in (([], "non-empty"), (["ed25519:AAAA"], "32 bytes"), ("x", "non-empty")):
        bad = kit.central.sign(
            UNIT, "cmd", {"id": "k", "cmd": "rotate-key", "keys": keys}, ctr=NOW_US, exp=NOW + 600
        )
        assert why in refused(kit, Counters({}), bad)


async def test_through_the_broker_a_signed_counter_jump_cannot_lock_the_commands(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """A validly signed command with a counter of 2^62 (and one expiring in ten years) sent to a
    running agent over the real broker: refused and reported, and central's next ordinary
    command still runs (on the old code the jump was accepted and every later command refused,
    also after a restart)."""
    kit = Kit()
    cfg = signed_settings(tmp_path, mosquitto.port, kit)
    async with watching(mosquitto.port, topics.EVENTS.of(UNIT), name="central") as (central, queue):
        stop = asyncio.Event()
        with Store(cfg.store.path, UNIT) as store:
            daemon = SyncDaemon(store, cfg)
            task = asyncio.create_task(daemon.run(stop))
            try:
                async with asyncio.timeout(10):
                    while not daemon.connected:
                        await asyncio.sleep(0.02)
                jump = kit.central.sign(
                    UNIT, "cmd", {"id": "jump", "cmd": "diagnostics"}, ctr=2**62
                )
                forever = kit.central.sign(
                    UNIT,
                    "cmd",
                    {"id": "far", "cmd": "diagnostics"},
                    exp=time.time() + 10 * 365 * 86400,
                )
                after = kit.central.sign(UNIT, "cmd", {"id": "after", "cmd": "diagnostics"})
                for payload in (jump, forever, after):
                    central.publish(topics.CMD.of(UNIT), payload)
                got = await events(queue, 3)
                assert [e["type"] for e in got] == [
                    "downlink-refused",
                    "downlink-refused",
                    "cmd-done",
                ], got
                assert "ahead of this unit's clock" in got[0]["reason"]
                assert got[2]["id"] == "after"
            finally:
                stop.set()
                await task
