"""`edge-agent db export`: every reading (or those since a time), CSV or FHIR NDJSON, 0600."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.models import measurement
from edge_agent.store.writer import Store

runner = CliRunner()


def test_export_csv_and_fhir_with_since(tmp_path: Path) -> None:
    path = tmp_path / "unit.db"
    with Store(path, "mmu-01") as store:
        store.append(
            "ox", [measurement("spo2", 97.0)] * 3, received_at="2026-11-29T08:00:00.000Z"
        ).result()
        store.append(
            "ox",
            [measurement("spo2", 95.0), measurement("pulse_rate", 71.0)],
            received_at="2026-11-30T08:00:00.000Z",
        ).result()
    out = tmp_path / "all.csv"
    result = runner.invoke(app, ["db", "export", "--db", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[3]["quantity"] == "spo2" and float(rows[3]["value"]) == 95.0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600  # health data
    fhir = tmp_path / "since.ndjson"
    result = runner.invoke(
        app,
        [
            "db",
            "export",
            "--db",
            str(path),
            "--format",
            "fhir",
            "--since",
            "2026-11-30",
            "--out",
            str(fhir),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in fhir.read_text().splitlines()]
    assert len(lines) == 2 and all(o["resourceType"] == "Observation" for o in lines)
    result = runner.invoke(app, ["db", "export", "--db", str(path), "--format", "xml"])
    assert result.exit_code == 2
