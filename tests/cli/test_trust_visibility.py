"""Technicians see trust: ``doctor`` checks ``[trust]`` (no key: unsigned downlink and acks
accepted, said as a warning), ``sync status`` shows the refused downlinks and the remote
config version in effect, ``config show`` shows what runs (central's remote [sync] change and
rotated keys, kept in the store), on real store files through the real commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlite_utils import Database
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.models import measurement
from edge_agent.public_keys import public_key_text
from edge_agent.store.database import put_state
from edge_agent.store.writer import Store

runner = CliRunner()
KEY = public_key_text(Ed25519PrivateKey.generate().public_key())
ROTATED = public_key_text(Ed25519PrivateKey.generate().public_key())


def unit(tmp: Path, trust: str = "", state: dict[str, Any] | None = None) -> Path:
    with Store(tmp / "unit.db", "mmu-01") as store:
        store.append("ox", [measurement("spo2", 97.0)]).result()
    if state:
        db = Database(tmp / "unit.db")
        for key, value in state.items():
            put_state(db, key=key, value=value)
        db.conn.commit()
        db.close()
    cfg = tmp / "unit.toml"
    cfg.write_text(f'[unit]\nid = "mmu-01"\n[store]\npath = "{tmp / "unit.db"}"\n{trust}')
    cfg.chmod(0o640)
    return cfg


def trust_check(cfg: Path) -> dict[str, str]:
    result = runner.invoke(app, ["doctor", "--config", str(cfg), "--json"])
    checks = {c["name"]: c for c in json.loads(result.output)["checks"]}
    check: dict[str, str] = checks["trust"]
    return check


def test_doctor_checks_trust(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    open_unit = unit(tmp_path / "a")
    check = trust_check(open_unit)
    assert (
        check["status"] == "warn"
        and "unsigned commands, configuration and acks" in check["detail"]
        and "central keygen" in check["fix"]
    )

    (tmp_path / "b").mkdir()
    signed = unit(tmp_path / "b", f'[trust]\ncentral_keys = ["{KEY}"]\n')
    check = trust_check(signed)
    assert check["status"] == "ok" and "from [trust]" in check["detail"]

    (tmp_path / "c").mkdir()
    rollout = unit(tmp_path / "c", f'[trust]\ncentral_keys = ["{KEY}"]\nrequire_signed = false\n')
    assert "require_signed = false" in trust_check(rollout)["detail"]

    (tmp_path / "d").mkdir()
    rotated = unit(
        tmp_path / "d",
        f'[trust]\ncentral_keys = ["{KEY}"]\n',
        {"downlink-trust": {"last": {"trust": 5}, "config_digest": None, "keys": [ROTATED]}},
    )
    assert "rotated by central" in trust_check(rotated)["detail"]

    (tmp_path / "e").mkdir()
    attacked = unit(
        tmp_path / "e",
        f'[trust]\ncentral_keys = ["{KEY}"]\n',
        {"sync": {"refused_acks": 781, "refused_downlinks": 781, "stopped": True}},
    )
    check = trust_check(attacked)
    assert check["status"] == "warn" and "781 forged or unsigned acks" in check["detail"]


STATE = {
    "sync": {"refused_downlinks": 3, "refused_acks": 2, "stopped": True, "connected": False},
    "config-remote": {"version": 4, "sync": {"batch_size": 20}},
    "downlink-trust": {"last": {"trust": 5}, "config_digest": None, "keys": [ROTATED]},
}


def test_sync_status_shows_refused_downlinks_and_the_remote_config_version(tmp_path: Path) -> None:
    cfg = unit(tmp_path, state=STATE)
    result = runner.invoke(app, ["sync", "status", "--config", str(cfg), "--json"])
    body = json.loads(result.output)
    assert (body["refused_downlinks"], body["refused_acks"], body["config_version"]) == (3, 2, 4)
    text = runner.invoke(app, ["sync", "status", "--config", str(cfg)]).output
    assert "refused downlinks: 3 (2 forged or unsigned acks)" in text
    assert "remote config:     version 4 in effect" in text


def test_config_show_shows_what_runs(tmp_path: Path) -> None:
    cfg = unit(tmp_path, f'[trust]\ncentral_keys = ["{KEY}"]\n[sync]\nbatch_size = 100\n', STATE)
    body = json.loads(runner.invoke(app, ["config", "show", "--config", str(cfg), "--json"]).output)
    assert body["sync"]["batch_size"] == 20  # central's change, not the file's 100
    assert body["trust"]["central_keys"] == [ROTATED]
    assert body["in_effect"] == {
        "remote_config_version": 4,
        "remote_sync_keys": ["batch_size"],
        "central_keys_from": "central (signed rotate-key)",
    }
    text = runner.invoke(app, ["config", "show", "--config", str(cfg)]).output
    assert "# [sync] with central's remote config version 4 applied (batch_size)" in text
    assert "batch_size = 20" in text and "not the file" in text
