"""Edit the unit's TOML config without losing its comments (tomlkit), validated with the same
model as the agent, written atomically (a temporary file renamed over the config, its mode
kept). Secrets are masked for display."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Table

from edge_agent.durable import fsync_path
from edge_agent.errors import ConfigError
from edge_agent.settings import Settings, from_mapping

SECRET = re.compile(r"(password|passphrase|secret|token|psk|private)", re.IGNORECASE)
MASK = "********"


def masked(value: Any, key: str = "") -> Any:
    """The config with every secret-looking value replaced (for show and bundles)."""
    if isinstance(value, dict):
        return {k: masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if key and SECRET.search(key) and value not in (None, ""):
        return MASK
    return value


def validated(text: str, source: str) -> Settings:
    return from_mapping(tomlkit.parse(text).unwrap(), source)


def add_device(text: str, device: dict[str, Any], source: str) -> str:
    doc = tomlkit.parse(text)
    devices = doc.get("devices")
    if devices is None:
        devices = tomlkit.aot()
        doc.append("devices", devices)
    if not isinstance(devices, AoT):
        raise ConfigError(
            source,
            "devices",
            "is not a list of [[devices]] tables",
            "write each device as a [[devices]] table",
        )
    if any(t.get("id") == device["id"] for t in devices):
        raise ConfigError(
            source,
            f"devices {device['id']!r}",
            "already configured",
            "choose another --id, or remove it first (edge-agent devices remove)",
        )
    table = tomlkit.table()
    for key, value in device.items():
        if value is not None:
            table[key] = value
    devices.append(table)
    out = tomlkit.dumps(doc)
    validated(out, source)
    return out


def remove_device(text: str, device_id: str, source: str) -> str:
    doc = tomlkit.parse(text)
    devices = doc.get("devices")
    tables: list[Table] = list(devices) if isinstance(devices, AoT) else []
    keep = [t for t in tables if t.get("id") != device_id]
    if len(keep) == len(tables):
        raise ConfigError(
            source,
            f"devices {device_id!r}",
            "no such device",
            "edge-agent devices list shows the configured ids",
        )
    assert isinstance(devices, AoT)
    for index in reversed([i for i, t in enumerate(tables) if t.get("id") == device_id]):
        del devices[index]
    out = tomlkit.dumps(doc)
    validated(out, source)
    return out


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (a crash leaves the old or the new file,
    never half of one), keeping its mode and owner."""
    st = path.stat() if path.exists() else None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if st is not None:
            os.chmod(tmp, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
