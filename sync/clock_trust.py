"""Is the unit's clock right? Estimated from acks as NTP does, never from queueing delay.

Each ack gives four times: ``t1`` the unit's clock when it published (echoed by central),
``t2``/``t3`` central's clock when it received the message and when it answered, ``t4`` the
unit's clock when the ack arrived. Offset ``θ = ((t2 − t1) + (t3 − t4)) / 2`` and round-trip
delay ``δ = (t4 − t1) − (t3 − t2)``; the true offset lies within ``θ ± δ/2`` whatever the
queueing on either path. We keep the sample with the smallest delay among the last few (the
NTP clock filter) and change the verdict only when it is certain: *wrong* when even the most
favourable reading of the sample is beyond the tolerance, *confirmed* when even the least
favourable one is within it. A slow link widens the bound; it never flips the verdict.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    CONFIRMED = "confirmed"
    WRONG = "wrong"
    UNSURE = "unsure"


@dataclass(frozen=True)
class Sample:
    offset: float
    delay: float


def sample(t1: float, t2: float, t3: float, t4: float) -> Sample:
    return Sample(((t2 - t1) + (t3 - t4)) / 2, max(0.0, (t4 - t1) - (t3 - t2)))


@dataclass
class ClockTrust:
    tolerance_s: float = 2.0
    window: int = 8
    samples: deque[Sample] = field(default_factory=deque)

    def add(self, s: Sample) -> Verdict:
        self.samples.append(s)
        while len(self.samples) > self.window:
            self.samples.popleft()
        return self.verdict()

    def best(self) -> Sample | None:
        return min(self.samples, key=lambda s: s.delay) if self.samples else None

    def verdict(self) -> Verdict:
        best = self.best()
        if best is None:
            return Verdict.UNSURE
        error = best.delay / 2
        if abs(best.offset) + error <= self.tolerance_s:
            return Verdict.CONFIRMED
        if abs(best.offset) - error > self.tolerance_s:
            return Verdict.WRONG
        return Verdict.UNSURE
