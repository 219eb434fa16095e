"""``wire``: bytes on the wire per reading, counted by a TCP proxy between the agent and the
broker (whole MQTT packets, every topic, both directions: CONNECT, SUBSCRIBE, status, alerts,
batches, PUBACKs, central's acks). At full batches (a backlog drained) and in live operation
(five simulated devices for a while, then drained) with the ``[sync]`` values a unit ships
with (``config/edge-agent.example.toml``) and a central that signs its acks (as the shipped
central does once it has a key: the signature is counted). Beside: one uncompressed JSON
Observation per message through the same proxy (the naive loop), and a compact binary lower
bound."""

from __future__ import annotations

import asyncio
import os
import struct
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

from edge_agent.service.supervisor import Supervisor
from edge_agent.settings import SyncSettings, TrustSettings
from edge_agent.store.writer import Store
from scripts.benchmarks.drain import (
    ALERT_SHARE,
    agent_drain,
    naive_publish,
    read_chunks,
    template,
)
from scripts.benchmarks.env import REPO, Bench, BenchError, Size, bounded, until
from sync import codec, signing
from sync.daemon import SyncDaemon
from tests.faultproxy import FaultProxy

# seq uint32, quantity id uint16, value float64, time int64 ms, flags uint8: 23 bytes
COMPACT = struct.Struct("<IHdqB")


async def full_batches(bench: Bench, n: int) -> tuple[float, float, float]:
    """(bytes, up, down) per reading for a drain of ``n`` readings at full batches."""
    src = template(bench, n, ALERT_SHARE)
    proxy = await FaultProxy(bench.broker.port).start()
    try:
        await agent_drain(bench, src, n, port=proxy.port)
        await asyncio.sleep(0.2)  # the DISCONNECT and last acks reach the counters
    finally:
        await proxy.close()
    return proxy.total / n, proxy.up_bytes / n, proxy.down_bytes / n


async def naive_bytes(bench: Bench, n: int) -> float:
    src = template(bench, n, ALERT_SHARE)
    proxy = await FaultProxy(bench.broker.port).start()
    try:
        done = await asyncio.to_thread(naive_publish, src, n, proxy.port, "bench-naive", 600)
    finally:
        await proxy.close()
    return proxy.total / done.readings


EXAMPLE_CONFIG = REPO / "config" / "edge-agent.example.toml"


def shipped_sync() -> SyncSettings:
    """The ``[sync]`` section a unit ships with (the example config), checked as the agent
    checks it."""
    with EXAMPLE_CONFIG.open("rb") as f:
        return SyncSettings(**tomllib.load(f)["sync"])


def signing_key(bench: Bench) -> tuple[Path, str]:
    """Central's signing key for the run (0600) and the public key line for the unit."""
    pem, public = signing.new_private_key_pem()
    path = bench.fresh("central-key") / "central.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return path, public


async def live(
    bench: Bench, seconds: float, public_key: str
) -> tuple[float, float, float, int, SyncSettings]:
    """Five simulated devices for ``seconds``, then the backlog drained, with the shipped
    ``[sync]`` and signed acks: (bytes, up, down per reading acknowledged, readings, the sync
    settings used)."""
    from scripts.benchmarks.env import settings_for, simulated_devices

    folder = bench.fresh("live")
    sims, devices = simulated_devices(folder)
    proxy = await FaultProxy(bench.broker.port).start()
    unit = bench.unit("live")
    shipped = shipped_sync()
    settings = settings_for(
        unit, folder / "unit.db", proxy.port, **shipped.model_dump()
    ).model_copy(update={"devices": devices, "trust": TrustSettings(central_keys=[public_key])})
    try:
        with Store(settings.store.path, unit) as store:
            acquire_stop, sync_stop = asyncio.Event(), asyncio.Event()
            daemon = SyncDaemon(store, settings)
            acquire = asyncio.create_task(Supervisor(settings, store, sync=False).run(acquire_stop))
            sync = asyncio.create_task(daemon.run(sync_stop))
            try:
                await asyncio.sleep(seconds)  # the measured period itself
                acquire_stop.set()
                await bounded(acquire, 30, "devices stop")
                total = store.stats()["readings_total"]
                await until(
                    lambda: sync.done() or int(daemon.status()["acked_readings"]) >= total,
                    120,
                    "live backlog drain",
                )
                if sync.done():
                    raise BenchError(f"sync daemon stopped: {sync.exception()}")
            finally:
                acquire_stop.set()
                sync_stop.set()
                await bounded(
                    asyncio.gather(acquire, sync, return_exceptions=True), 60, "live stop"
                )
            await asyncio.sleep(0.2)
    finally:
        await proxy.close()
        for sim in sims:
            sim.stop()
    if not total:
        raise BenchError("live: the simulated devices produced no readings")
    if daemon.refused_acks:
        raise BenchError(f"live: the unit refused {daemon.refused_acks} acks")
    return (proxy.total / total, proxy.up_bytes / total, proxy.down_bytes / total, total, shipped)


def payload_sweep(
    bench: Bench, sizes: tuple[int, ...] = (1, 10, 100, 200, 500)
) -> dict[str, float]:
    """The codec alone: compressed payload bytes per reading by batch size (no MQTT)."""
    src = template(bench, max(sizes) * 2, ALERT_SHARE)
    out = {}
    for size in sizes:
        total = count = 0
        for rows in read_chunks(src, max(sizes) * 2, size):
            total += len(
                codec.encode_batch(
                    "mmu-01",
                    str(uuid.uuid4()),
                    rows,
                    "2026-11-23T08:00:00.000Z",
                    epoch=str(uuid.UUID(int=1)),
                )
            )
            count += len(rows)
        out[f"payload_bytes_per_reading_batch_{size}"] = round(total / count, 1)
    return out


async def measure(bench: Bench, size: Size) -> dict[str, Any]:
    n = size.n(20_000, 200)
    key, public = signing_key(bench)
    await bench.receivers(bench.fresh("central") / "central.db", signing_key=key)
    start = time.monotonic()
    full, up, down = await full_batches(bench, n)
    naive = await naive_bytes(bench, size.n(2_000, 50))
    live_per, live_up, live_down, live_readings, shipped = await live(
        bench, size.s(60.0, 6.0), public
    )
    return {
        "readings": n,
        "full_batch_bytes_per_reading": round(full, 1),
        "full_batch_up_bytes_per_reading": round(up, 1),
        "full_batch_down_bytes_per_reading": round(down, 1),
        "live_bytes_per_reading": round(live_per, 1),
        "live_up_bytes_per_reading": round(live_up, 1),
        "live_down_bytes_per_reading": round(live_down, 1),
        "live_readings": live_readings,
        "live_linger_s": shipped.linger_s,
        "live_batch_size": shipped.batch_size,
        "live_signed_acks": True,
        "naive_bytes_per_reading": round(naive, 1),
        "compact_bytes_per_reading": COMPACT.size,
        "ratio_naive": round(full / naive, 3),
        "ratio_compact": round(full / COMPACT.size, 2),
        **payload_sweep(bench),
        "seconds": round(time.monotonic() - start, 1),
    }
