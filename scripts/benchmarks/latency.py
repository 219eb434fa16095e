"""``latency``: device-to-durable time per reading. A Nonin Data Format 8 frame is written to
a pseudo-terminal's master; the real serial transport reads it, decodes it and stores it
through the drivers' StoreSink into the Store; "durable" is the moment the append future has
resolved (the sink's ``store`` returned). Beside it: one fsync'd SQLite commit of one row
(WAL, synchronous=FULL) on the same filesystem."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import termios
import time
import tty
from pathlib import Path
from typing import Any

from drivers.base import Rejected
from drivers.registry import driver
from drivers.simulators.nonin import encode_df8_frame
from drivers.transports.serial_port import SerialParams, run_serial
from edge_agent.models import Measurement
from edge_agent.service.supervisor import StoreSink
from edge_agent.store.writer import Store
from scripts.benchmarks.env import Bench, BenchError, Size, bounded, percentile, until

DEVICE = "oximeter-bench"


class TimedSink(StoreSink):
    """The real sink; notes when each stored packet's commit has resolved."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.stored_at: list[float] = []
        self.stored = asyncio.Event()

    async def store(
        self,
        device_id: str,
        measurements: list[Measurement],
        rejects: list[Rejected],
        *,
        cursor: tuple[str, int] | None = None,
        may_buffer: bool = False,
    ) -> None:
        await super().store(device_id, measurements, rejects, cursor=cursor, may_buffer=may_buffer)
        if measurements:
            self.stored_at.append(time.perf_counter())
            self.stored.set()


async def device_to_durable(folder: Path, count: int, gap_s: float) -> list[float]:
    """Milliseconds from the pty write to the resolved append, for ``count`` frames sent one
    at a time (the next one ``gap_s`` after the previous is durable)."""
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    port = os.ttyname(slave)
    os.close(slave)  # the driver opens its own end, as a real port
    decoder = driver("nonin").decoder
    assert decoder is not None
    stop = asyncio.Event()
    latencies: list[float] = []
    try:
        with Store(folder / "unit.db", "bench-latency") as store:
            sink = TimedSink(store)
            task = asyncio.create_task(
                run_serial(
                    DEVICE, SerialParams(port), lambda: decoder({"data_format": 8}), sink, stop
                )
            )
            try:
                await until(
                    lambda: (
                        sink.devices.get(DEVICE) is not None
                        and sink.devices[DEVICE].state == "connected"
                    ),
                    30,
                    "serial open",
                )
                for i in range(count + 5):  # the first five warm up
                    sink.stored.clear()
                    before = len(sink.stored_at)
                    sent = time.perf_counter()
                    os.write(master, encode_df8_frame(95 + i % 4, 70 + i % 9))
                    await bounded(sink.stored.wait(), 30, "a reading to become durable")
                    if len(sink.stored_at) != before + 1:
                        raise BenchError("latency: a frame was not stored as one packet")
                    if i >= 5:
                        latencies.append((sink.stored_at[-1] - sent) * 1000)
                    await asyncio.sleep(gap_s)
            finally:
                stop.set()
                await bounded(task, 30, "serial transport stop")
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
    return latencies


def fsync_commits(folder: Path, count: int) -> list[float]:
    """Milliseconds for one INSERT + COMMIT of one row, WAL + synchronous=FULL."""
    conn = sqlite3.connect(folder / "one.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL, raw BLOB)")
        out = []
        for i in range(count + 5):
            start = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t (v, raw) VALUES (?, ?)", [i, b"\x80Ha\x00"])
            conn.execute("COMMIT")
            if i >= 5:
                out.append((time.perf_counter() - start) * 1000)
        return out
    finally:
        conn.close()


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    count = size.n(300, 10)
    agent = await device_to_durable(bench.fresh("latency"), count, gap_s=0.01)
    commit = await asyncio.to_thread(fsync_commits, bench.fresh("fsync"), count)
    p99 = percentile(agent, 99)
    commit_p99 = percentile(commit, 99)
    return {
        "readings": count,
        "p50_ms": round(percentile(agent, 50), 2),
        "p99_ms": round(p99, 2),
        "commit_p50_ms": round(percentile(commit, 50), 2),
        "commit_p99_ms": round(commit_p99, 2),
        "ratio_p99": round(p99 / commit_p99, 2),
    }
