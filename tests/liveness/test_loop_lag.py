"""The event-loop lag monitor: the pure statistics (stall episodes, p99, whether the loop
turns), and the asyncio shell in a real loop that a task blocks between its yields."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from edge_agent.service.loop_lag import LagMonitor, LagStats
from tests.sync.checker import wait_until


def test_a_stall_is_one_episode_logged_at_its_start_and_its_end() -> None:
    stats = LagStats(threshold=1.0)
    edges = [
        stats.record(lag, at)
        for at, lag in enumerate([0.01, 0.02, 1.5, 3.0, 2.0, 0.01, 0.0, 1.2, 0.0])
    ]
    assert edges == [None, None, "stalled", None, None, "recovered", None, "stalled", "recovered"]
    assert stats.stalls == 2 and stats.max_lag == 3.0 and not stats.stalled
    figures = stats.figures(now=9.5)
    assert figures["max_ms"] == 3000.0 and figures["stalls"] == 2
    assert figures["last_turn_s_ago"] == 1.5 and figures["stalled"] is False


def test_p99_is_the_nearest_rank_of_the_recent_samples() -> None:
    stats = LagStats(threshold=1.0, keep=100)
    for i in range(100):
        stats.record(i / 1000, float(i))
    assert stats.p99() == 0.098
    assert LagStats().p99() == 0.0
    for i in range(100):  # old samples leave the window; the max since the start stays
        stats.record(0.001, 100.0 + i)
    assert stats.p99() == 0.001 and stats.max_lag == 0.099


def test_the_loop_turns_only_when_the_monitor_woke_recently_and_on_time() -> None:
    stats = LagStats(threshold=1.0, started=10.0)
    assert stats.turning(now=10.4, interval=0.5)  # not woken yet, but just started
    assert not stats.turning(now=11.6, interval=0.5)  # no wake-up for too long: blocked
    stats.record(0.02, at=11.0)
    assert stats.turning(now=11.4, interval=0.5)
    stats.record(1.4, at=12.9)  # it woke, but late: the loop makes every task wait
    assert not stats.turning(now=12.9, interval=0.5)
    stats.record(0.0, at=13.4)
    assert stats.turning(now=13.5, interval=0.5)


def test_a_task_that_blocks_between_yields_is_a_stall_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edge_agent.service.loop_lag")

    async def scenario() -> LagMonitor:
        monitor = LagMonitor(interval=0.05, threshold=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(monitor.run(stop))
        await wait_until(lambda: len(monitor.stats.samples) >= 3, 10, "the monitor's turns")
        for _ in range(4):  # the fault under test: each turn blocks the loop 0.4 s
            time.sleep(0.4)
            await asyncio.sleep(0)
        await wait_until(
            lambda: monitor.stats.stalls >= 1 and not monitor.stats.stalled,
            10,
            "the stall, then the loop on time again",
        )
        stop.set()
        await task
        return monitor

    monitor = asyncio.run(scenario())
    assert monitor.stats.max_lag >= 0.2
    stalled = [r for r in caplog.records if "event loop stalled" in r.getMessage()]
    recovered = [r for r in caplog.records if "turns again" in r.getMessage()]
    # One episode unless the machine itself paused the loop between two blocked turns.
    assert 1 <= len(stalled) == monitor.stats.stalls and len(recovered) == len(stalled)
