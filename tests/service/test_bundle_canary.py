"""No patient data in the diagnostics bundle or in any log line: the real agent receives an
HL7 ORU (MLLP over TCP) and an ASTM result message (E1381 on a pty) carrying a canary patient
identifier, name and distinctive values; its debug log and the bundle are searched for them."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from drivers.protocols.mllp import frame
from drivers.simulators.astm_analyser import AstmAnalyserModel, Result, ResultMessage
from drivers.simulators.base import PtyDevice
from drivers.simulators.hl7_monitor import encode_oru
from edge_agent.models import measurement

CANARY_ID = "CNRY7731942"
CANARY_NAME = "Zqxwvjk"
HL7_VALUE = 87.654  # distinctive
ASTM_VALUE = "613.27"


class CanaryAnalyser(AstmAnalyserModel):
    def _new_message(self) -> ResultMessage:
        return ResultMessage(
            patient_id=f"{CANARY_ID}^{CANARY_NAME}",
            specimen_id="S-CNRY",
            results=(Result("GLU", ASTM_VALUE, "mg/dL", "H", "F", "20240315083000"),),
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def count(db: Path, device: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        try:
            return int(
                c.execute(
                    "SELECT count(*) FROM readings WHERE device_id = ?", (device,)
                ).fetchone()[0]
            )
        except sqlite3.OperationalError:
            return 0


def test_canary_patient_data_is_in_no_log_line_and_not_in_the_bundle(tmp_path: Path) -> None:
    mllp_port = free_port()
    db = tmp_path / "unit.db"
    with PtyDevice(CanaryAnalyser(max_messages=1, period=0.2)) as analyser:
        cfg = tmp_path / "unit.toml"
        test_map = Path("config/devices/astm-test-map.example.json").resolve()
        cfg.write_text(
            f'[unit]\nid = "mmu-01"\n[store]\npath = "{db}"\n'
            f'[[devices]]\nid = "monitor"\nkind = "hl7-mllp"\nlisten = "127.0.0.1:{mllp_port}"\n'
            f'[[devices]]\nid = "analyser"\nkind = "astm"\nport = "{analyser.path}"\n'
            f'options = {{ test_map = "{test_map}" }}\n'
        )
        log = tmp_path / "agent.log"
        env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
        with log.open("w") as errfile:
            agent = subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "--debug", "run", "-c", str(cfg)],
                stderr=errfile,
                env=env,
            )
        try:
            oru = encode_oru(
                [measurement("heart_rate", HL7_VALUE)],
                "CNRY-CTL-1",
                patient_id=CANARY_ID,
                timestamp="2024-03-15T08:30:00+00:00",
            )
            oru = oru.replace(
                f"{CANARY_ID}^^^EDGE^MR".encode(),  # and PID-5, the name
                f"{CANARY_ID}^^^EDGE^MR||{CANARY_NAME}^Ann".encode(),
            )
            deadline = time.monotonic() + 20
            while True:
                try:
                    conn = socket.create_connection(("127.0.0.1", mllp_port), timeout=5)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the MLLP listener never came up"
                    time.sleep(0.1)
            with conn:
                conn.sendall(frame(oru))
                ack = conn.recv(4096)
            assert b"MSA|AA" in ack
            wait_for("the HL7 reading", lambda: count(db, "monitor") >= 1)
            wait_for("the ASTM reading", lambda: count(db, "analyser") >= 1)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=10)
    bundle = tmp_path / "bundle.tar.gz"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "bundle",
            "-c",
            str(cfg),
            "--out",
            str(bundle),
            "--log",
            str(log),
            "--broker-timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    with tarfile.open(bundle) as tar:
        members = {
            m.name.split("/")[-1]: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }
    assert set(members) >= {
        "doctor.json",
        "versions.json",
        "config.json",
        "store.json",
        "agent.log",
    }
    assert b"readings_by_device" in members["store.json"]
    texts = {"agent log": log.read_bytes(), **members}
    assert b"DEBUG" in log.read_bytes()  # the agent logged at debug level
    for where, data in texts.items():
        for canary in (CANARY_ID, CANARY_NAME, str(HL7_VALUE), ASTM_VALUE, "CNRY"):
            assert canary.encode() not in data, f"{canary} found in {where}"
    # The canary did reach the store (the test would be empty otherwise).
    with sqlite3.connect(db) as c:
        values = {v for (v,) in c.execute("SELECT value FROM readings")}
    assert HL7_VALUE in values and float(ASTM_VALUE) in values
