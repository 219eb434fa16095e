"""The reference receiver and the transaction Bundle: a replay creates nothing twice, and a
reading attributed after central had it (`patient assign`) is updated there by the conditional
update of a later transaction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_agent.encounters import assign, open_encounter, writing
from edge_agent.models import measurement
from edge_agent.store import Store, utc_now
from sync import codec, outbox
from sync.central.store import SqliteCentral

UNIT = "mmu-central"
PATIENT = "CANARY-P-0042"


def send(store: Store, central: SqliteCentral, batch_id: str) -> tuple[bytes, list[Any]]:
    """Take a batch as the daemon does, store it at central, mark it acknowledged."""
    rows = store.read(lambda db: outbox.next_batch(db, 200))
    seqs = [r["seq"] for r in rows]
    store.call(lambda db: outbox.record_batch(db, batch_id, seqs, utc_now()))
    payload = codec.encode_batch(UNIT, batch_id, rows, "2026-11-23T08:00:00.000Z",
                                 epoch=store.epoch)
    outcome = central.store_batches([codec.decode_batch(payload)], "2026-11-23T08:00:01Z")
    store.call(lambda db: outbox.mark_acked(db, batch_id))
    return payload, outcome


def resources(central: SqliteCentral) -> dict[str, int]:
    return {str(k): int(n) for k, n in central.query(
        "SELECT type, count(*) FROM resources GROUP BY type")}


def observation(central: SqliteCentral, seq: int) -> dict[str, Any]:
    (text,), = central.query("SELECT resource FROM observations WHERE seq = ?", [seq])
    return json.loads(text)  # type: ignore[no-any-return]


def test_a_later_assign_updates_the_reading_at_central(tmp_path: Path) -> None:
    central = SqliteCentral(tmp_path / "central.db")
    with Store(tmp_path / "unit.db", UNIT) as store:
        cuff = store.append("cuff", [measurement("systolic_bp", 121.0),
                                     measurement("diastolic_bp", 79.0)]).result()
        first, _ = send(store, central, "b1")
        panel = observation(central, cuff[0])
        assert panel["subject"] == panel["device"] and "encounter" not in panel
        # The nurse opens the patient and attaches the cuff's measurement.
        with writing(tmp_path / "unit.db") as nurse:  # the CLI's connection
            open_encounter(nurse, "urn:mmu:patient:platform", PATIENT)
        spo2 = store.append("ox", [measurement("spo2", 97.0)]).result()
        with writing(tmp_path / "unit.db") as nurse:
            assert assign(nurse, cuff) == 2
        second, outcomes = send(store, central, "b2")
        assert outcomes[0].new == 1 and outcomes[0].held == 3  # spo2 new, the panel updated
        bundle = json.loads(codec._inflate(second))
        requests = {e["request"]["method"] + " " + e["request"]["url"].split("?")[0]
                    for e in bundle["entry"]}
        assert "PUT Observation" in requests and "POST Observation" in requests
        updated = observation(central, cuff[0])
        assert updated["encounter"] == observation(central, spo2[0])["encounter"]
        assert updated["subject"] != updated["device"]
        assert resources(central) == {"Device": 2, "Encounter": 1, "Patient": 1}
        # Replays of both transactions (a broker redelivery) create nothing twice.
        for payload in (first, second, second):
            again = central.store_batches([codec.decode_batch(payload)], "2026-11-23T08:00:02Z")
            assert again[0].new == 0
        assert central.query("SELECT count(*) FROM observations") == [(3,)]
        assert resources(central) == {"Device": 2, "Encounter": 1, "Patient": 1}
        assert store.stats()["readings_pending_sync"] == 0
    central.close()
