"""The real agent on a real full disk (FAULT-TESTING.md §2.4): a 3 MiB tmpfs, a Nonin on a pty.

The tmpfs is mounted under the test's directory (not in a private namespace: SQLite resolves
``/proc/<pid>/root`` to ``/``, so the test could not read the store there) and unmounted
afterwards. Checked: the agent is
idle while the disk is full (CPU time from ``/proc/<pid>/stat``), the CLI sees "disk full" and
the device's ``store-full`` at once, every reading the oximeter sent while the disk was full
is stored once space returns, in order, stamped when it arrived; SIGTERM on a full disk stops
the agent within 2 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.simulators.base import PtyDevice
from drivers.simulators.nonin import NoninModel
from edge_agent.store.disk_status import read_status

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount a tmpfs"
)
TICKS = os.sysconf("SC_CLK_TCK")


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs under the test's own directory, unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> None:
    """Write zeros until the disk refuses (unbuffered: nothing left to flush at close)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def readings(db: Path) -> list[tuple[float | None, str]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT value, received_at FROM readings WHERE quantity = 'spo2' ORDER BY seq"
        ).fetchall()
    except sqlite3.OperationalError:  # the agent is still creating the store
        return []
    finally:
        conn.close()


def epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_agent_on_a_full_tmpfs_idles_reports_keeps_readings_and_stops(
    tmp_path: Path, tmpfs: Path
) -> None:
    mnt = view = tmpfs
    model = NoninModel(2, seed=7)  # a packet every 1/3 s
    with PtyDevice(model) as device:
        config = tmp_path / "unit.toml"
        config.write_text(
            f'[unit]\nid = "mmu-01"\n[store]\npath = "{mnt / "unit.db"}"\n'
            "group_wait_ms = 5\nreserve_kib = 16\n"
            f'[[devices]]\nid = "ox"\nkind = "nonin"\nport = "{device.path}"\n'
            "options = { data_format = 2 }\n"
        )
        log = (tmp_path / "agent.log").open("w")
        agent = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "--log-level", "info", "run", "-c", str(config)],
            stderr=log,
            env={**os.environ, "PYTHONPATH": str(Path.cwd())},
        )
        try:
            db = view / "unit.db"
            wait_for("readings", lambda: db.exists() and len(readings(db)) >= 3)
            status = view / "unit.db.status.json"
            assert (view / "unit.db.reserve").exists()

            # --- fill the disk ------------------------------------------------------------
            sent_before = len(model.sent_values)
            full_at = time.time()
            fill(view / "filler")
            state = wait_for(
                "disk full in the status file",
                lambda: (
                    (s := read_status(view / "unit.db"))
                    and s["disk"] == "full"
                    and s["devices"].get("ox") == "store-full"
                    and s
                ),
            )
            assert state["agent_running"]
            check = subprocess.run(
                [sys.executable, "-m", "edge_agent", "db", "check", "--db", str(db)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert check.returncode == 1, check.stdout + check.stderr
            assert "disk:                  full" in check.stdout
            assert "device ox: store-full" in check.stdout

            # Idle while full: CPU time over 5 s, from the kernel's accounting.
            before = cpu_seconds(agent.pid)
            time.sleep(5.0)
            used = cpu_seconds(agent.pid) - before
            assert used < 0.5, f"agent used {used:.2f} s of CPU in 5 s on a full disk"

            # --- free space: everything sent meanwhile is written, stamped when it arrived -
            sent_during = len(model.sent_values)
            freed_at = time.time()
            (view / "filler").unlink()
            wait_for(
                "disk ok",
                lambda: (s := read_status(view / "unit.db")) and s["disk"] == "ok",
                timeout=10,
            )
            rows = wait_for(
                "the held readings", lambda: (r := readings(db)) and len(r) >= sent_during and r
            )
            sent = [float(spo2) for spo2, _ in model.sent_values[: len(rows)]]
            assert [v for v, _ in rows] == sent[: len(rows)]  # every one, once, in order
            during = [epoch(at) for _, at in rows[sent_before:sent_during]]
            assert len(during) >= 15
            assert min(during) < full_at + 1.5 and max(during) > freed_at - 1.5
            assert max(during) - min(during) > 0.7 * (freed_at - full_at)  # spread, not bunched
            assert during == sorted(during)

            # --- SIGTERM on a full disk: honoured within 2 s ------------------------------
            fill(view / "filler")
            wait_for(
                "disk full again",
                lambda: (s := read_status(view / "unit.db")) and s["disk"] == "full" and s,
            )
            stopped = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=5)
            assert time.monotonic() - stopped < 2.0
            last = json.loads(status.read_text())
            assert last["disk"] == "full"  # and what memory held is counted, not hidden
            assert last["lost_at_stop"] == last["buffered"]
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
            log.close()
    text = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in text
    assert text.count("commit of") < 20  # not the same error in a loop
