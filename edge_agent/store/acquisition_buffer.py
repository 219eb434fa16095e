"""Readings held in memory while the disk is full: bounded in readings and bytes, in order.

Pure (no I/O, no clock). The sink puts what a *stream* device sent (Nonin, NMEA, scales:
devices that never resend) here while the store cannot commit, with the reception time taken
when the bytes arrived; the sink writes it back in order when space returns. Message
protocols (HL7, ASTM, BLE RACP) never come here: they get a negative answer and resend.

When the buffer is full, what arrives is **not kept**: it is counted per device
(``dropped``) and the device shows ``buffer-full``. The oldest readings are kept rather than
the newest so that what survives is one contiguous stretch from the moment the disk filled.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from drivers.base import Rejected
from edge_agent.models import ClockSource, Measurement

READING_OVERHEAD = 256  # bytes per reading besides raw/context: object, strings, row
REJECT_OVERHEAD = 64


@dataclass(frozen=True)
class Held:
    device_id: str
    measurements: tuple[Measurement, ...]
    rejects: tuple[Rejected, ...]
    received_at: str
    clock_source: ClockSource | None
    position: tuple[float, float] | None

    @property
    def readings(self) -> int:
        return len(self.measurements)

    @property
    def size(self) -> int:
        return sum(
            READING_OVERHEAD + len(m.raw or b"") + sum(len(k) + len(v) for k, v in m.context)
            for m in self.measurements
        ) + sum(REJECT_OVERHEAD + len(r.raw) for r in self.rejects)


class AcquisitionBuffer:
    def __init__(self, max_readings: int = 20_000, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_readings = max_readings
        self.max_bytes = max_bytes
        self._items: deque[Held] = deque()
        self.readings = 0
        self.bytes = 0
        self.dropped: dict[str, int] = {}  # device -> readings + rejects not kept

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, held: Held) -> bool:
        """Keep ``held`` if it fits whole; otherwise count it as dropped and return False."""
        size = held.size
        if self.readings + held.readings > self.max_readings or self.bytes + size > self.max_bytes:
            self.dropped[held.device_id] = (
                self.dropped.get(held.device_id, 0) + held.readings + len(held.rejects)
            )
            return False
        self._items.append(held)
        self.readings += held.readings
        self.bytes += size
        return True

    def take(self, n: int) -> list[Held]:
        """Remove and return the ``n`` oldest entries (give back with ``give_back``)."""
        out = [self._items.popleft() for _ in range(min(n, len(self._items)))]
        for held in out:
            self.readings -= held.readings
            self.bytes -= held.size
        return out

    def give_back(self, items: list[Held]) -> None:
        """Put entries taken but not stored back at the head, in their order."""
        for held in reversed(items):
            self._items.appendleft(held)
            self.readings += held.readings
            self.bytes += held.size

    def holds(self, device_id: str) -> bool:
        return any(h.device_id == device_id for h in self._items)
