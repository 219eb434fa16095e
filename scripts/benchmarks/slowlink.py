"""``slowlink``: a backlog drained through a 64 kbit/s link (the project's fault proxy,
tests/faultproxy.py, with its bandwidth toxic: each direction capped), the same proxy
counting the bytes it forwards. Seconds to drain beside the time the bytes alone need at that
rate (the busier direction's bytes * 8 / 64,000)."""

from __future__ import annotations

import asyncio
from typing import Any

from scripts.benchmarks.drain import ALERT_SHARE, agent_drain, template
from scripts.benchmarks.env import Bench, Size
from tests.faultproxy import FaultProxy

LINK_BPS = 64_000


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    n = size.n(5_000, 50)
    src = template(bench, n, ALERT_SHARE)
    await bench.receivers(bench.fresh("central") / "central.db")
    fault = await FaultProxy(bench.broker.port).start()
    fault.limit_bps = LINK_BPS
    try:
        drained = await agent_drain(bench, src, n, port=fault.port, deadline_s=900)
        await asyncio.sleep(0.2)
    finally:
        await fault.close()
    bytes_time = max(fault.up_bytes, fault.down_bytes) * 8 / LINK_BPS
    return {
        "readings": n,
        "link_bps": LINK_BPS,
        "seconds": round(drained.seconds, 2),
        "up_bytes": fault.up_bytes,
        "down_bytes": fault.down_bytes,
        "bytes_seconds": round(bytes_time, 2),
        "ratio_bytes_time": round(drained.seconds / bytes_time, 2),
    }
