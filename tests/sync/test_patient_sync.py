"""`patient assign` and `patient close` beside a running agent reach central on their own: no
reading needs to follow them. The real `edge-agent run` (a process of its own, both sides, no
devices), the CLI in another process, a real Mosquitto and the reference receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync import fhir
from sync.central.receiver import Receiver
from tests.broker import MosquittoBroker
from tests.sync.checker import wait_until

UNIT = "mmu-ps"
SYSTEM = "urn:mmu:patient:platform"
PATIENT = "CANARY-PS-0042"
ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp: Path, port: int) -> Path:
    path = tmp / "unit.toml"
    path.write_text(
        f'[unit]\nid = "{UNIT}"\n[store]\npath = "{tmp / "unit.db"}"\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\ntls = false\n'
        "[sync]\nack_timeout_s = 2\n"
        f'[patients]\ndefault = "platform"\nsystems = {{ platform = "{SYSTEM}" }}\n',
        encoding="utf-8",
    )
    return path


def patient(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as the nurse runs it: another process than the agent."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "patient", *args, "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def central_rows(central: Path, sql: str) -> list[tuple[Any, ...]]:
    if not central.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{central}?mode=ro", uri=True)) as db:
        try:
            return db.execute(sql).fetchall()
        except sqlite3.OperationalError:  # the receiver has not made its tables yet
            return []


def subjects(central: Path) -> set[str]:
    return {
        json.loads(text)["subject"]["reference"]
        for (text,) in central_rows(central, "SELECT resource FROM observations")
    }


def encounters(central: Path) -> list[dict[str, Any]]:
    return [
        json.loads(text)
        for (text,) in central_rows(
            central, "SELECT resource FROM resources WHERE type = 'Encounter'"
        )
    ]


@contextlib.asynccontextmanager
async def agent_and_central(tmp: Path, port: int) -> AsyncIterator[tuple[Path, Path]]:
    """Three readings with nobody open, held at central; the agent (acquisition and sync in
    one process, as the van runs it) and the receiver keep running."""
    cfg = write_config(tmp, port)
    with Store(tmp / "unit.db", UNIT) as store:
        store.append(
            "cuff", [measurement("systolic_bp", 121.0), measurement("diastolic_bp", 79.0)]
        ).result(10)
        store.append("ox", [measurement("spo2", 97.0)]).result(10)
    central = tmp / "central.db"
    stop = asyncio.Event()
    receiver = asyncio.create_task(
        Receiver("127.0.0.1", port, central, client_id="rx-ps").run(stop)
    )
    log = (tmp / "agent.log").open("wb")
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_agent",
        "run",
        "--config",
        str(cfg),
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        await wait_until(
            lambda: len(central_rows(central, "SELECT id FROM observations")) == 3,
            60,
            "the readings at central",
        )
        yield cfg, central
    finally:
        with contextlib.suppress(ProcessLookupError):
            agent.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(agent.wait(), 30)
        except TimeoutError:
            agent.kill()
            await agent.wait()
        log.close()
        stop.set()
        await receiver


async def test_assign_beside_a_running_agent_reaches_central_without_another_reading(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    async with agent_and_central(tmp_path, mosquitto.port) as (cfg, central):
        unidentified = subjects(central)
        assert len(unidentified) == 1  # the session's unidentified Patient
        await asyncio.to_thread(patient, cfg, "open", PATIENT)
        await asyncio.to_thread(patient, cfg, "assign", "--all")
        named = "urn:uuid:" + fhir.stable_uuid("patient", SYSTEM, PATIENT)
        # No reading follows: the agent is told, and central gets the readings re-attributed.
        await wait_until(
            lambda: subjects(central) == {named},
            30,
            "the assigned readings on the named patient at central",
        )


async def test_a_close_travels_on_its_own(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    async with agent_and_central(tmp_path, mosquitto.port) as (cfg, central):
        await asyncio.to_thread(patient, cfg, "open", PATIENT)
        await asyncio.to_thread(patient, cfg, "assign", "--all")
        await wait_until(
            lambda: [e["status"] for e in encounters(central)] == ["in-progress"],
            30,
            "the open encounter at central",
        )
        await asyncio.to_thread(patient, cfg, "close")
        # No reading after the close: the close still reaches central.
        await wait_until(
            lambda: [e["status"] for e in encounters(central)] == ["finished"],
            30,
            "the finished encounter at central",
        )
        (finished,) = encounters(central)
        assert finished["period"]["end"] >= finished["period"]["start"]
