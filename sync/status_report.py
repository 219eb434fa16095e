"""The unit's retained status and the snapshot ``sync status`` reads: what to say, and when.

Pure: the daemon asks :meth:`StatusThrottle.due` whether a changed status may go out now (an
online/offline change always may; anything else at most every ``interval_s``), and builds the
payload with :func:`status_payload`. Nothing here touches the link or the store. The status
carries counts and device states only: never patient data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge_agent import __version__


def status_payload(
    state: str, unit: str, epoch: str, backlog: int | None, devices: Any, at: str
) -> bytes:
    return json.dumps(
        {
            "state": state,
            "unit": unit,
            "epoch": epoch,
            "version": __version__,
            "backlog": backlog,
            "devices": devices,
            "at": at,
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class StatusThrottle:
    interval_s: float = 10.0
    _sent: Any = None  # the content last sent (without its time stamp)
    _sent_at: float | None = None

    def due(self, now: float, *, urgent: bool = False) -> float | None:
        """None when a changed status may go now, else the monotonic time it may (whether it
        changed at all: :meth:`changed`)."""
        if urgent or self._sent_at is None:
            return None
        at = self._sent_at + self.interval_s
        return None if at <= now else at

    def changed(self, content: Any) -> bool:
        return bool(content != self._sent)

    def sent(self, content: Any, now: float) -> None:
        self._sent, self._sent_at = content, now
