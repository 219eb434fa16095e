"""The screens take the agent's liveness from its event loop, not from a file.

Real parts: the agent runs as its own process (``edge-agent run``) on a simulated Nonin
oximeter (a real pty); ``status``, ``sync status`` and ``start`` run as subprocesses. The
agent is frozen with SIGSTOP (its heartbeat socket still accepts connections, as the kernel
does for a stopped process, but nobody answers), then thawed, then killed. The oximeter is
paused (plugged, port open, silent) and must turn amber. The socket tests bind real unix
sockets; the silence rule is pure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drivers.simulators.base import PtyDevice
from drivers.simulators.nonin import NoninModel
from edge_agent.console.present import hour_minute
from edge_agent.i18n import translator
from edge_agent.service.device_silence import silent_since
from edge_agent.service.heartbeat import TIMEOUT_S, ask, ask_any, socket_path
from tests.console.unit import env, unit_config, wait_for

NOW = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)


def _iso(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def test_a_connected_streaming_device_is_silent_after_five_of_its_intervals() -> None:
    connected, last = _iso(60), _iso(6)
    assert silent_since(1.0, "connected", connected, last, NOW) == last
    assert silent_since(1.0, "connected", connected, _iso(4), NOW) is None  # still sending
    # plugged, never sent anything since it was connected: silent since the connection
    assert silent_since(1.0, "connected", _iso(30), None, NOW) == _iso(30)
    # a reading from before the (re)connection: silent since the connection
    assert silent_since(1.0, "connected", _iso(10), _iso(300), NOW) == _iso(10)
    # episodic devices (no interval) and devices not connected are never "silent"
    assert silent_since(None, "connected", connected, _iso(600), NOW) is None
    assert silent_since(1.0, "disconnected", connected, _iso(600), NOW) is None
    assert silent_since(1.0, "connected", None, None, NOW) is None


def test_an_agent_that_is_not_there_or_does_not_answer_is_told_apart(tmp_path: Path) -> None:
    store = tmp_path / "unit.db"
    assert ask_any(store).state == "not_running"  # no socket
    path = socket_path(store)
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()  # a crashed agent's file: nobody listens
    assert ask(path).state == "not_running"
    path.unlink()
    frozen = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    frozen.bind(str(path))
    frozen.listen(4)  # the kernel accepts connections; nobody reads or answers
    try:
        started = time.monotonic()
        assert ask(path, timeout=0.5).state == "not_answering"
        assert time.monotonic() - started < 10  # it gave up: bounded, not a speed figure
    finally:
        frozen.close()


def test_the_heartbeat_socket_is_private_and_works_in_a_deep_folder(tmp_path: Path) -> None:
    import asyncio

    from edge_agent.service.heartbeat import serve

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = socket_path(deep / "unit.db")
    assert len(str(path)) > 108  # longer than sun_path: reached through /proc/self/fd

    async def scenario() -> tuple[Any, int]:
        stop = asyncio.Event()
        task = asyncio.create_task(serve(path, lambda: {"pid": 7}, stop))
        for _ in range(200):
            if path.exists():
                break
            await asyncio.sleep(0.01)  # the server binds: bounded
        mode = stat.S_IMODE(path.stat().st_mode)
        live = await asyncio.to_thread(ask, path)
        stop.set()
        await task
        return live, mode

    live, mode = asyncio.run(scenario())
    assert live.state == "answering" and live.answer == {"pid": 7}
    assert mode == 0o600 and not path.exists()  # removed on the way out


def _cli(cfg: Path, *args: str) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", *args, "--config", str(cfg), "--json"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
    )
    took = time.monotonic() - started
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout), took


def _tiles(body: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {t["key"]: t for t in body["tiles"]}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, PtyDevice]]:
    with PtyDevice(NoninModel(7, seed=5)) as device:
        cfg = unit_config(
            tmp_path, lang="en", device=device.path, extra="[console]\nenabled = false\n"
        )
        cfg.write_text(cfg.read_text().replace("data_format = 2", "data_format = 7"))
        store = tmp_path / "unit.db"
        log = (tmp_path / "agent.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
            stdout=log,
            stderr=log,
            env=env(),
        )
        try:
            wait_for("the agent's answer", lambda: ask_any(store).answering, timeout=30)
            yield proc, cfg, device
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()


def test_a_frozen_agent_is_not_answering_on_every_screen(
    agent: tuple[subprocess.Popen[bytes], Path, PtyDevice],
) -> None:
    proc, cfg, _ = agent
    tr = translator("en")
    body, _ = _cli(cfg, "status")
    assert _tiles(body)["agent"]["detail"] == tr("agent.running")
    assert body["agent"]["loop"]["stalls"] >= 0 and "p99_ms" in body["agent"]["loop"]
    sync, _ = _cli(cfg, "sync", "status")
    assert sync["agent"] == "answering" and sync["agent_running"] is True
    os.kill(proc.pid, signal.SIGSTOP)  # the fault under test: the agent's loop is frozen
    try:
        body, took = _cli(cfg, "status")
        agent_tile = _tiles(body)["agent"]
        assert (agent_tile["status"], agent_tile["detail"]) == ("fail", tr("agent.not_answering"))
        assert body["agent"]["state"] == "not_answering", took
        sync, _ = _cli(cfg, "sync", "status")
        assert (sync["agent"], sync["agent_running"], sync["connected"]) == (
            "not_answering",
            False,
            False,
        )
        started, _ = _cli(cfg, "start", "--no-ble-scan")
        assert _tiles(started)["agent"]["detail"] == tr("agent.not_answering")
        assert not started["ready"]
        print(f"status on a frozen agent answered in {took:.2f} s (timeout {TIMEOUT_S} s)")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    wait_for("the thawed agent's answer", lambda: ask_any(cfg.parent / "unit.db").answering)
    live = ask_any(cfg.parent / "unit.db")
    assert live.answer is not None and live.answer["pid"] == proc.pid  # no second agent
    os.kill(proc.pid, signal.SIGKILL)  # dead: its socket file and status file stay behind
    proc.wait()
    assert socket_path(cfg.parent / "unit.db").exists()
    body, _ = _cli(cfg, "status")
    assert _tiles(body)["agent"]["detail"] == tr("agent.not_running")


def test_a_paused_oximeter_turns_amber_silent_since(
    agent: tuple[subprocess.Popen[bytes], Path, PtyDevice],
) -> None:
    _, cfg, device = agent
    tr = translator("en")
    store = cfg.parent / "unit.db"

    def device_tile() -> dict[str, str]:
        return _tiles(_cli(cfg, "status")[0])["device:ox"]

    wait_for(
        "a reading",
        lambda: (
            (ask_any(store).answer or {}).get("devices", {}).get("ox", {}).get("last_reading_at")
            is not None
        ),
        timeout=30,
    )
    assert device_tile()["status"] == "ok"
    device.paused.set()  # plugged, port open, nothing sent
    wait_for(
        "the oximeter silent",
        lambda: (ask_any(store).answer or {})["devices"]["ox"]["silent_since"] is not None,
        timeout=60,
    )
    body, _ = _cli(cfg, "status")
    since = body["agent"]["silent"]["ox"]
    tile = _tiles(body)["device:ox"]
    assert (tile["status"], tile["detail"]) == (
        "warn",
        tr("device.silent", time=hour_minute(since)),
    )
    assert tile["fix"] == tr("fix.device_silent", noun=tr("device.noun.nonin"), device="ox")
    fr = translator("fr")("device.silent", time=hour_minute(since))
    assert fr.startswith("Muet depuis ")
    device.paused.clear()
    wait_for("the oximeter sending again", lambda: device_tile()["status"] == "ok", timeout=60)
