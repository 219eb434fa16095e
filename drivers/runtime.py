"""The glue every transport shares: events -> store -> acknowledgement.

Measurements are committed before anything acknowledges them. Stream protocols without
messages (Nonin, NMEA) are committed per chunk read; message protocols (HL7/MLLP, ASTM, BLE
RACP) are committed at :class:`MessageComplete`, then ``acknowledge(stored=True)`` queues the
positive reply. A failed commit answers ``stored=False`` (the device will resend).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from drivers.base import (
    DeviceInfo,
    Event,
    GattDecoder,
    MessageComplete,
    Rejected,
    Sink,
    StreamDecoder,
)
from edge_agent.models import Measurement

log = logging.getLogger(__name__)


async def dispatch(
    device_id: str,
    events: Sequence[Event],
    sink: Sink,
    decoder: StreamDecoder | GattDecoder,
) -> list[DeviceInfo]:
    """Commit the events' measurements and rejects; acknowledge completed messages after
    their commit. Returns the device facts for the caller's status."""
    pending: list[Measurement] = []
    rejects: list[Rejected] = []
    infos: list[DeviceInfo] = []
    for event in events:
        if isinstance(event, Measurement):
            pending.append(event)
        elif isinstance(event, Rejected):
            log.warning(
                "device %s: rejected %d bytes (%s): %s",
                device_id, len(event.raw), event.reason, event.raw[:64].hex(" "),
            )
            rejects.append(event)
        elif isinstance(event, DeviceInfo):
            infos.append(event)
        elif isinstance(event, MessageComplete):
            stored = True
            try:
                await sink.store(device_id, pending, rejects)
            except Exception:
                log.exception("device %s: commit of message %s failed", device_id, event.message_id)
                stored = False
            pending, rejects = [], []
            decoder.acknowledge(event.message_id, stored=stored)
    if pending or rejects:
        await sink.store(device_id, pending, rejects)
    return infos
