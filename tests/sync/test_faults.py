"""Sync under faults, against a real Mosquitto: the broker killed and restarted mid-run, the
agent killed with SIGKILL mid-batch, the receiver killed mid-commit. Each test ends with the
same check: central holds every reading exactly once, sequence numbers contiguous."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from pathlib import Path

from edge_agent.models import measurement
from edge_agent.settings import BrokerSettings, Settings, StoreSettings, SyncSettings, UnitSettings
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.sync.checker import assert_exactly_once, wait_until

UNIT = "mmu-t"


def settings(tmp: Path, port: int, batch: int = 50, timeout: float = 1.5) -> Settings:
    return Settings(
        unit=UnitSettings(id=UNIT),
        store=StoreSettings(path=tmp / "unit.db"),
        broker=BrokerSettings(host="127.0.0.1", port=port, tls=False, keepalive_s=5),
        sync=SyncSettings(batch_size=batch, ack_timeout_s=timeout, max_in_flight=4),
    )


def fill(store: Store, n: int, value: float = 97.0) -> None:
    futures = [store.append("ox", [measurement("spo2", value)]) for _ in range(n)]
    for f in futures:
        f.result(30)


def central_count(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as c:
        try:
            return int(c.execute("SELECT count(*) FROM observations").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


async def test_broker_killed_and_restarted_mid_run(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        receiver = Receiver("127.0.0.1", mosquitto.port, central, client_id="rx-1")
        tasks = [
            asyncio.create_task(receiver.run(stop)),
            asyncio.create_task(SyncDaemon(store, cfg).run(stop)),
        ]
        fill(store, 1500)
        await wait_until(lambda: store.stats()["readings_sent"] >= 300, 30, "first acks")
        mosquitto.kill()  # mid-run: batches in flight, acks in transit
        fill(store, 500)  # acquisition goes on offline
        mosquitto.start()
        await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 60, "drain")
        stop.set()
        await asyncio.gather(*tasks)
    assert assert_exactly_once(cfg.store.path, central) == 2000


async def _run_agent(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent",
        "run",
        "--config",
        str(config),
        "--only",
        "sync",
    )


def write_config(cfg: Settings, path: Path) -> None:
    assert cfg.broker is not None
    path.write_text(
        f'[unit]\nid = "{UNIT}"\n[store]\npath = "{cfg.store.path}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {cfg.broker.port}\ntls = false\n'
        f"[sync]\nbatch_size = {cfg.sync.batch_size}\n"
        f"ack_timeout_s = {cfg.sync.ack_timeout_s}\n"
    )


async def test_agent_killed_with_sigkill_mid_batch(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port, batch=20)
    config = tmp_path / "unit.toml"
    write_config(cfg, config)
    with Store(cfg.store.path, UNIT) as store:
        fill(store, 3000)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    receiver = asyncio.create_task(
        Receiver("127.0.0.1", mosquitto.port, central, client_id="rx-1").run(stop)
    )
    agent = await _run_agent(config)
    await wait_until(lambda: central_count(central) >= 600, 60, "agent progress")
    agent.send_signal(signal.SIGKILL)  # no cleanup, batches in flight
    await agent.wait()
    agent = await _run_agent(config)  # the unit reboots
    unit_db = cfg.store.path

    def drained() -> bool:
        with contextlib.closing(sqlite3.connect(unit_db)) as u:
            return bool(
                u.execute("SELECT count(*) FROM readings WHERE sent_at IS NULL").fetchone()[0] == 0
            )

    try:
        await wait_until(drained, 90, "drain after restart")
    finally:
        agent.send_signal(signal.SIGTERM)
        await agent.wait()
        stop.set()
        await receiver
    assert assert_exactly_once(unit_db, central) == 3000


async def test_receiver_killed_mid_commit(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = settings(tmp_path, mosquitto.port, batch=25)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        fill(store, 2000)
        daemon = asyncio.create_task(SyncDaemon(store, cfg).run(stop))
        cmd = [
            sys.executable,
            "-m",
            "edge_agent",
            "receive",
            "--broker",
            f"127.0.0.1:{mosquitto.port}",
            "--db",
            str(central),
        ]
        receiver = await asyncio.create_subprocess_exec(*cmd)
        await wait_until(lambda: central_count(central) >= 400, 60, "receiver progress")
        receiver.send_signal(signal.SIGKILL)
        await receiver.wait()
        before = store.stats()["readings_sent"]
        receiver = await asyncio.create_subprocess_exec(*cmd)
        try:
            await wait_until(lambda: store.stats()["readings_pending_sync"] == 0, 90, "drain")
        finally:
            receiver.send_signal(signal.SIGTERM)
            await receiver.wait()
            stop.set()
            await daemon
        assert before < 2000
    assert assert_exactly_once(cfg.store.path, central) == 2000
