"""The uplink cap: over any long enough window the average stays under the configured rate."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync.pacing import Pacer, adapt_batch


def test_no_cap_never_waits() -> None:
    assert Pacer(None).delay(10**9, 0.0) == 0.0


@given(st.integers(8_000, 200_000), st.lists(st.integers(1, 50_000), min_size=1, max_size=60))
def test_sending_as_told_stays_under_the_cap(bps: int, sizes: list[int]) -> None:
    pacer = Pacer(bps, burst_bytes=4096)
    now = 0.0
    for size in sizes:
        now += pacer.delay(size, now)  # wait as told, then send
    sent = sum(sizes)
    # Over the whole run at most the burst plus the rate's worth went out.
    assert sent <= 4096 + now * bps / 8 + 1e-6


def test_a_quiet_link_refills_only_up_to_the_burst() -> None:
    pacer = Pacer(8000, burst_bytes=1000)  # 1000 bytes/s
    assert pacer.delay(1000, 0.0) == 0.0
    assert pacer.delay(500, 0.0) == 0.5
    assert pacer.delay(1000, 100.0) == 0.0  # refilled to the burst, not to 100 s worth
    assert pacer.delay(1000, 100.0) == 1.0


@given(st.integers(1, 5000), st.lists(st.booleans(), max_size=50))
def test_batch_size_adapts_within_bounds(ceiling: int, outcomes: list[bool]) -> None:
    limit = ceiling
    for acked in outcomes:
        new = adapt_batch(limit, acked=acked, ceiling=ceiling)
        assert 1 <= new <= ceiling
        assert (new >= limit) if acked else (new <= limit or new == min(10, ceiling))
        limit = new


def test_losses_shrink_batches_and_acks_grow_them_back() -> None:
    assert adapt_batch(200, acked=False, ceiling=200) == 100
    assert adapt_batch(12, acked=False, ceiling=200) == 10  # floor
    assert adapt_batch(100, acked=True, ceiling=200) == 150
    assert adapt_batch(150, acked=True, ceiling=200) == 200  # ceiling
