"""The MQTT adapter checks every publish: a refusal from paho is an error, never a silent
drop (paho issue #377: past its queue limit paho returns rc=15 and keeps nothing)."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.errors import LinkError
from sync.link import LinkOptions, MqttLink


async def test_a_publish_paho_refuses_raises_instead_of_vanishing() -> None:
    link = MqttLink(LinkOptions("t-refuse", "127.0.0.1", 1))
    link.start()  # nothing listens on port 1: offline, paho refuses (MQTT_ERR_NO_CONN)
    try:
        with pytest.raises(LinkError, match="publish refused: The client is not currently"):
            link.publish("mmu/v1/t/up/readings", b"one", qos=1)
    finally:
        await asyncio.to_thread(link.stop)
