"""``storm``: a fleet's reconnect storm. 50 units, each with a 20,000-reading backlog, reconnect
at once to one broker and two receivers sharing them on one PostgreSQL central (Mosquitto's
shared subscription hands each unit's batches to either receiver in turn). Every unit is a real
Store + SyncDaemon in this process, its own unit id, epoch and reading ids.

When the last unit is fully acknowledged, central is checked against every unit's store:
all acknowledged, 0 lost, 0 held twice, seqs contiguous per (unit, epoch), no conflict. A
failed check is a :class:`BenchError`, not a figure.

- ``slowest_unit_s``: from the start until the slowest unit's whole backlog is acknowledged;
- ``central_readings_per_s``: all readings / that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from edge_agent.store.writer import Store
from scripts.benchmarks.drain import ALERT_SHARE, copy_store, template
from scripts.benchmarks.env import Bench, BenchError, Size, bounded, settings_for, until
from sync.daemon import SyncDaemon


def make_unit(src: Path, folder: Path, unit: str) -> Path:
    """A copy of the template store as a unit of its own: a new epoch and new reading ids
    (central holds readings by id: copies sharing ids would be held once for all)."""
    path = copy_store(src, folder)
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("UPDATE store_identity SET epoch = ?", [str(uuid.uuid4())])
            seqs = [s for (s,) in conn.execute("SELECT seq FROM readings")]
            conn.executemany(
                "UPDATE readings SET id = ? WHERE seq = ?", [(str(uuid.uuid4()), s) for s in seqs]
            )
    finally:
        conn.close()
    return path


def unit_rows(path: Path) -> tuple[str, dict[str, int], int]:
    """(epoch, id -> seq, readings not yet acknowledged) of a unit's store, read-only."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        (epoch,) = conn.execute("SELECT epoch FROM store_identity").fetchone()
        (unsent,) = conn.execute("SELECT count(*) FROM readings WHERE sent_at IS NULL").fetchone()
        rows = {str(i): int(s) for i, s in conn.execute("SELECT id, seq FROM readings")}
        return str(epoch), rows, int(unsent)
    finally:
        conn.close()


def check_central(dsn: str, units: dict[str, Path], per_unit: int) -> dict[str, int]:
    """Central against every unit's store; BenchError on the first difference."""
    import psycopg

    lost = twice = 0
    with psycopg.connect(dsn) as conn:
        for unit, path in units.items():
            epoch, rows, unsent = unit_rows(path)
            if unsent:
                raise BenchError(f"storm: unit {unit}: {unsent} readings unacknowledged")
            held = conn.execute(
                "SELECT id, seq FROM observations WHERE unit = %s", [unit]
            ).fetchall()
            central: dict[str, int] = {str(i): int(s) for i, s in held}
            twice += len(held) - len(central)
            lost += sum(central.get(rid) != seq for rid, seq in rows.items())
            epochs = conn.execute(
                "SELECT epoch, last_contiguous_seq, max_seq FROM epochs WHERE unit = %s", [unit]
            ).fetchall()
            if epochs != [(epoch, per_unit, per_unit)]:
                raise BenchError(
                    f"storm: unit {unit}: epochs {epochs}, want contiguous to {per_unit} in {epoch}"
                )
        conflicts = int(conn.execute("SELECT count(*) FROM conflicts").fetchall()[0][0])
    if lost or twice or conflicts:  # twice: a reading id in two rows (the key forbids it)
        raise BenchError(f"storm: {lost} readings lost, {twice} held twice, {conflicts} conflicts")
    return {"lost": lost, "held_twice": twice, "conflicts": conflicts}


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    from tests.postgres import PostgresMissing, cluster

    units = size.n(50, 5)
    per_unit = size.n(20_000, 200)
    src = template(bench, per_unit, ALERT_SHARE)
    try:
        server = cluster()
        dsn = server.__enter__()
    except PostgresMissing as exc:
        raise BenchError(str(exc)) from None
    try:
        paths = {}
        for _ in range(units):
            unit = bench.unit("storm")
            paths[unit] = await asyncio.to_thread(make_unit, src, bench.fresh(unit), unit)
        await bench.receivers(dsn, count=2, group="storm")
        stop = asyncio.Event()
        finished: dict[str, float] = {}
        with contextlib.ExitStack() as stack:
            daemons = {
                unit: SyncDaemon(
                    stack.enter_context(Store(path, unit)),
                    settings_for(unit, path, bench.broker.port),
                )
                for unit, path in paths.items()
            }
            start = time.monotonic()
            tasks = [asyncio.create_task(d.run(stop)) for d in daemons.values()]

            def all_done() -> bool:
                now = time.monotonic() - start
                for unit, daemon in daemons.items():
                    if unit not in finished and int(daemon.status()["acked_readings"]) >= per_unit:
                        finished[unit] = now
                if any(t.done() for t in tasks):
                    raise BenchError("storm: a sync daemon stopped")
                return len(finished) == units

            try:
                await until(
                    all_done,
                    max(600.0, units * per_unit / 500),
                    f"{units} units' backlog",
                    every=0.1,
                )
            finally:
                stop.set()
                await bounded(asyncio.gather(*tasks, return_exceptions=True), 120, "daemons stop")
        checked = await asyncio.to_thread(check_central, dsn, paths, per_unit)
    finally:
        server.__exit__(None, None, None)
    times = sorted(finished.values())
    return {
        "units": units,
        "readings_per_unit": per_unit,
        "receivers": 2,
        "central": "postgresql",
        "slowest_unit_s": round(times[-1], 1),
        "fastest_unit_s": round(times[0], 1),
        "median_unit_s": round(statistics.median(times), 1),
        "central_readings_per_s": round(units * per_unit / times[-1]),
        "acknowledged": units * per_unit,
        **checked,
    }
