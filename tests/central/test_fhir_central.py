"""The reference receiver and the transaction Bundle: a replay creates nothing twice, and a
reading attributed after central had it (`patient assign`) is updated there by the conditional
update of a later transaction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_agent.clock import utc_now
from edge_agent.models import measurement
from edge_agent.store import device_facts
from edge_agent.store.encounters import assign, close_encounter, open_encounter, writing
from edge_agent.store.writer import Store
from sync import codec, fhir, outbox
from sync.central.store import SqliteCentral

UNIT = "mmu-central"
PATIENT = "CANARY-P-0042"


def send(
    store: Store, central: SqliteCentral, batch_id: str, at: str = "2026-11-23T08:00:00.000Z"
) -> tuple[bytes, list[Any]]:
    """Take a batch as the daemon does, store it at central, mark it acknowledged."""
    rows = store.read(lambda db: outbox.next_batch(db, 200))
    seqs = [r["seq"] for r in rows]
    versions = fhir.full_device_versions(rows)
    store.call(
        lambda db: outbox.record_batch(db, batch_id, seqs, utc_now(), device_versions=versions)
    )
    payload = codec.encode_batch(UNIT, batch_id, rows, at, epoch=store.epoch)
    outcome = central.store_batches([codec.decode_batch(payload)], "2026-11-23T08:00:01Z")
    store.call(lambda db: outbox.mark_acked(db, batch_id))
    return payload, outcome


def resources(central: SqliteCentral) -> dict[str, int]:
    return {
        str(k): int(n)
        for k, n in central.query("SELECT type, count(*) FROM resources GROUP BY type")
    }


def observation(central: SqliteCentral, seq: int) -> dict[str, Any]:
    ((text,),) = central.query("SELECT resource FROM observations WHERE seq = ?", [seq])
    return json.loads(text)  # type: ignore[no-any-return]


def test_a_later_assign_updates_the_reading_at_central(tmp_path: Path) -> None:
    central = SqliteCentral(tmp_path / "central.db")
    with Store(tmp_path / "unit.db", UNIT) as store:
        cuff = store.append(
            "cuff", [measurement("systolic_bp", 121.0), measurement("diastolic_bp", 79.0)]
        ).result()
        first, _ = send(store, central, "b1")
        panel = observation(central, cuff[0])
        # Nobody open: the session's unidentified Patient (the vital-signs profile's subject).
        unidentified = panel["subject"]["reference"]
        assert "encounter" not in panel and unidentified != panel["device"]["reference"]
        # The nurse opens the patient and attaches the cuff's measurement.
        with writing(tmp_path / "unit.db") as nurse:  # the CLI's connection
            open_encounter(nurse, "urn:mmu:patient:platform", PATIENT)
        spo2 = store.append("ox", [measurement("spo2", 97.0)]).result()
        with writing(tmp_path / "unit.db") as nurse:
            assert assign(nurse, cuff) == 2
        second, outcomes = send(store, central, "b2")
        assert outcomes[0].new == 1 and outcomes[0].held == 3  # spo2 new, the panel updated
        bundle = json.loads(codec._inflate(second))
        requests = {
            e["request"]["method"] + " " + e["request"]["url"].split("?")[0]
            for e in bundle["entry"]
        }
        assert "PUT Observation" in requests and "POST Observation" in requests
        updated = observation(central, cuff[0])
        assert updated["encounter"] == observation(central, spo2[0])["encounter"]
        # The reading ends on the named patient, not the unidentified one.
        named = "urn:uuid:" + fhir.stable_uuid("patient", "urn:mmu:patient:platform", PATIENT)
        assert updated["subject"] == {"reference": named} != {"reference": unidentified}
        assert resources(central) == {"Device": 2, "Encounter": 1, "Patient": 2}
        # Replays of both transactions (a broker redelivery) create nothing twice.
        for payload in (first, second, second):
            again = central.store_batches([codec.decode_batch(payload)], "2026-11-23T08:00:02Z")
            assert again[0].new == 0
        assert central.query("SELECT count(*) FROM observations") == [(3,)]
        assert resources(central) == {"Device": 2, "Encounter": 1, "Patient": 2}
        assert store.stats()["readings_pending_sync"] == 0
    central.close()


def device(central: SqliteCentral) -> dict[str, Any]:
    ((text,),) = central.query("SELECT resource FROM resources WHERE type = 'Device'")
    return json.loads(text)  # type: ignore[no-any-return]


def test_a_device_that_tells_its_serial_later_is_updated_at_central(tmp_path: Path) -> None:
    """The first batch's Device knows only the unit's name for it; the meter then reads out
    its Device Information: the next batch updates the Device (same first identifier), and a
    late redelivery of the first batch does not take the facts back."""
    central = SqliteCentral(tmp_path / "central.db")
    with Store(tmp_path / "unit.db", UNIT) as store:
        store.append("meter", [measurement("glucose", 5.5, "mmol/L")]).result()
        first, _ = send(store, central, "b1", "2026-11-23T08:00:00.000Z")
        bare = device(central)
        assert bare["identifier"] == [{"system": f"urn:mmu:device:{UNIT}", "value": "meter"}]
        store.call(
            lambda db: device_facts.save(
                db, "meter", {"serial": "GLU-A1", "manufacturer": "Roche", "mdc_type": 528401}
            )
        )
        store.append("meter", [measurement("glucose", 5.9, "mmol/L")]).result()
        second, _ = send(store, central, "b2", "2026-11-23T09:00:00.000Z")
        told = device(central)
        assert told["identifier"][0] == bare["identifier"][0]  # central's key: unchanged
        assert told["serialNumber"] == "GLU-A1" and told["manufacturer"] == "Roche"
        assert resources(central) == {"Device": 1, "Patient": 1}  # the unidentified one
        ((updated,),) = central.query("SELECT updated_at FROM resources WHERE type = 'Device'")
        for payload in (first, second, first):  # replays, one late: nothing moves back
            central.store_batches([codec.decode_batch(payload)], "2026-11-23T10:00:00Z")
        assert device(central) == told
        assert central.query("SELECT updated_at FROM resources WHERE type = 'Device'") == [
            (updated,)
        ]
    central.close()


def device_entry(payload: bytes) -> dict[str, Any]:
    bundle = json.loads(codec._inflate(payload))
    entry: dict[str, Any] = next(
        e for e in bundle["entry"] if e["resource"]["resourceType"] == "Device"
    )
    return entry


def test_device_facts_travel_until_central_holds_them(tmp_path: Path) -> None:
    """A Device's facts go in full (PUT) until central acknowledged a batch carrying them;
    then the bare Device (a conditional create: no bytes for what central holds, nothing
    wiped there) until they change, or until central asks for a resend."""
    central = SqliteCentral(tmp_path / "central.db")
    key = {"system": f"urn:mmu:device:{UNIT}", "value": "meter"}
    with Store(tmp_path / "unit.db", UNIT) as store:
        store.call(
            lambda db: device_facts.save(
                db, "meter", {"serial": "GLU-A1", "manufacturer": "Roche", "mdc_type": 528401}
            )
        )

        def reading(value: float, batch_id: str) -> dict[str, Any]:
            store.append("meter", [measurement("glucose", value, "mmol/L")]).result()
            return device_entry(send(store, central, batch_id)[0])

        first = reading(5.5, "b1")
        assert first["request"]["method"] == "PUT" and first["resource"]["serialNumber"] == (
            "GLU-A1"
        )
        bare = reading(5.6, "b2")  # b1 was acknowledged: central holds these facts
        assert bare["resource"] == {"resourceType": "Device", "identifier": [key]}
        assert bare["request"] == {
            "method": "POST",
            "url": "Device",
            "ifNoneExist": f"identifier={key['system']}|meter",
        }
        assert device(central)["serialNumber"] == "GLU-A1"  # the bare one wiped nothing
        store.call(lambda db: device_facts.save(db, "meter", {"firmware": "2.1"}))
        changed = reading(5.7, "b3")
        assert changed["request"]["method"] == "PUT"
        assert changed["resource"]["version"][0]["value"] == "2.1"
        assert device(central)["version"][0]["value"] == "2.1"
        assert reading(5.8, "b4")["request"]["method"] == "POST"
        store.call(lambda db: outbox.resend_from(db, 1))  # central lost data: facts again
        assert reading(5.9, "b5")["request"]["method"] == "PUT"
    central.close()


def test_a_late_redelivery_never_takes_an_encounter_back(tmp_path: Path) -> None:
    """Central follows each entry's request: the Encounter (PUT) goes from in-progress to
    finished, and a redelivery of the older batch leaves it finished; the Patient (a
    conditional create) is created once."""
    central = SqliteCentral(tmp_path / "central.db")

    def encounter() -> dict[str, Any]:
        ((text,),) = central.query("SELECT resource FROM resources WHERE type = 'Encounter'")
        return json.loads(text)  # type: ignore[no-any-return]

    with Store(tmp_path / "unit.db", UNIT) as store:
        with writing(tmp_path / "unit.db") as nurse:
            open_encounter(nurse, "urn:mmu:patient:platform", PATIENT)
        store.append("ox", [measurement("spo2", 97.0)]).result()
        first, _ = send(store, central, "b1", "2026-11-23T08:00:00.000Z")
        assert encounter()["status"] == "in-progress"
        store.append("ox", [measurement("spo2", 96.0)]).result()  # bound to the encounter
        with writing(tmp_path / "unit.db") as nurse:
            close_encounter(nurse)
        send(store, central, "b2", "2026-11-23T09:00:00.000Z")
        assert encounter()["status"] == "finished"
        central.store_batches([codec.decode_batch(first)], "2026-11-23T10:00:00Z")
        assert encounter()["status"] == "finished"
        assert resources(central)["Patient"] == 1
    central.close()
