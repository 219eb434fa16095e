"""``edge-agent start`` makes sure the agent runs: the systemd service when the unit has one,
else ``edge-agent run`` in the background, detached, logging beside the store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from edge_agent.console.checklist import AgentState

SERVICE: Final = "edge-agent"
UNIT_FILES: Final = (
    Path("/etc/systemd/system/edge-agent.service"),
    Path("/lib/systemd/system/edge-agent.service"),
)
START_TIMEOUT_S: Final = 15.0


def service_installed() -> bool:
    return shutil.which("systemctl") is not None and any(p.exists() for p in UNIT_FILES)


def log_path(store: Path) -> Path:
    return store.with_name("edge-agent.log")


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", *args, SERVICE], capture_output=True, text=True, timeout=60, check=False
    )


def _answer_pid(store: Path) -> tuple[AgentState | None, int | None]:
    """What the agent answers from its event loop (:mod:`edge_agent.service.heartbeat`): its state
    when it runs but cannot be asked (frozen, another user's), and the pid that answered."""
    from edge_agent.service.heartbeat import ask_any

    live = ask_any(store)
    if live.state == "answering":
        pid = (live.answer or {}).get("pid")
        return "running", pid if isinstance(pid, int) else None
    if live.state in ("not_answering", "forbidden"):
        return ("not_answering" if live.state == "not_answering" else "forbidden"), None
    return None, None


def ensure_running(config: Path, store: Path) -> tuple[AgentState, str]:
    """(what was done, where it logs). Never raises for a failed start: the nurse sees the
    fix on the checklist."""
    if service_installed():
        if _systemctl("is-active").stdout.strip() == "active":
            return "running", "journalctl -u edge-agent"
        started = _systemctl("start")
        state: AgentState = "started_service" if started.returncode == 0 else "start_failed"
        return state, "journalctl -u edge-agent"
    found, _ = _answer_pid(store)
    if found is not None:  # running, or frozen: never a second agent on the same store
        return found, str(log_path(store))
    log = log_path(store)
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
    except OSError:
        return "start_failed", str(log)
    with out:
        # posix_spawn, not Popen: the agent outlives this command (its own session), and
        # nothing here waits for it beyond the start.
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "edge_agent", "run", "--config", str(config)],
            {**os.environ, "PYTHONUNBUFFERED": "1"},
            setsid=True,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, out.fileno(), 2),
            ],
        )
    # Ready when it answers from its event loop.
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return "start_failed", str(log)
        if _answer_pid(store)[1] == pid:
            return "started_background", str(log)
        time.sleep(0.1)  # polling the new process's heartbeat, bounded by the deadline
    return "started_background", str(log)
