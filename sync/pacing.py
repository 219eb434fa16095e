"""An uplink bandwidth cap: the unit's modem also carries the teleconsultation video, so sync
must not take the whole 2G/3G uplink. A token bucket, pure (the clock is passed in)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Pacer:
    bits_per_second: float | None  # None: no cap
    burst_bytes: int = 16 * 1024
    _tokens: float = 0.0
    _at: float | None = None
    charged_bytes: int = 0  # every byte asked about so far, sent at once or held

    def delay(self, nbytes: int, now: float) -> float:
        """Seconds to wait before sending ``nbytes`` so the average stays under the cap. The
        bytes are charged: a caller that sends at once anyway (an alert) still delays what
        follows."""
        self.charged_bytes += nbytes
        if not self.bits_per_second:
            return 0.0
        rate = self.bits_per_second / 8  # bytes per second
        if self._at is None:
            self._tokens, self._at = float(self.burst_bytes), now
        self._tokens = min(float(self.burst_bytes), self._tokens + (now - self._at) * rate)
        self._at = now
        self._tokens -= nbytes
        return 0.0 if self._tokens >= 0 else -self._tokens / rate


MIN_BATCH = 10


def adapt_batch(limit: int, *, acked: bool, ceiling: int) -> int:
    """Adaptive batch size: halve after a batch had to be re-sent (the link is losing whole
    messages: send smaller ones), grow by half after an ack, never above the configured
    size."""
    if acked:
        return min(ceiling, limit + max(1, limit // 2))
    return max(min(MIN_BATCH, ceiling), limit // 2)
