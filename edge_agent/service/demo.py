"""The demo: simulated devices on pseudo-terminals, the real agent, a throwaway store.

Everything is real except the devices: the drivers open real ptys with pyserial, readings are
committed to a real SQLite store, and with a broker the real sync daemon pushes them to a real
MQTT broker where a local reference receiver stores and acknowledges them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.registry import driver
from drivers.simulators.base import PtyDevice
from edge_agent.service.supervisor import Supervisor
from edge_agent.settings import (
    BrokerSettings,
    DeviceSettings,
    Settings,
    StoreSettings,
    SyncSettings,
    UnitSettings,
)
from edge_agent.store.writer import Store

if TYPE_CHECKING:
    from sqlite_utils import Database

# (device id, kind, options): the demo van's equipment
DEMO_DEVICES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("oximeter-nonin", "nonin", {"data_format": 7}),
    ("oximeter-cms50", "cms50", {}),
    ("monitor-hl7", "hl7-mllp", {}),
    ("analyser-astm", "astm", {"test_map": "astm-test-map.json"}),
    ("scale", "scale", {}),
    ("gps", "nmea", {}),
)
# The analyser's local test codes, as a site would map them (see config/devices/).
DEMO_TEST_MAP = {
    "CHOL": {"quantity": "cholesterol", "loinc": "2093-3"},
    "HDL": {"quantity": "hdl_cholesterol", "loinc": "2085-9"},
    "TRIG": {"quantity": "triglycerides", "loinc": "2571-8"},
    "LDL": {"quantity": "ldl_cholesterol", "loinc": "13457-7"},
    "GLU": {"quantity": "glucose", "loinc": "2345-7"},
    "CRP": {"quantity": "crp", "loinc": "1988-5"},
    "HB": {"quantity": "hemoglobin", "loinc": "718-7"},
}


@dataclass
class DemoResult:
    seconds: float
    offline: bool
    broker: str | None
    store: str
    readings_stored: int = 0
    readings_acknowledged: int = 0
    readings_pending_sync: int = 0
    readings_central: int | None = None
    readings_attributed: int = 0  # taken during the simulated patient's encounter
    rejects: int = 0
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_settings(workdir: Path, broker: tuple[str, int] | None, ports: dict[str, str]) -> Settings:
    return Settings(
        unit=UnitSettings(id="mmu-demo", language="en"),
        store=StoreSettings(path=workdir / "unit.db"),
        broker=BrokerSettings(host=broker[0], port=broker[1], tls=False) if broker else None,
        sync=SyncSettings(batch_size=100, ack_timeout_s=5.0),
        devices=[
            DeviceSettings(
                id=dev_id, kind=kind, port=ports[dev_id], options=_local(options, workdir)
            )
            for dev_id, kind, options in DEMO_DEVICES
        ],
    )


def _local(options: dict[str, Any], workdir: Path) -> dict[str, Any]:
    if "test_map" in options:
        path = workdir / options["test_map"]
        path.write_text(json.dumps(DEMO_TEST_MAP), encoding="utf-8")
        return {**options, "test_map": str(path)}
    return options


def central_count(path: Path) -> int | None:
    """Readings held by the demo's central receiver (None before it created its store)."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        table = next((t for t in ("observations", "readings") if t in tables), None)
        if table is None:
            return None
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


