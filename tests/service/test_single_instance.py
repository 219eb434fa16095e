"""Issue 25, defect 4: one agent per store. Real ``edge-agent run`` processes on one store
(no devices, the broker unreachable: the agent runs offline); nothing mocked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.console.queries import agent_pid
from edge_agent.store.agent_lock import holders
from edge_agent.store.disk_status import read_status, status_path, write_status


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {what}")
        time.sleep(0.05)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "unit.toml"
    path.write_text(
        f'[unit]\nid = "mmu-01"\n[store]\npath = "{tmp_path / "unit.db"}"\n'
        '[broker]\nhost = "127.0.0.1"\nport = 1\ntls = false\n'
    )
    return path


class Agents:
    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.tmp_path, self.config = tmp_path, config
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"agent-{len(self.started)}.log").open("wb")
        with log:
            agent = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "-c", str(self.config), *args],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        self.started.append(agent)
        return agent

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "-c", str(self.config), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop_all(self) -> None:
        for agent in self.started:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
                try:
                    agent.wait(30)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait()


@pytest.fixture
def agents(tmp_path: Path, config: Path) -> Iterator[Agents]:
    found = Agents(tmp_path, config)
    try:
        yield found
    finally:
        found.stop_all()


def test_a_second_agent_on_the_store_is_refused_at_once(tmp_path: Path, agents: Agents) -> None:
    store = tmp_path / "unit.db"
    first = agents.start()
    _wait_for(
        lambda: (read_status(store) or {}).get("pid") == first.pid,
        60,
        "the first agent's status file",
    )
    second = agents.run()  # "at once": bounded by run()'s timeout, never left running
    assert second.returncode == 4, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"pid {first.pid}" in lines[0] and "already running" in lines[0]
    assert first.poll() is None  # the first agent carries on, undisturbed
    assert holders(store) == {"acquire": first.pid, "sync": first.pid}


def test_only_acquire_and_only_sync_may_share_a_store_but_not_a_side(
    tmp_path: Path, agents: Agents
) -> None:
    store = tmp_path / "unit.db"
    acquire = agents.start("--only", "acquire")
    _wait_for(
        lambda: (holders(store) or {}).get("acquire") == acquire.pid, 60, "the acquiring agent"
    )
    sync = agents.start("--only", "sync")
    _wait_for(lambda: (holders(store) or {}).get("sync") == sync.pid, 60, "the syncing agent")
    whole = agents.run()
    assert whole.returncode == 4 and f"pid {acquire.pid}" in whole.stderr
    again = agents.run("--only", "sync")
    assert again.returncode == 4 and f"pid {sync.pid}" in again.stderr
    assert acquire.poll() is None and sync.poll() is None


def test_a_killed_agent_blocks_no_restart_and_its_status_file_is_not_running(
    tmp_path: Path, agents: Agents
) -> None:
    store = tmp_path / "unit.db"
    first = agents.start()
    _wait_for(
        lambda: holders(store) == {"acquire": first.pid, "sync": first.pid}, 60, "the first agent"
    )
    _wait_for(lambda: status_path(store).exists(), 60, "its status file")
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert holders(store) == {}  # the kernel let the locks go; the files stay
    # The dead agent's status file, its pid now another live process's (pid reuse: this
    # test's own pid stands in for it).
    write_status(store, {"disk": "ok"})
    status = read_status(store)
    assert status is not None and status["pid"] == os.getpid()
    assert status["agent_running"] is False
    assert agent_pid(store, None) is None  # what `edge-agent start` asks before starting one

    second = agents.start()
    _wait_for(
        lambda: holders(store) == {"acquire": second.pid, "sync": second.pid},
        60,
        "the new agent to start on the killed one's store",
    )
    _wait_for(
        lambda: (read_status(store) or {}).get("pid") == second.pid,
        60,
        "the new agent's status file",
    )
    assert agent_pid(store, None) == second.pid
