"""A streaming device that stops sending: plugged, its port open, and silent.

Such a device is still ``connected`` for its transport, so the screens used to show it green.
The rule (pure: times are given): a device whose driver declares an ``expected_interval``
(``drivers/registry.py``: the streaming oximeters, the GPS) and that is ``connected`` is
*silent* once neither a reading nor the connection itself is newer than
``SILENT_AFTER_INTERVALS`` of those intervals; it is silent since the later of the two.
Episodic devices (no interval: cuffs, scales, analysers) are never silent: they are quiet
between patients.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from edge_agent.clock import parse_time

SILENT_AFTER_INTERVALS: Final = 5


def silent_since(
    expected_interval: float | None,
    state: str,
    connected_since: str | None,
    last_reading_at: str | None,
    now: datetime,
    intervals: int = SILENT_AFTER_INTERVALS,
) -> str | None:
    """When the device fell silent (its last reading, or its connection if no reading came
    since), as given; None while it sends, or when silence says nothing for it."""
    if expected_interval is None or state != "connected":
        return None
    stamps = [
        (w, s)
        for s in (connected_since, last_reading_at)
        if s is not None and (w := parse_time(s)) is not None
    ]
    if not stamps:
        return None
    latest, stamp = max(stamps)
    if now - latest <= timedelta(seconds=expected_interval * intervals):
        return None
    return stamp
