"""``edge-agent central export``: what the receiver stored comes out as FHIR Bulk Data NDJSON a
platform imports as it is: valid R4 resources, one per line, each once, every reference literal
and resolved inside the export (however old the Patient or Device), the window of --since
(inclusive, an update included) and --unit, the teleconsultation files beside the readings."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from typer.testing import CliRunner

from edge_agent.cli import app
from sync import fhir
from sync.central.export import export, read_only
from sync.central.store import PostgresCentral, SqliteCentral
from tests.central.export_kit import (
    OTHER,
    PATIENT,
    T1,
    T2,
    UNIT,
    Built,
    build,
    build_files,
    read_export,
)

runner = CliRunner()
ALL = {
    "Patient",
    "Encounter",
    "Device",
    "Location",
    "Observation",
    "DocumentReference",
    "Media",
    "ImagingStudy",
}


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Built]:
    tmp = tmp_path_factory.mktemp("central")
    store = SqliteCentral(tmp / "central.db")
    try:
        built = build(tmp, store)
    finally:
        store.close()
    build_files(tmp / "central.db", built.encounter)
    return tmp / "central.db", built


def run(db: Path, out: Path, *args: str, process: bool = False) -> subprocess.CompletedProcess[str]:
    """The command, in this process (CliRunner), or in its own (``python -m edge_agent``)."""
    argv = ["central", "export", "--db", str(db), "--out", str(out), *args]
    if process:
        return subprocess.run(
            [sys.executable, "-m", "edge_agent", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
    result = runner.invoke(app, argv)
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)


def references(node: Any) -> list[str]:
    if isinstance(node, list):
        return [r for item in node for r in references(item)]
    if not isinstance(node, dict):
        return []
    found = [node["reference"]] if isinstance(node.get("reference"), str) else []
    return found + [r for k, v in node.items() if k != "reference" for r in references(v)]


def check_bulk(out: Path) -> dict[str, list[dict[str, Any]]]:
    """The properties every export has; returns type -> resources."""
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path  # health data
        assert not path.name.startswith("."), path  # no temporary file left
        assert "urn:uuid:" not in path.read_text(), path
    found = read_export(out)
    ids = {kind: [r["id"] for r in found[kind]] for kind in found}
    for kind, resources in found.items():
        assert len(set(ids[kind])) == len(ids[kind]), f"duplicate {kind} ids"
        model = get_fhir_model_class(kind)
        for resource in resources:
            assert resource["resourceType"] == kind
            model.model_validate(resource)
            for ref in references(resource):
                target, _, rid = ref.partition("/")
                assert rid in ids.get(target, []), f"{kind} {resource['id']} -> {ref}"
    return found


def readings(found: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {
        i["value"]
        for kind in ("Observation", "Location")
        for r in found.get(kind, [])
        for i in r.get("identifier", [])
        if i["system"] == "urn:mmu:reading"
    }


def test_the_whole_store_is_valid_self_contained_bulk_data(
    central: tuple[Path, Built], tmp_path: Path
) -> None:
    db, built = central
    done = run(db, tmp_path / "out", process=True)
    assert done.returncode == 0, done.stderr
    assert "Observation: 5" in done.stderr and "Traceback" not in done.stderr
    found = check_bulk(tmp_path / "out")
    assert set(found) == ALL
    assert readings(found) == set(built.before + built.after + built.other)
    panels = [o for o in found["Observation"] if "component" in o]
    assert len(panels) == 1  # two readings, one resource
    panel = panels[0]
    assert panel["subject"]["reference"].startswith("Patient/")  # the later assign
    assert panel["encounter"]["reference"] == f"Encounter/{built.encounter}"
    assert panel["meta"]["lastUpdated"] == T2
    unattributed = [o for o in found["Observation"] if "encounter" not in o]
    assert unattributed and all(
        o["device"]["reference"].startswith("Device/") for o in unattributed
    )
    # Nobody opened: each unit's unidentified Patient of the day (the vital-signs profile).
    unidentified = {
        p["id"]: p
        for p in found["Patient"]
        if p["identifier"][0]["system"].startswith(fhir.UNIDENTIFIED_SYSTEM)
    }
    assert {o["subject"]["reference"] for o in unattributed} == {
        f"Patient/{i}" for i in unidentified
    }
    (patient,) = [p for p in found["Patient"] if p["id"] not in unidentified]
    assert patient["identifier"] == [{"system": PATIENT[0], "value": PATIENT[1]}]
    gps = [
        loc
        for loc in found["Location"]
        if "position" in loc and loc["identifier"][0]["system"] == "urn:mmu:reading"
    ]
    assert len(gps) == 1 and gps[0]["position"]["latitude"] == 33.57
    # The files name their patient and encounter: the literal references are added.
    media = found["Media"][0]
    assert media["subject"]["reference"] == f"Patient/{patient['id']}"
    assert media["encounter"]["reference"] == f"Encounter/{built.encounter}"
    assert found["ImagingStudy"][0]["numberOfInstances"] == 1
    assert len(found["DocumentReference"]) == 2
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["extension"]["unresolvedReferences"] == 0
    assert manifest["transactionTime"].endswith("Z")
    # Bulk Data: the request's full URL and absolute file URLs (default: the folder's own).
    folder = (tmp_path / "out").resolve().as_uri()
    assert manifest["request"] == f"{folder}/$export?_outputFormat=application%2Ffhir%2Bndjson"
    assert [o["url"] for o in manifest["output"]] == [
        f"{folder}/{o['type']}.ndjson" for o in manifest["output"]
    ]


def test_the_manifest_names_the_request_and_files_by_absolute_urls(
    central: tuple[Path, Built], tmp_path: Path
) -> None:
    db, _ = central
    base = "https://central.example/fhir/export/2026-11-23"
    done = run(
        db, tmp_path / "out", "--since", "2026-11-23", "--unit", OTHER, "--base-url", base + "/"
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["request"] == (
        f"{base}/$export?_outputFormat=application%2Ffhir%2Bndjson&_since=2026-11-23&unit={OTHER}"
    )
    assert {o["url"] for o in manifest["output"]} == {
        f"{base}/{kind}.ndjson" for kind in read_export(tmp_path / "out")
    }
    assert run(db, tmp_path / "again", "--base-url", "central/export").returncode == 2


def test_since_is_inclusive_and_takes_updates_with_what_they_refer_to(
    central: tuple[Path, Built], tmp_path: Path
) -> None:
    db, built = central
    done = run(db, tmp_path / "at", "--since", T2, "--files", str(tmp_path / "no-files"))
    assert done.returncode == 0, done.stderr
    found = check_bulk(tmp_path / "at")
    # Stored at T2: the later readings and the panel updated by the assign; not the rest.
    assert readings(found) == set(built.after)
    assert {r["id"] for r in found["Device"]} and found["Patient"]  # stored at T1, referred to
    assert {r["meta"]["lastUpdated"] for r in found["Device"]} == {T1}
    assert set(found) == {"Patient", "Encounter", "Device", "Location", "Observation"}
    # One millisecond later: nothing of the readings; a zone other than Z is the same instant.
    done = run(db, tmp_path / "later", "--since", "2026-11-23T10:00:00.001+01:00")
    assert done.returncode == 0, done.stderr
    found = check_bulk(tmp_path / "later")
    assert readings(found) == set()
    # The files, received now, with what they name: the encounter, its patient and place.
    assert set(found) == {
        "Patient",
        "Encounter",
        "Location",
        "DocumentReference",
        "Media",
        "ImagingStudy",
    }


def test_unit_takes_one_units_readings_and_files(
    central: tuple[Path, Built], tmp_path: Path
) -> None:
    db, built = central
    out = tmp_path / "out"
    (out).mkdir()
    (out / "Patient.ndjson").write_text("stale\n")  # an earlier export's file
    done = run(db, out, "--unit", OTHER, "--since", "2026-11-23")
    assert done.returncode == 0, done.stderr
    found = check_bulk(out)
    assert readings(found) == set(built.other)
    assert set(found) == {"Observation", "Device", "DocumentReference", "Patient"}
    (unidentified,) = found["Patient"]  # the other unit's readings had nobody open
    assert unidentified["identifier"][0]["system"] == f"{fhir.UNIDENTIFIED_SYSTEM}:{OTHER}"
    assert "stale" not in (out / "Patient.ndjson").read_text()
    found = read_export(out)
    assert found["Device"][0]["identifier"][0]["system"] == f"urn:mmu:device:{OTHER}"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--since", "yesterday"], 2, "not an ISO 8601 time"),
        (["--since", "2026-11-23T08:00:00"], 2, "has no zone"),
        (["--format", "csv"], 2, "use ndjson"),
    ],
)
def test_bad_options_are_usage_errors(
    central: tuple[Path, Built], tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    done = run(central[0], tmp_path / "out", *args)
    assert done.returncode == code and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_a_missing_or_foreign_store_is_a_store_error(tmp_path: Path) -> None:
    done = run(tmp_path / "nothing.db", tmp_path / "out")
    assert done.returncode == 4 and "no central store here" in done.stderr, done.stderr
    (tmp_path / "not.db").write_text("not a database " * 100)
    done = run(tmp_path / "not.db", tmp_path / "out")
    assert done.returncode == 4 and "cannot read the central store" in done.stderr
    assert "Traceback" not in done.stderr


def test_postgres_store_exports_the_same(tmp_path: Path, postgres: str) -> None:
    store = PostgresCentral(postgres)
    try:
        built = build(tmp_path, store)
        summary = export(store.query, None, tmp_path / "out", since=T2)
    finally:
        store.close()
    found = check_bulk(tmp_path / "out")
    assert readings(found) == set(built.after)
    assert summary.counts == {k: len(v) for k, v in found.items()}
    assert UNIT in json.dumps(found["Encounter"])


def test_a_failed_export_leaves_the_previous_one_whole(
    central: tuple[Path, Built], tmp_path: Path
) -> None:
    db, _ = central
    out = tmp_path / "out"
    assert run(db, out).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    conn = read_only(db)

    def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if "FROM resources WHERE type = ?" in sql:  # after the readings were written
            raise sqlite3.OperationalError("disk I/O error")
        return [tuple(r) for r in conn.execute(sql, list(params))]

    try:
        with pytest.raises(sqlite3.OperationalError):
            export(query, None, out, since=T2)
    finally:
        conn.close()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no .part file either
