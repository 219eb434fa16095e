"""Shared parts of the file-transfer tests: settings, central's view of a file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from edge_agent.settings import BrokerSettings, Settings, StoreSettings, SyncSettings, UnitSettings

UNIT = "mmu-t"


def settings(
    tmp: Path, port: int, *, uplink_bps: int | None = None, timeout: float = 3.0
) -> Settings:
    return Settings(
        unit=UnitSettings(id=UNIT),
        store=StoreSettings(path=tmp / "unit" / "unit.db"),
        broker=BrokerSettings(host="127.0.0.1", port=port, tls=False, keepalive_s=5),
        sync=SyncSettings(ack_timeout_s=timeout, uplink_bps=uplink_bps, linger_s=0.2),
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def central_files(central_db: Path) -> Path:
    return central_db.with_name(central_db.stem + ".files")


def central_upload(central_db: Path, file_id: str) -> dict[str, Any] | None:
    path = central_files(central_db) / "files.db"
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        try:
            row = db.execute("SELECT * FROM uploads WHERE file_id = ?", [file_id]).fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else dict(row)


def complete(central_db: Path, file_id: str) -> bool:
    row = central_upload(central_db, file_id)
    return row is not None and row["state"] == "complete"


def central_object(central_db: Path, sha: str) -> bytes:
    return (central_files(central_db) / "objects" / sha[:2] / sha).read_bytes()


def resources(central_db: Path, kind: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(central_files(central_db) / "files.db")) as db:
        return [
            json.loads(r[0])
            for r in db.execute(
                "SELECT body FROM file_resources WHERE resource_type = ? ORDER BY id", [kind]
            )
        ]


def unit_holds(unit_db: Path, file_id: str) -> bool:
    with contextlib.closing(sqlite3.connect(unit_db)) as db:
        row = db.execute(
            "SELECT central_holds_at FROM attachments WHERE file_id = ?", [file_id]
        ).fetchone()
        return row is not None and row[0] is not None
