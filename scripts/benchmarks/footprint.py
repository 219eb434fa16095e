"""``footprint``: what the agent costs the van's computer.

- ``help_overhead_ms``: ``edge-agent --help`` wall time minus ``python -c pass`` (medians).
- ``rss_mb``: VmRSS of ``edge-agent run`` with five simulated devices (syncing to the run's
  broker and receiver) after a while.
- ``idle_cpu_percent``: CPU of ``edge-agent run`` with no devices (sync on, nothing to send).
- ``cpu_ms_per_reading``: CPU of that ``run`` with five devices per reading stored, beside a
  naive read-and-insert loop (scripts/benchmarks/naive_ingest.py) fed Nonin frames on a pty.
CPU is utime + stime from /proc/PID/stat over a window after start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Any

from drivers.simulators.nonin import encode_df8_frame
from scripts.benchmarks.env import (
    Bench,
    BenchError,
    Size,
    agent_cmd,
    cpu_seconds,
    python_env,
    rss_mb,
    simulated_devices,
    until,
)


def wall_ms(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            cmd,
            env=python_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _toml(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_config(path: Path, unit: str, store: Path, broker_port: int, devices: list[Any]) -> Path:
    """A unit config for ``edge-agent run`` (the documented TOML keys)."""
    lines = [
        f'[unit]\nid = {_toml(unit)}\nlanguage = "en"\n',
        f"[store]\npath = {_toml(str(store))}\n",
        f'[broker]\nhost = "127.0.0.1"\nport = {broker_port}\ntls = false\n',
    ]
    for dev in devices:
        lines.append(
            f"[[devices]]\nid = {_toml(dev.id)}\nkind = {_toml(dev.kind)}\n"
            f"port = {_toml(dev.port)}\n"
        )
        if dev.options:
            opts = ", ".join(f"{k} = {_toml(v)}" for k, v in dev.options.items())
            lines.append(f"options = {{ {opts} }}\n")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def count_rows(db: Path) -> int:
    """Rows in ``readings``, read-only beside the writer (WAL)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        conn.close()


async def window(pid: int, db: Path, seconds: float) -> tuple[float, float, int]:
    """(cpu seconds, wall seconds, new readings) over the next ``seconds``."""
    cpu0, rows0, t0 = cpu_seconds(pid), count_rows(db), time.monotonic()
    await asyncio.sleep(seconds)  # the measured period itself
    return cpu_seconds(pid) - cpu0, time.monotonic() - t0, count_rows(db) - rows0


async def agent_run(bench: Bench, devices: bool, warm_s: float, seconds: float) -> dict[str, float]:
    """``edge-agent run`` as a subprocess: CPU, wall, readings over a window, then RSS."""
    folder = bench.fresh("run-devices" if devices else "run-idle")
    sims, settings = simulated_devices(folder) if devices else ([], [])
    db = folder / "unit.db"
    config = write_config(
        folder / "edge-agent.toml", bench.unit("run"), db, bench.broker.port, settings
    )
    try:
        proc = bench.spawn(agent_cmd("run", "--config", str(config)), folder / "agent.log")
        try:
            await until(lambda: proc.poll() is not None or db.exists(), 60, "agent start")
            await asyncio.sleep(warm_s)  # start-up (imports, connect) is not the steady state
            if proc.poll() is not None:
                raise BenchError(
                    f"edge-agent run exited with {proc.returncode}; see {folder / 'agent.log'}"
                )
            cpu, wall, rows = await window(proc.pid, db, seconds)
            rss = rss_mb(proc.pid)
        finally:
            bench.stop_process(proc)
    finally:
        for sim in sims:
            sim.stop()
    return {"cpu": cpu, "wall": wall, "rows": rows, "rss": rss}


async def naive_run(bench: Bench, rate: float, warm_s: float, seconds: float) -> dict[str, float]:
    """The naive loop fed DF8 frames (two readings each) at ``rate`` readings/s."""
    folder = bench.fresh("naive-ingest")
    master, slave = os.openpty()
    tty.setraw(slave, termios.TCSANOW)
    port = os.ttyname(slave)
    db = folder / "naive.db"
    proc = bench.spawn(
        [
            sys.executable,
            "-m",
            "scripts.benchmarks.naive_ingest",
            port,
            str(db),
            "--seconds",
            str(warm_s + seconds + 60),
        ],
        folder / "naive.log",
    )
    stop = asyncio.Event()

    async def feed() -> None:
        i = 0
        while not stop.is_set():
            os.write(master, encode_df8_frame(95 + i % 4, 70 + i % 9))
            i += 1
            await asyncio.sleep(2 / rate)

    try:
        await until(lambda: proc.poll() is not None or db.exists(), 60, "naive loop start")
        feeder = asyncio.create_task(feed())
        try:
            await asyncio.sleep(warm_s)
            cpu, wall, rows = await window(proc.pid, db, seconds)
        finally:
            stop.set()
            await feeder
    finally:
        bench.stop_process(proc)
        with contextlib.suppress(OSError):
            os.close(master)
        os.close(slave)
    return {"cpu": cpu, "wall": wall, "rows": rows}


async def help_overhead(bench: Bench, size: Size) -> dict[str, Any]:
    """The cheap part of the figure alone (``scripts/bench help``)."""
    runs = size.n(9, 3)
    bare = await asyncio.to_thread(wall_ms, [sys.executable, "-c", "pass"], runs)
    help_ms = await asyncio.to_thread(wall_ms, agent_cmd("--help"), runs)
    return {
        "help_ms": round(help_ms, 1),
        "python_ms": round(bare, 1),
        "help_overhead_ms": round(help_ms - bare, 1),
        "runs": runs,
    }


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    start = await help_overhead(bench, size)
    await bench.receivers(bench.fresh("central") / "central.db")
    warm = size.s(10.0, 3.0)
    busy = await agent_run(bench, True, warm, size.s(60.0, 15.0))
    idle = await agent_run(bench, False, warm, size.s(30.0, 5.0))
    if not busy["rows"]:
        raise BenchError("footprint: the simulated devices produced no readings")
    rate = busy["rows"] / busy["wall"]
    naive = await naive_run(bench, rate, 2.0, size.s(20.0, 5.0))
    if not naive["rows"]:
        raise BenchError("footprint: the naive loop stored nothing")
    agent_per = busy["cpu"] / busy["rows"] * 1000
    naive_per = naive["cpu"] / naive["rows"] * 1000
    return {
        **start,
        "rss_mb": round(busy["rss"], 1),
        "rss_after_s": round(warm + busy["wall"], 1),
        "readings_per_s": round(rate, 1),
        "idle_cpu_percent": round(idle["cpu"] / idle["wall"] * 100, 3),
        "idle_seconds": round(idle["wall"], 1),
        "cpu_ms_per_reading": round(agent_per, 3),
        "naive_cpu_ms_per_reading": round(naive_per, 3),
        "ratio_cpu_naive": round(agent_per / naive_per, 2),
    }
