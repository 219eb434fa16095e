"""Files from the unit's attachment store to central through a real Mosquitto, the real sync
daemon and the reference receiver: byte-identical, once, with their FHIR resource."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from edge_agent.files.attachments import AttachmentStore, FileKind
from edge_agent.store.encounters import open_encounter
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.files.kit import (
    UNIT,
    central_object,
    central_upload,
    complete,
    resources,
    settings,
    unit_holds,
)
from tests.sync.checker import wait_until


async def test_documents_and_images_reach_central_once_with_their_resources(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    cfg = settings(tmp_path, mosquitto.port)
    central = tmp_path / "central.db"
    pdf = b"%PDF-1.4\n" + os.urandom(300_000)
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(150_000)
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        encounter = store.call(
            lambda db: open_encounter(db, "urn:oid:1.2.250.1.213.1.4.8", "1850172123456")
        )
        files = AttachmentStore(store)  # bound to the open encounter
        doc = files.add_bytes(pdf, name="spiro.pdf", device="spiro-1")
        ecg = files.add_bytes(pdf[:100_000], name="ecg.pdf", kind=FileKind.ECG, device="ecg-1")
        img = files.add_bytes(png, name="derm.png", device="cam-1")
        assert files.add_bytes(png, name="again.png").new is False  # same content: once
        daemon = SyncDaemon(store, cfg)
        tasks = [
            asyncio.create_task(Receiver("127.0.0.1", mosquitto.port, central).run(stop)),
            asyncio.create_task(daemon.run(stop)),
        ]
        await wait_until(
            lambda: all(complete(central, a.file_id) for a in (doc, ecg, img)), 30, "files complete"
        )
        await wait_until(
            lambda: all(unit_holds(cfg.store.path, a.file_id) for a in (doc, ecg, img)),
            10,
            "unit marks them held",
        )
        stop.set()
        await asyncio.gather(*tasks)
    assert central_object(central, doc.file_id) == pdf
    assert central_object(central, img.file_id) == png
    assert central_object(central, ecg.file_id) == pdf[:100_000]
    row = central_upload(central, doc.file_id)
    assert row is not None and row["segment_bytes_in"] == len(pdf)  # nothing sent twice
    docs = resources(central, "DocumentReference")
    assert len(docs) == 2
    ecg_doc = next(d for d in docs if d["type"].get("coding"))
    assert ecg_doc["type"]["coding"][0]["code"] == "11524-6"
    media = resources(central, "Media")
    assert [m["content"]["url"] for m in media] == [f"urn:mmu:file:sha256:{img.file_id}"]
    assert media[0]["content"]["contentType"] == "image/png"
    # The patient and encounter the unit's readings refer to (sync/fhir.py), by identifier.
    assert ecg_doc["subject"] == {
        "type": "Patient",
        "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1850172123456"},
    }
    assert (
        ecg_doc["context"]["encounter"]
        == [media[0]["encounter"]]
        == [
            {
                "type": "Encounter",
                "identifier": {"system": "urn:mmu:encounter", "value": encounter.id},
            }
        ]
    )
