"""A central store as the receiver leaves it, for the export tests: two units' batches built by
the real codec out of real unit stores (an encounter with its patient and GPS place, readings
before it with the Device as subject, a BP panel attributed later by ``patient assign``, GPS
fixes) stored by the real CentralStore, and files received by central's real reassembly."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.clock import utc_now
from edge_agent.models import measurement
from edge_agent.store.encounters import assign, open_encounter, writing
from edge_agent.store.writer import Store
from sync import codec, outbox
from sync.central.files import CentralFiles, default_files_dir
from sync.central.store import CentralStore
from sync.files.protocol import AckState, FileFin, FileInit, UpMessage, checksum

UNIT, OTHER = "mmu-export", "mmu-other"
PATIENT = ("urn:mmu:patient:platform", "CANARY-P-0042")
T1, T2 = "2026-11-23T08:00:01.000Z", "2026-11-23T09:00:00.000Z"


@dataclass
class Built:
    panel: list[int]  # the BP panel's seqs (sent unattributed at T1, assigned at T2)
    before: list[str]  # reading ids stored at T1 and never updated (UNIT)
    after: list[str]  # reading ids stored at T2 (UNIT)
    other: list[str]  # OTHER's reading ids (T1)
    encounter: str


def send(
    store: Store, central: CentralStore, unit: str, batch_id: str, stored_at: str
) -> list[dict[str, Any]]:
    """Take a batch as the daemon does, store it at central, mark it acknowledged."""
    rows = store.read(lambda db: outbox.next_batch(db, 500))
    seqs = [r["seq"] for r in rows]
    store.call(lambda db: outbox.record_batch(db, batch_id, seqs, utc_now()))
    payload = codec.encode_batch(
        unit, batch_id, rows, "2026-11-23T08:00:00.000Z", epoch=store.epoch
    )
    central.store_batches([codec.decode_batch(payload)], stored_at)
    store.call(lambda db: outbox.mark_acked(db, batch_id))
    return rows


def ids(store: Store, seqs: list[int]) -> list[str]:
    return store.read(
        lambda db: [
            str(r[0])
            for r in db.execute(
                f"SELECT id FROM readings WHERE seq IN ({','.join('?' * len(seqs))})", seqs
            )
        ]
    )


def build(tmp: Path, central: CentralStore) -> Built:
    with Store(tmp / "unit.db", UNIT) as store:
        gps = store.append(
            "gps",
            [
                measurement("latitude", 33.57),
                measurement("longitude", -7.59),
                measurement("altitude", 50.0),
            ],
        ).result()
        cuff = store.append(
            "cuff", [measurement("systolic_bp", 121.0), measurement("diastolic_bp", 79.0)]
        ).result()
        ox = store.append("ox", [measurement("spo2", 97.0)]).result()
        send(store, central, UNIT, "b1", T1)
        with writing(tmp / "unit.db") as nurse:  # the nurse opens the patient, assigns the cuff
            encounter = open_encounter(nurse, *PATIENT)
            assert assign(nurse, cuff) == 2
        later = store.append(
            "ox", [measurement("spo2", 98.0), measurement("pulse_rate", 71.0)]
        ).result()
        send(store, central, UNIT, "b2", T2)
        built = Built(cuff, ids(store, gps + ox), ids(store, cuff + later), [], encounter.id)
    with Store(tmp / "other.db", OTHER) as store:
        seqs = store.append("scale", [measurement("body_weight", 70.5)]).result()
        send(store, central, OTHER, "o1", T1)
        built.other = ids(store, seqs)
    return built


def upload(
    files: CentralFiles, unit: str, data: bytes, media_type: str, kind: str, **extra: Any
) -> None:
    """One file through central's reassembly: init, one segment, fin."""
    sha = checksum(data)
    init = FileInit(sha, sha, len(data), media_type, kind, len(data), utc_now(), **extra)
    for up, payload, seg in (
        (UpMessage(unit, sha, "init", None), init.encode(), None),
        (UpMessage(unit, sha, "seg", 0), data, checksum(data)),
        (UpMessage(unit, sha, "fin", None), FileFin(len(data), sha).encode(), None),
    ):
        ack = files.handle(up, payload, seg)
    assert ack.state is AckState.COMPLETE, ack


def build_files(central_db: Path, encounter: str) -> None:
    root = default_files_dir(central_db)
    assert root is not None
    files = CentralFiles(root)
    try:
        who = {"encounter_id": encounter, "patient_system": PATIENT[0], "patient_value": PATIENT[1]}
        upload(files, UNIT, b"%PDF-1.4 referral", "application/pdf", "document", **who)
        upload(files, UNIT, b"\xff\xd8\xff wound photo", "image/jpeg", "image", **who)
        upload(
            files,
            UNIT,
            b"DICM ultrasound",
            "application/dicom",
            "dicom",
            study_uid="1.2.3.4",
            series_uid="1.2.3.4.1",
            instance_uid="1.2.3.4.1.1",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1",
            modality="US",
            **who,
        )
        upload(files, OTHER, b"%PDF-1.4 other unit, no patient", "application/pdf", "document")
    finally:
        files.close()


def read_export(out: Path) -> dict[str, list[dict[str, Any]]]:
    """type -> its resources, from the files the manifest lists."""
    manifest = json.loads((out / "manifest.json").read_text())
    found: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        lines = (out / item["url"].rsplit("/", 1)[-1]).read_text().splitlines()
        found[item["type"]] = [json.loads(line) for line in lines]
        assert len(lines) == item["count"]
    return found
