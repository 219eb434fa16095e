"""The command line: each command through typer's runner, and the console script once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.models import measurement
from edge_agent.store.writer import Store

runner = CliRunner()


def test_db_stats_json_counts_readings(tmp_path: Path) -> None:
    db = tmp_path / "unit.db"
    with Store(db, "mmu-01") as store:
        store.append("ox", [measurement("spo2", 97.0), measurement("pulse_rate", 70.0)]).result()
    result = runner.invoke(app, ["db", "stats", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["readings_total"] == 2
    assert data["readings_pending_sync"] == 2
    assert data["readings_sent"] == 0


def test_bad_config_exits_3_naming_file_field_and_fix(tmp_path: Path) -> None:
    config = tmp_path / "unit.toml"
    config.write_text('[unit]\nid = "mmu-01"\nlanguage = "de"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "db", "stats", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert str(config) in proc.stderr and "unit.language" in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_broker_option_is_a_usage_error() -> None:
    result = runner.invoke(app, ["demo", "--broker", "nowhere", "--seconds", "1"])
    assert result.exit_code == 2
    assert "HOST:PORT" in result.output


def test_help_shows_flags_without_a_value_type() -> None:
    for args in (
        ["--help"],
        ["db", "stats", "--help"],
        ["sync", "status", "--help"],
        ["demo", "--help"],
        ["ble", "scan", "--help"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "--help" in result.output and "<bool>" not in result.output, args
    assert "<path>" in runner.invoke(app, ["db", "stats", "--help"]).output  # values keep theirs
    result = runner.invoke(app, ["db", "stats", "--json", "--db", "/nonexistent.db"])
    assert result.exit_code == 4  # --json is still a flag: --db is parsed after it
