"""The I/O around :func:`sync.signing.verify`: the counters read from and written to the store
(``agent_state`` key ``downlink-trust``) before the message is applied, so a replay stays
refused across restarts."""

from __future__ import annotations

import functools
import time

from edge_agent.settings import Settings
from edge_agent.store.database import get_state, put_state
from edge_agent.store.writer import Store
from sync import signing

STATE_KEY = "downlink-trust"


async def verified(store: Store, settings: Settings, topic: str, payload: bytes) -> bytes:
    """The message to apply; raises ``DownlinkRefused`` (with the reason) or
    ``AlreadyApplied``."""
    trust = signing.Trust.from_texts(settings.trust.central_keys,
                                     settings.trust.require_signed)
    saved = await store.read_async(lambda db: get_state(db, STATE_KEY))
    before = signing.Counters.from_json(saved)
    message, after = signing.verify(trust, before, unit=settings.unit.id, topic=topic,
                                    payload=payload, now=time.time())
    if after != before:
        await store.write(functools.partial(put_state, key=STATE_KEY, value=after.to_json()))
    return message
