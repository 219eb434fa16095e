"""``edge-agent bundle``: one diagnostics archive for support, without patient data.

What goes in: the effective config with secrets masked, the doctor's report, store and device
statistics (counts, states, health), the last events (kinds and device ids), versions, and the
agent's recent log. What never goes in: readings, raw frames, rejects' bytes, patient records.
The log is the agent's own (which never carries patient data, see STYLE.md); as a second guard
any line that looks like an HL7 PID segment or an ASTM P record is replaced before it is
written.
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_agent import __version__
from edge_agent.errors import EdgeAgentError

LOG_LINES = 2000
PATIENT_LINE = re.compile(r"(PID[|^~\\&]|(^|[\r\n\x02\s\d])P\|\d|\bNK1\||\bPV1\|)")


def redact_log(text: str) -> str:
    return "\n".join(
        "[line removed: it looked like a patient record]" if PATIENT_LINE.search(line) else line
        for line in text.splitlines()
    )


def versions() -> dict[str, Any]:
    pkgs: dict[str, str | None] = {}
    for name in (
        "pyserial",
        "bleak",
        "sqlite-utils",
        "paho-mqtt",
        "pydantic",
        "typer",
        "cryptography",
        "tomlkit",
    ):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    return {
        "edge-agent": __version__,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "packages": pkgs,
    }


def recent_log(log: Path | None) -> str:
    if log is not None:
        try:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            return f"(cannot read {log}: {exc.strerror})"
        return "\n".join(lines[-LOG_LINES:])
    if shutil.which("journalctl") is None:
        return "(no journal on this system; pass --log FILE)"
    try:
        done = subprocess.run(
            [
                "journalctl",
                "-u",
                "edge-agent",
                "-n",
                str(LOG_LINES),
                "--no-pager",
                "-o",
                "short-iso",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(journalctl failed: {exc})"
    return done.stdout or done.stderr


def store_facts(settings: Any) -> dict[str, Any]:
    from edge_agent.store.database import get_state
    from edge_agent.store.health import health_report
    from edge_agent.store.read import reading
    from edge_agent.store.writer import stats_query

    path = Path(settings.store.path)
    if not path.exists():
        return {"store": str(path), "exists": False}
    facts: dict[str, Any] = {
        "store": str(path),
        "exists": True,
        "bytes": {
            p.name: p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file()
        },
    }
    try:
        facts["health"] = health_report(path)
        with reading(path) as db:
            facts["stats"] = stats_query(db)
            facts["readings_by_device"] = dict(
                db.execute("SELECT device_id, count(*) FROM readings GROUP BY 1").fetchall()
            )
            facts["rejects_by_device_and_reason"] = [
                {"device": d, "reason": r, "count": n}
                for d, r, n in db.execute(
                    "SELECT device_id, reason, count(*) FROM rejects GROUP BY 1, 2"
                )
            ]
            facts["device_states"] = get_state(db, "devices")
            facts["sync"] = get_state(db, "sync")
            facts["events"] = [
                {"at": at, "kind": kind, "device": dev}
                for at, kind, dev in db.execute(
                    "SELECT at, kind, device_id FROM events ORDER BY id DESC LIMIT 200"
                )
            ]
    except EdgeAgentError as exc:
        facts["error"] = str(exc)
    return facts


def make_bundle(
    out: Path, config: Path, *, log: Path | None = None, broker_timeout: float = 10.0
) -> list[str]:
    from edge_agent.checks import doctor
    from edge_agent.checks.config_edit import masked
    from edge_agent.settings import load
    from edge_agent.store import connect as store_connect

    checks, code = doctor.run(config, broker_timeout=broker_timeout)
    members: dict[str, bytes] = {
        "doctor.json": doctor.as_json(checks, code).encode(),
        "versions.json": json.dumps(versions(), indent=2).encode(),
    }
    try:
        settings = load(config)
    except EdgeAgentError as exc:
        members["config-error.txt"] = str(exc).encode()
    else:
        # the store is read with its key (never copied: only counts and states go in)
        store_connect.configure(settings.store.path, settings.store, str(config))
        members["config.json"] = json.dumps(
            masked(json.loads(settings.model_dump_json())), indent=2
        ).encode()
        members["store.json"] = json.dumps(store_facts(settings), indent=2, default=str).encode()
    members["agent.log"] = redact_log(recent_log(log)).encode()
    tmp = out.with_name(f".{out.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"edge-agent-bundle/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return list(members)
