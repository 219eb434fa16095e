"""A real Mosquitto broker for tests, on a free loopback port, started and stopped by the test.

``MosquittoBroker.restart()`` keeps the port (and, with persistence, the sessions), so tests
can kill the broker mid-batch and bring it back.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # polling a port that is coming up: bounded by the deadline


class MosquittoBroker:
    def __init__(
        self,
        workdir: Path,
        *,
        extra_config: str = "",
        port: int | None = None,
        anonymous: bool = True,
    ) -> None:
        if not os.path.exists(MOSQUITTO):
            pytest.fail(
                "mosquitto is not installed: run the README test command "
                "(bash scripts/test), which installs it"
            )
        self.workdir = workdir
        self.port = port or free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.extra_config = extra_config
        self.anonymous = anonymous
        self._proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 100000\n"
            # As root, Mosquitto drops to the "mosquitto" user and cannot read the test's
            # 0700 temporary folders: keep root (tests only).
            + ("user root\n" if os.geteuid() == 0 else "")
            + f"{self.extra_config}\n"
        )

    def start(self) -> MosquittoBroker:
        self.write_config()
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(self.port)
        except OSError:
            self.kill()
            tail = self.log.read_text()[-2000:]
            raise RuntimeError(f"mosquitto did not start:\n{tail}") from None
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its configuration again (its ACL and password files)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGHUP)

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(tmp_path_factory.mktemp("mosquitto")).start()
    try:
        yield broker
    finally:
        broker.stop()
