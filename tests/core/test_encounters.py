"""Encounters, offline: opened and closed by the CLI (another process) while the agent's store
writes, readings bound by the writer, `patient assign` afterwards, an agent restart, and the
patient's identifier never in logs, CLI output or the agent's state."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.models import measurement
from edge_agent.store.writer import Store
from sync import codec, outbox

UNIT = "mmu-enc"
CANARY = "CANARY-7731-XJ"  # a patient identifier that must never show up
ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path) -> Path:
    path = tmp_path / "edge-agent.toml"
    path.write_text(
        f'[unit]\nid = "{UNIT}"\n\n[store]\npath = "{tmp_path / "unit.db"}"\n\n'
        '[patients]\npractitioner_role = "nurse"\n',
        encoding="utf-8",
    )
    return path


def cli_process(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as the nurse runs it: another process than the agent."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "patient", *args, "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def encounter_of(store: Store, seq: int) -> str | None:
    found = store.read(
        lambda db: db.execute("SELECT encounter_id FROM readings WHERE seq = ?", [seq]).fetchone()[
            0
        ]
    )
    return None if found is None else str(found)


def spo2(store: Store, value: float = 97.0) -> int:
    return store.append("ox", [measurement("spo2", value)]).result()[0]


def test_readings_taken_while_an_encounter_is_open_are_bound_to_it(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with Store(tmp_path / "unit.db", UNIT) as store:
        before = spo2(store)
        store.append(
            "gps", [measurement("latitude", 33.57), measurement("longitude", -7.59)]
        ).result()
        opened = cli_process(cfg, "open", CANARY, "--system", "platform")
        assert opened.returncode == 0, opened.stderr
        where = store.read(
            lambda db: db.execute(
                "SELECT latitude, longitude, practitioner_role FROM encounters"
            ).fetchall()
        )
        assert where == [(33.57, -7.59, "nurse")]  # the van's last fix, who
        during = [spo2(store) for _ in range(20)]
        reloads = store.encounters.reloads
        gps = store.append("gps", [measurement("latitude", 33.5)]).result()[0]
        closed = cli_process(cfg, "close")
        assert closed.returncode == 0, closed.stderr
        after = spo2(store)
        encounter = encounter_of(store, during[0])
        assert encounter is not None
        assert [encounter_of(store, s) for s in during] == [encounter] * 20
        assert encounter_of(store, before) is None and encounter_of(store, after) is None
        assert encounter_of(store, gps) is None  # the van's position is no patient's
        assert reloads == 1 + 1  # at start, then once after the CLI's commit: not per reading
    for out in (opened, closed):
        assert CANARY not in out.stdout + out.stderr
    assert CANARY[-3:] in opened.stdout  # shown masked: the last 3 characters


def test_an_open_encounter_survives_an_agent_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with Store(tmp_path / "unit.db", UNIT) as store:
        spo2(store)
    assert cli_process(cfg, "open", CANARY).returncode == 0
    with Store(tmp_path / "unit.db", UNIT) as store:  # the agent started again
        bound = encounter_of(store, spo2(store))
    current = CliRunner().invoke(app, ["patient", "current", "-c", str(cfg)])
    assert bound is not None and bound in current.stdout and "1 readings" in current.stdout
    assert CANARY not in current.stdout
    again = CliRunner().invoke(app, ["patient", "open", "OTHER", "-c", str(cfg)])
    assert again.exit_code == 1 and "close it first" in again.stderr
    assert CliRunner().invoke(app, ["patient", "close", "-c", str(cfg)]).exit_code == 0
    none = CliRunner().invoke(app, ["patient", "current", "-c", str(cfg)])
    assert none.exit_code == 1 and "no encounter open" in none.stdout


def test_assign_lists_the_unattributed_readings_and_attaches_the_chosen_ones(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path)
    runner = CliRunner()
    with Store(tmp_path / "unit.db", UNIT) as store:
        cuff = [
            store.append(
                "cuff", [measurement("systolic_bp", 121.0), measurement("diastolic_bp", 79.0)]
            ).result()
        ]
        other = spo2(store)
        store.append("gps", [measurement("latitude", 33.5)]).result()
        # The cuff's readings went to central already: an assign sends them again.
        store.call(lambda db: outbox.record_batch(db, "b1", cuff[0]))
        store.call(lambda db: outbox.mark_acked(db, "b1"))
        none_open = runner.invoke(app, ["patient", "assign", "-c", str(cfg)])
        assert none_open.exit_code == 0 and f"#{other}" in none_open.stdout
        assert "latitude" not in none_open.stdout
        assert runner.invoke(app, ["patient", "open", CANARY, "-c", str(cfg)]).exit_code == 0
        bad = runner.invoke(app, ["patient", "assign", "999", "-c", str(cfg)])
        assert bad.exit_code == 2
        done = runner.invoke(app, ["patient", "assign", *map(str, cuff[0]), "-c", str(cfg)])
        assert done.exit_code == 0 and "attached 2 readings" in done.stdout
        rows = store.read(lambda db: outbox.next_batch(db, 10))
        by_seq = {r["seq"]: r for r in rows}
        assert set(cuff[0]) <= set(by_seq)  # queued again for central
        assert all(by_seq[s]["attributed_at"] and by_seq[s]["encounter_id"] for s in cuff[0])
        assert by_seq[other]["encounter_id"] is None
        left = runner.invoke(app, ["patient", "assign", "-c", str(cfg)])
        assert f"#{other}" in left.stdout and f"#{cuff[0][0]}" not in left.stdout


def test_a_reading_attributed_while_its_batch_is_in_flight_goes_again(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with Store(tmp_path / "unit.db", UNIT) as store:
        seq = spo2(store)
        store.call(lambda db: outbox.record_batch(db, "b1", [seq], "2026-01-01T00:00:00.000Z"))
        assert cli_process(cfg, "open", CANARY).returncode == 0
        assert cli_process(cfg, "assign", str(seq)).returncode == 0
        store.call(lambda db: outbox.mark_acked(db, "b1"))  # central got it without patient
        rows = store.read(lambda db: outbox.next_batch(db, 10))
        assert [r["seq"] for r in rows] == [seq] and rows[0]["attributed_at"]


def test_the_patient_identifier_never_reaches_logs_or_the_agent_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = config(tmp_path)
    runner = CliRunner()
    outputs = []
    with Store(tmp_path / "unit.db", UNIT) as store:
        outputs.append(
            runner.invoke(app, ["--log-level", "debug", "patient", "open", CANARY, "-c", str(cfg)])
        )
        seqs = [spo2(store, 84.0) for _ in range(3)]  # alerts, logged as such
        outputs.append(runner.invoke(app, ["patient", "current", "-c", str(cfg)]))
        outputs.append(runner.invoke(app, ["patient", "assign", "-c", str(cfg)]))
        rows = store.read(lambda db: outbox.next_batch(db, 10))
        payload = codec.encode_batch(
            UNIT, "b1", rows, "2026-11-23T08:00:00.000Z", epoch=store.epoch
        )
        outputs.append(runner.invoke(app, ["patient", "close", "-c", str(cfg)]))
        state = store.read(lambda db: db.execute("SELECT key, value FROM agent_state").fetchall())
        events = store.read(lambda db: db.execute("SELECT * FROM events").fetchall())
    assert len(seqs) == 3
    assert CANARY in json.dumps([o.resource for o in codec.decode_batch(payload).resources])
    text = (
        caplog.text
        + json.dumps(state)
        + json.dumps(events)
        + "".join(o.stdout + o.stderr for o in outputs)
    )
    assert CANARY not in text


def test_assign_never_moves_a_reading_bound_to_another_encounter(tmp_path: Path) -> None:
    """A reading taken during patient A's encounter stays A's: assigning it while B's is open
    binds nothing and queues nothing again (from the console, which passes reading ids
    straight through, and from the CLI, which says it is not an unattributed reading)."""
    from edge_agent.console.actions import assign as console_assign
    from edge_agent.store import encounters

    cfg = config(tmp_path)
    runner = CliRunner()
    with Store(tmp_path / "unit.db", UNIT) as store:
        assert runner.invoke(app, ["patient", "open", "PATIENT-A", "-c", str(cfg)]).exit_code == 0
        seq = spo2(store)
        first = encounter_of(store, seq)
        assert first is not None
        store.call(lambda db: outbox.record_batch(db, "b1", [seq]))
        store.call(lambda db: outbox.mark_acked(db, "b1"))  # central holds it, as A's
        assert runner.invoke(app, ["patient", "close", "-c", str(cfg)]).exit_code == 0
        assert runner.invoke(app, ["patient", "open", CANARY, "-c", str(cfg)]).exit_code == 0
        reading_id = store.read(
            lambda db: db.execute("SELECT id FROM readings WHERE seq = ?", [seq]).fetchone()[0]
        )
        # A's close queued its last reading again (the close travels on its own), as A's
        queued = store.read(lambda db: outbox.next_batch(db, 10))

        assert store.call(lambda db: encounters.assign(db, [seq])) == 0
        result = console_assign(tmp_path / "unit.db", [reading_id], writer=store)
        assert result.ok and result.count == 0
        cli = runner.invoke(app, ["patient", "assign", str(seq), "-c", str(cfg)])
        assert cli.exit_code == 2 and "not unattributed" in cli.stderr

        assert encounter_of(store, seq) == first
        # the assigns queued nothing more, and moved nothing
        assert store.read(lambda db: outbox.next_batch(db, 10)) == queued
