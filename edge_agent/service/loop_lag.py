"""Event-loop lag: how late the agent's event loop wakes a task that sleeps a fixed interval.

A turn of the loop that does not yield (a busy loop, a blocking call) delays every other task:
the drivers stop reading, the console stops answering, the watchdog stops pinging. The
monitor is a task that sleeps ``interval`` seconds and measures how late it wakes up; a lag
above ``threshold`` is a *stall*, logged once when it starts and once when it ends.

:class:`LagStats` is the pure part (samples in, figures and episode edges out, no clock);
:class:`LagMonitor` is the asyncio shell that feeds it. The figures (recent lag, p99, max,
stalls, age of the last turn) go into the agent's heartbeat answer (``status``, ``sync
status``, the console) and decide the systemd watchdog's pings (:mod:`service_notify`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Literal

log = logging.getLogger(__name__)

INTERVAL_S: Final = 0.5  # how often the monitor wakes
STALL_S: Final = 1.0  # a wake-up later than this is a stall
KEEP: Final = 240  # samples kept: two minutes at INTERVAL_S

Edge = Literal["stalled", "recovered"]


class LagStats:
    """Recent wake-up delays and the stall episodes they make (pure: times are given)."""

    def __init__(self, threshold: float = STALL_S, started: float = 0.0, keep: int = KEEP) -> None:
        self.threshold = threshold
        self.samples: deque[float] = deque(maxlen=keep)
        self.last_turn = started  # monotonic time of the last wake-up (or of the start)
        self.last_lag = 0.0
        self.max_lag = 0.0  # since the start
        self.stalls = 0  # episodes since the start
        self.stalled = False
        self.episode_max = 0.0

    def record(self, lag: float, at: float) -> Edge | None:
        """One wake-up ``lag`` seconds late at monotonic time ``at``; the episode edge it
        makes, if any (``stalled`` on the first late turn, ``recovered`` on the first turn on
        time after it)."""
        lag = max(0.0, lag)
        self.samples.append(lag)
        self.last_turn, self.last_lag = at, lag
        self.max_lag = max(self.max_lag, lag)
        late = lag > self.threshold
        if late and not self.stalled:
            self.stalled, self.episode_max = True, lag
            self.stalls += 1
            return "stalled"
        if late:
            self.episode_max = max(self.episode_max, lag)
            return None
        if self.stalled:
            self.stalled = False
            return "recovered"
        return None

    def p99(self) -> float:
        """The 99th percentile of the recent lags (nearest rank), 0 without samples."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]

    def turning(self, now: float, interval: float) -> bool:
        """The loop turns: the monitor woke within its interval plus the stall threshold, and
        its last wake-up was not itself a stall."""
        return now - self.last_turn <= interval + self.threshold and not self.stalled

    def figures(self, now: float) -> dict[str, Any]:
        """What the screens show (milliseconds; no patient data here, only timings)."""
        return {
            "lag_ms": round(self.last_lag * 1000, 1),
            "p99_ms": round(self.p99() * 1000, 1),
            "max_ms": round(self.max_lag * 1000, 1),
            "recent_max_ms": round(max(self.samples, default=0.0) * 1000, 1),
            "stalls": self.stalls,
            "stalled": self.stalled,
            "last_turn_s_ago": round(max(0.0, now - self.last_turn), 3),
            "threshold_ms": round(self.threshold * 1000, 1),
        }


class LagMonitor:
    """The task that measures the loop's lag (start it with :meth:`run` in the agent's loop)."""

    def __init__(
        self,
        interval: float = INTERVAL_S,
        threshold: float = STALL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.stats = LagStats(threshold, started=clock())

    def turning(self) -> bool:
        return self.stats.turning(self.clock(), self.interval)

    def figures(self) -> dict[str, Any]:
        return self.stats.figures(self.clock())

    async def run(self, stop: asyncio.Event) -> None:
        self.stats.last_turn = self.clock()
        while not stop.is_set():
            due = self.clock() + self.interval
            await asyncio.sleep(self.interval)
            now = self.clock()
            edge = self.stats.record(now - due, now)
            if edge == "stalled":
                log.warning(
                    "event loop stalled: a turn took %.2f s (threshold %.2f s)",
                    now - due,
                    self.stats.threshold,
                )
            elif edge == "recovered":
                log.warning(
                    "event loop turns again (the stall's longest turn: %.2f s)",
                    self.stats.episode_max,
                )
