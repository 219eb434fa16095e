"""`edge-agent sync status|now|test` against a real store, daemon and broker."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.models import measurement
from edge_agent.service.supervisor import Supervisor
from edge_agent.store.writer import Store
from tests.broker import MosquittoBroker, free_port
from tests.sync.checker import wait_until
from tests.sync.test_faults import settings, write_config

runner = CliRunner()


def status_json(db: Path) -> dict[str, object]:
    result = runner.invoke(app, ["sync", "status", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


async def test_status_and_now_with_a_running_daemon(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port)
    db = cfg.store.path
    with Store(db, "mmu-t") as store:
        for _ in range(5):
            store.append("ox", [measurement("spo2", 97.0)]).result()
    before = status_json(db)
    assert before["agent_running"] is False and before["backlog"] == {"readings": 5}
    result = runner.invoke(app, ["sync", "now", "--db", str(db)])
    assert result.exit_code == 1 and "not running" in result.output
    stop = asyncio.Event()
    with Store(db, "mmu-t") as store:
        # A sync-only agent: it answers `sync status` from its event loop (its heartbeat),
        # so the command runs in a thread, not blocking that loop.
        task = asyncio.create_task(Supervisor(cfg, store, acquire=False).run(stop))
        # nobody acknowledges (no receiver): the backlog stays, the link is up
        deadline = time.monotonic() + 20
        while (await asyncio.to_thread(status_json, db))["connected"] is not True:
            assert time.monotonic() < deadline, "status: connected"
            await asyncio.sleep(0.1)  # polling the agent's answer, bounded by the deadline
        after = await asyncio.to_thread(status_json, db)
        assert after["backlog"] == {"readings": 5} and after["agent"] == "answering"
        assert isinstance(after["loop"], dict) and after["loop"]["stalls"] >= 0
        result = runner.invoke(app, ["sync", "now", "--db", str(db)])
        assert result.exit_code == 0, result.output
        await wait_until(
            lambda: (
                store.call(
                    lambda d: d.execute(
                        "SELECT count(*) FROM agent_state WHERE key = 'sync-now'"
                    ).fetchone()[0]
                )
                == 0
            ),
            10,
            "the daemon took the request",
        )
        stop.set()
        await task


def test_link_test_round_trip_and_failure(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    config = tmp_path / "unit.toml"
    write_config(settings(tmp_path, mosquitto.port), config)
    result = runner.invoke(app, ["sync", "test", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["round_trip_ms"] >= 0 and data["tls"] is False
    write_config(settings(tmp_path, free_port()), config)  # nothing listens there
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "sync", "test", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 5 and "connection refused" in proc.stderr
    assert "nothing listens on port" in proc.stderr and "Traceback" not in proc.stderr


def test_link_failures_are_told_apart_and_name_the_host() -> None:
    import socket

    from sync.diagnostics import explain_unreachable

    dns = explain_unreachable("central.example", 8883, socket.gaierror(-2, "Name unknown"))
    refused = explain_unreachable("10.1.2.3", 8883, ConnectionRefusedError(111, "refused"))
    silent = explain_unreachable("10.1.2.3", 8883, TimeoutError())
    assert "central.example:8883" in dns and "unknown host" in dns
    assert "10.1.2.3:8883" in refused and "connection refused" in refused
    assert "no answer" in silent
    assert len({dns, refused, silent}) == 3
