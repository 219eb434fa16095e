"""A unit for the console tests: a real config, a real store, a real agent process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_agent.store.disk_status import read_status

ROOT = Path(__file__).resolve().parents[2]


def unit_config(
    tmp: Path,
    *,
    lang: str = "fr",
    device: str | None = None,
    broker_port: int | None = None,
    console_port: int | None = None,
    extra: str = "",
) -> Path:
    text = f'[unit]\nid = "mmu-01"\nlanguage = "{lang}"\n[store]\npath = "{tmp / "unit.db"}"\n'
    if broker_port is not None:
        text += (
            f'[broker]\nhost = "127.0.0.1"\nport = {broker_port}\ntls = false\n'
            "[sync]\nlinger_s = 0.2\nstatus_interval_s = 1.0\n"
        )
    if console_port is not None:
        text += f"[console]\nenabled = true\nport = {console_port}\n"
    text += extra
    if device is not None:
        text += (
            f'[[devices]]\nid = "ox"\nkind = "nonin"\nport = "{device}"\n'
            "options = { data_format = 2 }\n"
        )
    cfg = tmp / "unit.toml"
    cfg.write_text(text)
    cfg.chmod(0o640)
    return cfg


def lan_tls(tmp: Path) -> str:
    """``[console]`` lines for a console off loopback (served over HTTPS): a certificate made
    like `edge-agent console cert` makes it, for the test addresses (127.0.0.2 is "the LAN")."""
    from datetime import UTC, datetime

    from edge_agent.console.tls import make_certificate

    cert, key = tmp / "console.pem", tmp / "console.key"
    if not cert.exists():
        cert_pem, key_pem = make_certificate(
            "mmu-01", ["localhost"], ["127.0.0.1", "127.0.0.2"], datetime.now(UTC)
        )
        key.write_bytes(key_pem)
        key.chmod(0o600)
        cert.write_bytes(cert_pem)
    return f'cert_file = "{cert}"\nkey_file = "{key}"\n'


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def wait_for(what: str, check: object, timeout: float = 20.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a real process's state, bounded by the deadline


def agent_pid(store: Path) -> int | None:
    status = read_status(store)
    return status["pid"] if status and status.get("agent_running") else None


def sync_connected(store: Path) -> bool:
    import sqlite3

    if not store.exists():
        return False
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM agent_state WHERE key = 'sync'").fetchone()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return bool(row and json.loads(row[0]).get("connected"))


@contextmanager
def running_agent(cfg: Path, store: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (store.parent / "agent.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
        stdout=log,
        stderr=log,
        env=env(),
    )
    try:
        wait_for("the agent's status file", lambda: agent_pid(store) == proc.pid)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def stop_pid(pid: int) -> None:
    """Stop an agent `edge-agent start` spawned (by its pid, from its status file)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)  # waiting for the process to exit, bounded by the deadline
    os.kill(pid, signal.SIGKILL)
