"""The glue every transport shares: events -> store -> acknowledgement.

Measurements are committed before anything acknowledges them. Stream protocols without
messages (Nonin, NMEA) are committed per chunk read; message protocols (HL7/MLLP, ASTM, BLE
RACP) are committed at :class:`MessageComplete`, then ``acknowledge(stored=True)`` queues the
positive reply. A failed commit answers ``stored=False`` (the device will resend). A message's
download cursor (``MessageComplete.cursor``) is committed with its readings, in one transaction.
What is not part of a message (stream readings) may be held in memory by the sink on a full
disk.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from drivers.base import (
    DeviceFacts,
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
    identifying = bool(getattr(decoder, "carries_identity", False))
    pending: list[Measurement] = []
    rejects: list[Rejected] = []
    infos: list[DeviceInfo] = []
    for event in events:
        if isinstance(event, Measurement):
            pending.append(event)
        elif isinstance(event, Rejected):
            _log_reject(device_id, event, identifying)
            rejects.append(event)
        elif isinstance(event, DeviceInfo):
            infos.append(event)
        elif isinstance(event, DeviceFacts):
            if event.any():
                sink.device_facts(device_id, event)
        elif isinstance(event, MessageComplete):
            stored = True
            try:
                await sink.store(device_id, pending, rejects, cursor=event.cursor)
            except Exception:
                log.exception("device %s: commit of message %s failed", device_id, event.message_id)
                stored = False
            pending, rejects = [], []
            decoder.acknowledge(event.message_id, stored=stored)
    if pending or rejects:
        # Not part of an acknowledged message: on a full disk the sink may hold it in memory.
        await sink.store(device_id, pending, rejects, may_buffer=True)
    return infos


def _log_reject(device_id: str, event: Rejected, identifying: bool) -> None:
    """Rejects are stored whole (0600 store); the log gets what an operator needs. Text
    protocols that carry patient identity (HL7 PID, ASTM P records) log a digest, not bytes."""
    if identifying:
        shown = "sha256:" + hashlib.sha256(event.raw).hexdigest()[:16]
    else:
        shown = event.raw[:64].hex(" ") + (" ..." if len(event.raw) > 64 else "")
    log.warning(
        "device %s: rejected %d bytes (%s), kept in the store: %s",
        device_id,
        len(event.raw),
        event.reason,
        shown,
    )