async def run_demo(
    seconds: float,
    broker: tuple[str, int] | None,
    workdir: Path,
    progress: Callable[[str], None] = lambda _: None,
    drain_timeout: float = 30.0,
) -> DemoResult:
    sims: dict[str, PtyDevice] = {}
    for seed, (dev_id, kind, options) in enumerate(DEMO_DEVICES):
        simulator = driver(kind).simulator
        assert simulator is not None
        sims[dev_id] = PtyDevice(simulator(options, seed), link=workdir / f"tty-{dev_id}").start()
    settings = demo_settings(workdir, broker, {k: s.path for k, s in sims.items()})
    result = DemoResult(
        seconds=seconds,
        offline=broker is None,
        broker=f"{broker[0]}:{broker[1]}" if broker else None,
        store=str(settings.store.path),
    )
    central_db = workdir / "central.db"
    try:
        with Store(settings.store.path, settings.unit.id) as store:
            acquire_stop, sync_stop = asyncio.Event(), asyncio.Event()
            supervisor = Supervisor(settings, store, sync=False)
            tasks = [asyncio.create_task(supervisor.run(acquire_stop))]
            if broker is not None:
                from sync.central.receiver import Receiver
                from sync.daemon import SyncDaemon

                receiver = Receiver(broker[0], broker[1], central_db)
                tasks.append(asyncio.create_task(receiver.run(sync_stop)))
                tasks.append(asyncio.create_task(SyncDaemon(store, settings).run(sync_stop)))
            start = time.monotonic()
            # A simulated patient's encounter for the middle third of the run, opened and
            # closed as the console does inside the agent (through its writer), so the uplink
            # carries attributed and unattributed readings.
            steps = [(seconds / 3, "open"), (2 * seconds / 3, "close")]
            while (left := seconds - (time.monotonic() - start)) > 0:
                next_step = steps[0][0] - (time.monotonic() - start) if steps else left
                await asyncio.sleep(max(0.01, min(1.0, left, next_step)))
                while steps and time.monotonic() - start >= steps[0][0]:
                    step = steps.pop(0)[1]
                    await asyncio.to_thread(_encounter_step, settings, step, store)
                    progress(
                        f"simulated patient: encounter {'opened' if step == 'open' else 'closed'}"
                    )
                progress(_line(time.monotonic() - start, store.stats(), broker is not None))
            if steps and steps[0][1] == "close":
                await asyncio.to_thread(_encounter_step, settings, "close", store)
            acquire_stop.set()
            await tasks[0]
            if broker is not None:
                progress("devices stopped; waiting for central to acknowledge the backlog")
                deadline = time.monotonic() + drain_timeout
                while store.stats()["readings_pending_sync"] and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
            sync_stop.set()
            for task in tasks[1:]:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 10)
            stats = store.stats()
            result.readings_stored = stats["readings_total"]
            result.readings_acknowledged = stats["readings_sent"]
            result.readings_pending_sync = stats["readings_pending_sync"]
            result.rejects = stats["rejects"]
            result.readings_attributed = store.read(
                lambda db: int(
                    db.execute(
                        "SELECT count(*) FROM readings WHERE encounter_id IS NOT NULL"
                    ).fetchone()[0]
                )
            )
            result.devices = {k: _public(v) for k, v in supervisor.sink.devices.items()}
    finally:
        for sim in sims.values():
            sim.stop()
    if broker is not None:
        result.readings_central = central_count(central_db)
    return result


DEMO_PATIENT = ("platform", "DEMO-000042")  # a simulated patient (no real person)


def _encounter_step(settings: Settings, step: str, store: Store) -> None:
    """The patient's open/close through the store's writer (this process's only writer)."""
    from edge_agent.store.encounters import close_encounter, open_encounter

    def op(db: Database) -> None:
        store.encounters.invalidate()  # the writer's own commits do not move data_version
        if step == "open":
            open_encounter(
                db,
                settings.patients.systems[DEMO_PATIENT[0]],
                DEMO_PATIENT[1],
                practitioner_role="nurse",
            )
        else:
            close_encounter(db)

    store.call(op)


def _public(state: Any) -> dict[str, Any]:
    return {"state": state.state, "readings": state.readings, "rejects": state.rejects}


def _line(elapsed: float, stats: dict[str, int], syncing: bool) -> str:
    text = f"{elapsed:5.1f} s: {stats['readings_total']} readings stored"
    if syncing:
        text += f", {stats['readings_sent']} acknowledged by central"
    return text
