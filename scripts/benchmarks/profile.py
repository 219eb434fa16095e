"""``profile``: cProfile of the agent's drain (the ``drain`` figure's agent run), one profile
per thread that does the work: the event loop (SyncDaemon) and the store's writer thread
(profiling is per thread in CPython 3.11; the writer's profiler is switched on by an
operation submitted to the store, so no hook in the store is needed). paho's network thread
is not profiled. Top functions by cumulative time."""

from __future__ import annotations

import cProfile
import io
import pstats
from typing import Any

from scripts.benchmarks.drain import ALERT_SHARE, agent_drain, template
from scripts.benchmarks.env import Bench, Size

TOP = 15


def top(profile: cProfile.Profile, count: int = TOP) -> tuple[str, list[dict[str, Any]]]:
    """(pstats text, rows) of the ``count`` functions with the most cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(count)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats: undocumented
    ordered = sorted(raw.items(), key=lambda kv: kv[1][3], reverse=True)[:count]
    rows = [
        {
            "function": f"{file}:{line}({name})",
            "ncalls": calls,
            "tottime": round(tt, 4),
            "cumtime": round(ct, 4),
        }
        for (file, line, name), (_, calls, tt, ct, _) in ordered
    ]
    return out.getvalue(), rows


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    n = size.n(20_000, 200)
    src = template(bench, n, ALERT_SHARE)
    await bench.receivers(bench.fresh("central") / "central.db")
    loop_profile, writer_profile = cProfile.Profile(), cProfile.Profile()
    drained = await agent_drain(bench, src, n, profilers=(loop_profile, writer_profile))
    loop_text, loop_rows = top(loop_profile)
    writer_text, writer_rows = top(writer_profile)
    return {
        "readings": n,
        "readings_per_s_profiled": round(drained.per_s),
        "event_loop_top": loop_rows,
        "store_writer_top": writer_rows,
        "text": f"== event loop thread (SyncDaemon)\n{loop_text}\n"
        f"== store writer thread\n{writer_text}",
    }
