"""systemd notify protocol: READY=1, WATCHDOG=1 only while the writer and the loop live,
STOPPING=1 and a stop within 2 s on SIGTERM. A fake notify socket (a datagram socket the test
binds) stands in for systemd; the store, the agent and the pty device are real."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.simulators.base import PtyDevice
from drivers.simulators.nonin import NoninModel
from edge_agent.service.loop_lag import LagMonitor
from edge_agent.service.systemd_notify import (
    Notifier,
    notify_address,
    should_ping,
    watchdog_period,
    writer_answering,
)
from edge_agent.store.writer import Store


class FakeSystemd:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[tuple[float, str]] = []

    def pump(self, timeout: float) -> list[str]:
        """Datagrams arriving within ``timeout`` s (each with its arrival time kept)."""
        self.sock.settimeout(timeout)
        got = []
        try:
            while True:
                msg = self.sock.recv(4096).decode()
                self.received.append((time.monotonic(), msg))
                got.append(msg)
                self.sock.settimeout(0.0)
        except (TimeoutError, BlockingIOError):
            return got

    def wait_for(self, what: str, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.pump(min(0.2, max(0.0, deadline - time.monotonic()))):
                if what in msg.split("\n"):
                    return self.received[-1][0]
        raise AssertionError(f"no {what} within {timeout} s; got {self.received}")


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify")
    try:
        yield fake
    finally:
        fake.sock.close()


def test_environment_is_read_as_systemd_writes_it() -> None:
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": "relative"}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@abstract"}) == "\0abstract"
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}, 5) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "5"}, 5) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "6"}, 5) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}, 5) is None
    assert watchdog_period({}, 5) is None
    assert writer_answering(True, None) and writer_answering(True, True)
    assert not writer_answering(True, False)
    assert not writer_answering(False, True)


def test_a_ping_needs_both_the_loop_turning_and_the_writer_answering() -> None:
    assert should_ping(True, True)
    assert not should_ping(False, True) and not should_ping(True, False)
    assert not should_ping(False, False)


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier({})
    notifier.ready()
    assert not notifier.active and notifier.sent == []


def test_a_hung_writer_stops_the_pings_and_they_resume_when_it_answers(
    tmp_path: Path, systemd: FakeSystemd
) -> None:
    period = 0.2  # pings every 0.1 s
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": str(int(period * 1e6))}
    release = threading.Event()
    with Store(tmp_path / "unit.db", "mmu-01") as store:

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(Notifier(env).watchdog(store, stop))
            try:
                await asyncio.to_thread(systemd.wait_for, "WATCHDOG=1")
                await asyncio.to_thread(systemd.wait_for, "WATCHDOG=1")
                store.submit(lambda db: release.wait(30))  # the writer hangs in a commit
                hung_at = time.monotonic()

                # At most one ping (its probe committed before the hang) then silence:
                # wait for ten periods in a row without a ping.
                def silent() -> bool:
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        if not systemd.pump(period * 10):
                            return True
                    return False

                assert await asyncio.to_thread(silent)
                late = [
                    t for t, m in systemd.received if t > hung_at + period and m == "WATCHDOG=1"
                ]
                assert len(late) <= 1, late
                release.set()
                resumed = await asyncio.to_thread(systemd.wait_for, "WATCHDOG=1")
                assert resumed > hung_at
            finally:
                release.set()
                stop.set()
                await task

        asyncio.run(scenario())


def test_a_blocked_event_loop_sends_no_pings(tmp_path: Path, systemd: FakeSystemd) -> None:
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "200000"}
    with Store(tmp_path / "unit.db", "mmu-01") as store:

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(Notifier(env).watchdog(store, stop))
            await asyncio.to_thread(systemd.wait_for, "WATCHDOG=1")
            systemd.pump(0)
            blocked_at = time.monotonic()
            time.sleep(1.0)  # the loop itself is blocked: this is the fault under test
            unblocked_at = time.monotonic()
            systemd.pump(0)
            during = [t for t, m in systemd.received if blocked_at < t < unblocked_at]
            assert during == []
            stop.set()
            await task

        asyncio.run(scenario())


def test_a_stalled_loop_that_still_turns_sends_no_pings(
    tmp_path: Path, systemd: FakeSystemd
) -> None:
    """A task blocks the loop 0.5 s at each of its turns and yields in between: the ping task
    still gets turns (the old code pinged at each), but every task waits longer than the
    stall threshold, so systemd must not be told the agent is healthy."""
    env = {"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "200000"}  # pings every 0.1 s
    with Store(tmp_path / "unit.db", "mmu-01") as store:

        async def scenario() -> None:
            stop = asyncio.Event()
            monitor = LagMonitor(interval=0.05, threshold=0.25)
            lag = asyncio.create_task(monitor.run(stop))
            task = asyncio.create_task(Notifier(env).watchdog(store, stop, monitor))
            await asyncio.to_thread(systemd.wait_for, "WATCHDOG=1")
            for turn in range(8):  # the fault under test: a turn that blocks, then yields
                time.sleep(0.5)
                await asyncio.sleep(0)
                if turn == 1:  # from the second blocked turn on, the monitor has seen it
                    systemd.pump(0)
            spin_to = time.monotonic()
            during = systemd.pump(0)  # what was sent during turns 2..8 (nothing runs since)
            assert "WATCHDOG=1" not in during, during
            assert monitor.stats.stalls >= 1
            resumed = await asyncio.to_thread(systemd.wait_for, "WATCHDOG=1")
            assert resumed > spin_to
            stop.set()
            await task
            await lag

        asyncio.run(scenario())


def test_the_agent_is_ready_after_store_and_drivers_pings_and_stops_within_2s(
    tmp_path: Path, systemd: FakeSystemd
) -> None:
    with PtyDevice(NoninModel(2, seed=3)) as device:
        config = tmp_path / "unit.toml"
        config.write_text(
            f'[unit]\nid = "mmu-01"\n[store]\npath = "{tmp_path / "unit.db"}"\n'
            f'[[devices]]\nid = "ox"\nkind = "nonin"\nport = "{device.path}"\n'
            "options = { data_format = 2 }\n"
        )
        env = {
            **os.environ,
            "PYTHONPATH": str(Path.cwd()),
            "NOTIFY_SOCKET": str(systemd.path),
            "WATCHDOG_USEC": "400000",
        }
        env.pop("WATCHDOG_PID", None)
        log = tmp_path / "agent.log"
        with log.open("w") as errfile:
            agent = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "-c", str(config)],
                env=env,
                stderr=errfile,
            )
        try:
            ready_at = systemd.wait_for("READY=1", timeout=30)
            assert (tmp_path / "unit.db").exists()  # the store was open before READY
            ready = next(m for _, m in systemd.received if m.startswith("READY=1"))
            assert "STATUS=1 devices" in ready
            systemd.wait_for("WATCHDOG=1")
            second = systemd.wait_for("WATCHDOG=1")
            assert second > ready_at
            term_at = time.monotonic()
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(timeout=10)
            stopped_in = time.monotonic() - term_at
            systemd.wait_for("STOPPING=1", timeout=2)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        err = log.read_text()
        assert code == 0, err
        assert stopped_in < 2.0, stopped_in
        assert "Traceback" not in err
