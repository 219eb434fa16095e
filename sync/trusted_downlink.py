"""The I/O around :func:`sync.signing.verify`: the counters read from and written to the store
(``agent_state`` key ``downlink-trust``) before the message is applied, so a replay stays
refused across restarts. The same state holds the keys central rotated to, if it did."""

from __future__ import annotations

import functools
import time

from edge_agent.settings import Settings
from edge_agent.store.database import get_state, put_state
from edge_agent.store.writer import Store
from sync import signing

STATE_KEY = "downlink-trust"


async def saved_counters(store: Store) -> signing.Counters:
    saved = await store.read_async(lambda db: get_state(db, STATE_KEY))
    return signing.Counters.from_json(saved)


async def trust_in_effect(store: Store, settings: Settings) -> signing.Trust:
    """Central's keys as this unit checks them now: the configured ones, or the set a signed
    ``rotate-key`` installed."""
    return signing.Trust.in_effect(
        settings.trust.central_keys, settings.trust.require_signed, await saved_counters(store)
    )


async def verified(store: Store, settings: Settings, topic: str, payload: bytes) -> bytes:
    """The message to apply; raises ``DownlinkRefused`` (with the reason) or
    ``AlreadyApplied``."""
    before = await saved_counters(store)
    trust = signing.Trust.in_effect(
        settings.trust.central_keys, settings.trust.require_signed, before
    )
    message, after = signing.verify(
        trust, before, unit=settings.unit.id, topic=topic, payload=payload, now=time.time()
    )
    if after != before:
        await store.write(functools.partial(put_state, key=STATE_KEY, value=after.to_json()))
    return message
