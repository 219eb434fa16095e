"""Exponential backoff with full jitter: the one reconnect policy of every transport and of
the MQTT link.

The n-th wait is uniform in [floor, min(cap, base * 2**n)]. Full jitter keeps 50 units that
lose the same tower from all coming back in the same second. ``min_share`` > 0 waits at least
that share of the ceiling (a retry that must slow down for sure, e.g. a file ``init`` nobody
answers: sync/files/uploader.py). Pure: the random source is
injected, there is no clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    floor: float = 0.0  # shortest wait (paho counts reconnect delays in whole seconds)
    attempt: int = 0
    min_share: float = 0.0  # the share of the ceiling always waited (0: full jitter)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 30))
        self.attempt += 1
        low = max(self.floor, self.min_share * ceiling)
        return self.rng.uniform(low, max(low, ceiling))

    def reset(self) -> None:
        self.attempt = 0
