"""When to take a batch (Kafka's ``linger.ms``, pure).

In a drain (a full batch is waiting) a batch is taken at once. In live operation readings wait
up to ``linger_s`` for company so that a message carries several of them; an alert never
waits. Returns ``None`` to take now, else the monotonic time to look again.
"""

from __future__ import annotations


def take_at(
    now: float,
    *,
    waiting: int,
    oldest_at: float | None,
    batch_limit: int,
    linger_s: float,
    alerts: bool,
) -> float | None:
    if alerts or waiting >= batch_limit or linger_s <= 0 or oldest_at is None:
        return None
    due = oldest_at + linger_s
    return None if due <= now else due
