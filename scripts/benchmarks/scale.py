"""``scale``: many units syncing at once to one broker and two receivers sharing the load
(MQTT shared subscription, one SQLite central). Every unit is a real Store + SyncDaemon with
its own unit id, all in this one process (one event loop, a writer thread and a paho thread
each), starting together with the same backlog.

- ``central_readings_per_s``: all readings / time until the last unit is fully acknowledged.
- ``slowest_lag_s``: the time from the start until the slowest unit's whole backlog is
  acknowledged, i.e. how long the oldest reading of the worst-served unit waits before
  central has it (``fastest_s`` and ``spread_s`` show how fair the sharing is).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

from edge_agent.store.writer import Store
from scripts.benchmarks.drain import ALERT_SHARE, copy_store, template
from scripts.benchmarks.env import Bench, BenchError, Size, bounded, settings_for, until
from sync.daemon import SyncDaemon


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    units = size.n(50, 5)
    per_unit = size.n(1_000, 20)
    src = template(bench, per_unit, ALERT_SHARE)
    await bench.receivers(bench.fresh("central") / "central.db", count=2)
    stop = asyncio.Event()
    finished: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        daemons: dict[str, SyncDaemon] = {}
        for _ in range(units):
            unit = bench.unit("scale")
            path = copy_store(src, bench.fresh(unit))
            store = stack.enter_context(Store(path, unit))
            daemons[unit] = SyncDaemon(store, settings_for(unit, path, bench.broker.port))
        start = time.monotonic()
        tasks = [asyncio.create_task(d.run(stop)) for d in daemons.values()]

        def all_done() -> bool:
            now = time.monotonic() - start
            for unit, daemon in daemons.items():
                if unit not in finished and int(daemon.status()["acked_readings"]) >= per_unit:
                    finished[unit] = now
            if any(t.done() for t in tasks):
                raise BenchError("scale: a sync daemon stopped")
            return len(finished) == units

        try:
            await until(all_done, 600, f"{units} units' backlog", every=0.1)
        finally:
            stop.set()
            await bounded(asyncio.gather(*tasks, return_exceptions=True), 120, "daemons stop")
    times = sorted(finished.values())
    return {
        "units": units,
        "readings_per_unit": per_unit,
        "receivers": 2,
        "central_readings_per_s": round(units * per_unit / times[-1]),
        "slowest_lag_s": round(times[-1], 2),
        "fastest_s": round(times[0], 2),
        "median_s": round(statistics.median(times), 2),
        "spread_s": round(times[-1] - times[0], 2),
    }
