"""Sync through a TCP fault proxy on loopback: connection resets, a half-open blackhole that
only keepalive detects, and a 2G-like bandwidth cap with latency. Every test ends with the
exactly-once check."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edge_agent.settings import Settings
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.faultproxy import FaultProxy
from tests.sync.checker import assert_exactly_once, wait_until
from tests.sync.test_faults import UNIT, fill, settings


async def run_through(
    tmp_path: Path, mosquitto: MosquittoBroker, proxy: FaultProxy, cfg: Settings, fault: str, n: int
) -> None:
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        receiver = Receiver("127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx")
        tasks = [
            asyncio.create_task(receiver.run(stop)),
            asyncio.create_task(SyncDaemon(store, cfg).run(stop)),
        ]
        fill(store, n // 2)
        await wait_until(lambda: store.stats()["readings_sent"] >= 50, 30, "first acks")
        before = proxy.connections
        proxy.set_mode(fault)
        fill(store, n - n // 2)  # acquisition goes on during the fault
        await asyncio.sleep(0.5)  # the fault lasts a moment: resets refuse reconnects meanwhile
        proxy.set_mode("pass")
        await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 60, "drain")
        stop.set()
        await asyncio.gather(*tasks)
    assert proxy.connections > before  # the fault cost the link its connection
    assert assert_exactly_once(cfg.store.path, tmp_path / "central.db") == n


def proxied(tmp_path: Path, proxy: FaultProxy, keepalive: int = 5) -> Settings:
    cfg = settings(tmp_path, proxy.port, batch=20, timeout=1.0)
    assert cfg.broker is not None
    return cfg.model_copy(
        update={"broker": cfg.broker.model_copy(update={"keepalive_s": keepalive})}
    )


async def test_connection_reset_mid_run(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    proxy = await FaultProxy(mosquitto.port).start()
    try:
        await run_through(tmp_path, mosquitto, proxy, proxied(tmp_path, proxy), "reset", 600)
    finally:
        await proxy.close()


async def test_half_open_blackhole_is_detected_by_keepalive(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    proxy = await FaultProxy(mosquitto.port).start()
    stop = asyncio.Event()
    cfg = proxied(tmp_path, proxy, keepalive=5)
    try:
        with Store(cfg.store.path, UNIT) as store:
            receiver = Receiver(
                "127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx"
            )
            daemon = SyncDaemon(store, cfg)
            tasks = [asyncio.create_task(receiver.run(stop)), asyncio.create_task(daemon.run(stop))]
            fill(store, 200)
            await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 30, "sync")
            proxy.set_mode("blackhole")  # sockets stay open, nothing gets through
            fill(store, 200)
            # No error reaches the agent; only MQTT keepalive (1.5 x 5 s) reveals the dead link.
            await wait_until(lambda: not daemon.connected, 20, "half-open link detected")
            proxy.set_mode("pass")
            await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 60, "drain")
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await proxy.close()
    assert assert_exactly_once(cfg.store.path, tmp_path / "central.db") == 400


async def test_2g_bandwidth_cap_and_latency(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    proxy = await FaultProxy(mosquitto.port).start()
    proxy.limit_bps = 50_000  # "EDGE" uplink, FAULT-TESTING.md §2.6
    proxy.latency = 0.2
    stop = asyncio.Event()
    cfg = proxied(tmp_path, proxy)
    cfg = cfg.model_copy(update={"sync": cfg.sync.model_copy(update={"ack_timeout_s": 10.0})})
    try:
        with Store(cfg.store.path, UNIT) as store:
            receiver = Receiver(
                "127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx"
            )
            tasks = [
                asyncio.create_task(receiver.run(stop)),
                asyncio.create_task(SyncDaemon(store, cfg).run(stop)),
            ]
            fill(store, 300)
            await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 90, "drain")
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await proxy.close()
    assert assert_exactly_once(cfg.store.path, tmp_path / "central.db") == 300
