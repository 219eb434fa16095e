"""End to end: simulator -> pty -> driver -> store -> Mosquitto -> receiver, every reading once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge_agent.service.demo import run_demo
from tests.broker import MosquittoBroker


async def test_every_reading_arrives_at_central_exactly_once(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    result = await run_demo(3, ("127.0.0.1", mosquitto.port), tmp_path)
    assert result.readings_stored > 0
    assert result.readings_pending_sync == 0
    assert result.readings_acknowledged == result.readings_stored
    unit = sqlite3.connect(tmp_path / "unit.db")
    central = sqlite3.connect(tmp_path / "central.db")
    unit_rows = sorted(unit.execute("SELECT id, seq, quantity, value FROM readings"))
    central_rows = sorted(central.execute("SELECT id, seq, code, value FROM observations"))
    assert [(i, s, v) for i, s, _, v in central_rows] == [(i, s, v) for i, s, _, v in unit_rows]
    seqs = sorted(s for _, s, _, _ in central_rows)
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous, none twice
    unsent = unit.execute("SELECT count(*) FROM readings WHERE sent_at IS NULL").fetchone()[0]
    assert unsent == 0
    # The demo's simulated patient: part of the run attributed, part not; central has the
    # patient's encounter (finished) and observations that refer to it.
    assert 0 < result.readings_attributed < result.readings_stored
    kinds = dict(central.execute("SELECT type, count(*) FROM resources GROUP BY type"))
    # The demo's patient, and the unidentified Patient of the readings taken with nobody open
    # (one per unit and local day: two when the run straddles midnight).
    assert kinds["Patient"] in (2, 3) and kinds["Encounter"] == 1 and kinds["Device"] >= 1
    encounter = central.execute("SELECT resource FROM resources WHERE type = 'Encounter'")
    assert '"status":"finished"' in encounter.fetchone()[0]
    attributed = central.execute(
        "SELECT count(*) FROM observations WHERE resource LIKE '%\"encounter\"%'"
    ).fetchone()[0]
    assert attributed == result.readings_attributed
