"""Liveness when the link drops: the agent keeps storing readings and turning its event loop.

The agent runs as its own process (``edge-agent run``) on a simulated Nonin oximeter (a real
pty) with the shipped default ``linger_s``, syncing to a real Mosquitto. The broker is killed
while the oximeter streams: the store must keep growing at the device's rate, and the agent
must reconnect and drain on its own when the broker returns. On the code before the fix, the
past linger deadline made the sync loop spin without yielding: no reading was stored after
the link loss and the agent never recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import sys
from pathlib import Path

from drivers.registry import driver
from drivers.simulators.base import PtyDevice
from sync.central.receiver import Receiver
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until

UNIT = "mmu-live"


def _config(tmp: Path, port: int, tty: str) -> Path:
    config = tmp / "unit.toml"
    config.write_text(
        f'[unit]\nid = "{UNIT}"\n[store]\npath = "{tmp / "unit.db"}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\ntls = false\nkeepalive_s = 5\n'
        # linger_s at its shipped default: the condition of the freeze
        "[sync]\nack_timeout_s = 5.0\n"
        "[console]\nenabled = false\n"
        f'[[devices]]\nid = "ox-1"\nkind = "nonin"\nport = "{tty}"\n'
        "options = { data_format = 7 }\n",
        encoding="utf-8",
    )
    return config


def _counts(db: Path) -> tuple[int, int]:
    """(stored, marked sent), read-only: no checkpoint, no lock held."""
    if not db.exists():
        return (0, 0)
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        try:
            row = c.execute("SELECT count(*), count(sent_at) FROM readings").fetchone()
        except sqlite3.OperationalError:
            return (0, 0)
    return int(row[0]), int(row[1])


async def test_readings_keep_arriving_while_the_broker_is_down(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    simulator = driver("nonin").simulator
    assert simulator is not None
    db = tmp_path / "unit.db"
    stop = asyncio.Event()
    central = asyncio.create_task(
        Receiver("127.0.0.1", mosquitto.port, tmp_path / "central.db", client_id="rx-live").run(
            stop
        )
    )
    with (
        PtyDevice(simulator({"data_format": 7}, 1), link=tmp_path / "tty-ox") as oximeter,
        (tmp_path / "agent.log").open("wb") as log,
    ):
        config = _config(tmp_path, mosquitto.port, oximeter.path)
        agent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge_agent",
            "run",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        try:
            await wait_until(lambda: _counts(db)[1] >= 20, 60, "readings acknowledged online")
            mosquitto.kill()  # the mobile link drops while the oximeter streams
            stored_at_loss = _counts(db)[0]
            # Beyond the linger and the keepalive: the agent knows it is offline. The
            # oximeter sends 3 frames a second; 40 more readings is ~13 s of streaming.
            await wait_until(
                lambda: _counts(db)[0] >= stored_at_loss + 40,
                60,
                "readings stored while the broker is down",
            )
            assert agent.returncode is None, "the agent exited while offline"
            mosquitto.start()  # the link returns: the agent recovers by itself
            await wait_until(
                lambda: _counts(db)[1] >= stored_at_loss + 40,
                60,
                "the offline readings acknowledged after the link returned",
            )
        finally:
            if agent.returncode is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(agent.wait(), 20)
                except TimeoutError:  # a frozen agent does not stop on SIGTERM either
                    agent.kill()
                    await agent.wait()
            stop.set()
            await central


async def test_the_sync_loop_sleeps_while_offline(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Offline with readings lingering, the sync loop waits for an event: it does not turn.
    (A past deadline that nothing re-arms fires once; kept, every turn would be due at once:
    a loop that yields each turn still burns a core.)"""
    from edge_agent.models import measurement
    from edge_agent.settings import (
        BrokerSettings,
        Settings,
        StoreSettings,
        SyncSettings,
        UnitSettings,
    )
    from edge_agent.store.writer import Store
    from sync.daemon import SyncDaemon

    cfg = Settings(
        unit=UnitSettings(id=UNIT),
        store=StoreSettings(path=tmp_path / "unit.db"),
        broker=BrokerSettings(host="127.0.0.1", port=mosquitto.port, tls=False, keepalive_s=5),
        sync=SyncSettings(linger_s=2.0, ack_timeout_s=5.0),
    )
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        daemon = SyncDaemon(store, cfg)
        task = asyncio.create_task(daemon.run(stop))
        try:
            await wait_until(lambda: daemon.connected, 30, "connected")
            # a reading that lingers for company (a deadline 2 s ahead), then the link drops
            await asyncio.wrap_future(store.append("ox", [measurement("spo2", 97.0)]))
            await wait_until(lambda: "linger" in daemon._deadlines, 10, "the linger armed")
            mosquitto.kill()
            await wait_until(lambda: not daemon.connected, 30, "the link loss noticed")
            await asyncio.sleep(2.5)  # past the linger deadline of that reading
            before = daemon.wakeups
            await asyncio.sleep(2.0)  # loop time: how often did the sync loop turn meanwhile?
            turns = daemon.wakeups - before
            # paho's reconnect attempts wake it a few times a second at most; a spin is ~10^5
            assert turns < 50, f"the offline sync loop turned {turns} times in 2 s"
        finally:
            stop.set()
            await task
