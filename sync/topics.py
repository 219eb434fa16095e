"""MQTT topics, per unit, as data (see ARCHITECTURE.md, "Topics")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PREFIX: Final = "mmu/v1"


@dataclass(frozen=True)
class Topic:
    """A topic of the scheme: its suffix, QoS, retain flag and the MQTT 5 content type of what
    travels on it (``up/readings`` carries the codec's zlib envelope)."""

    suffix: str
    qos: int
    retain: bool
    content_type: str = "application/json"

    def of(self, unit: str) -> str:
        return f"{PREFIX}/{unit}/{self.suffix}"


# The readings' envelope is zlib (RFC 6713); its user properties name the dictionary and the
# inner type (sync/codec.py: WIRE_PROPERTIES).
READINGS: Final = Topic("up/readings", 1, False, "application/zlib")
EVENTS: Final = Topic("up/events", 1, False)
STATUS: Final = Topic("status", 1, True)
ACK: Final = Topic("down/ack", 1, False)
CONFIG: Final = Topic("down/config", 1, True)
CMD: Final = Topic("down/cmd", 1, False)


def unit_of(topic: str) -> str | None:
    """The unit id in ``mmu/v1/{unit}/...``; None for a topic outside the scheme."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != PREFIX or not parts[2]:
        return None
    return parts[2]


def shared_readings(group: str) -> str:
    """Shared subscription: several receivers behind one broker share the load."""
    return f"$share/{group}/{PREFIX}/+/{READINGS.suffix}"
