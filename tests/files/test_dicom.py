"""DICOM C-STORE into the agent with pynetdicom's own SCU (``python -m pynetdicom storescu``)
and test files shipped by pydicom; then through the real daemon and receiver to central."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
from pathlib import Path

import pydicom
import pytest

from edge_agent.files.attachments import AttachmentStore
from edge_agent.files.dicom_scp import DicomReceiver
from edge_agent.store.writer import Store
from sync.central.receiver import Receiver
from sync.daemon import SyncDaemon
from tests.broker import MosquittoBroker
from tests.files.kit import UNIT, central_object, complete, resources, settings
from tests.sync.checker import wait_until

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# Shipped with pydicom (no download): a CT and an MR image, a 12-lead ECG waveform.
SOURCES = ["CT_small.dcm", "MR_small.dcm", "waveform_ecg.dcm"]


async def storescu(port: int, *paths: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pynetdicom", "storescu", "127.0.0.1", str(port),
        *map(str, paths), "-aec", "EDGEAGENT", "-v",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode(errors="replace")


def elements(data: bytes) -> dict[int, object]:
    """A Part 10 file's data set, element by element (storescu may change the transfer
    syntax it sends in, so the bytes after the file meta may differ from the source file's)."""
    from io import BytesIO

    # Implicit VR reads an empty text element as None, explicit VR as "": the same absence;
    # and a private element's VR is unknown once implicit (raw bytes): public elements only.
    return {int(e.tag): None if e.value == "" else e.value
            for e in pydicom.dcmread(BytesIO(data)) if not e.tag.is_private}


async def test_storescu_instances_reach_central_byte_identical_once_with_imaging_study(
        tmp_path: Path, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = settings(tmp_path, mosquitto.port)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    with Store(cfg.store.path, UNIT) as store:
        files = AttachmentStore(store)
        scp = DicomReceiver(files, port=0, device="us-1")
        scp.start()
        try:
            code, out = await storescu(scp.port, *(TEST_FILES / n for n in SOURCES))
            assert code == 0, out
            assert out.count("Status 0x0000") == 3 or "Success" in out, out
            # The device sends the CT again (a lost response): Success, not stored twice.
            code, out = await storescu(scp.port, TEST_FILES / "CT_small.dcm")
            assert code == 0, out
        finally:
            scp.stop()
        assert (scp.stored, scp.recognised, scp.refused) == (3, 1, 0)
        rows = store.read(lambda db: db.execute(
            "SELECT file_id, instance_uid, study_uid, modality, media_type, source_device "
            "FROM attachments ORDER BY modality").fetchall())
        assert [r[3] for r in rows] == ["CT", "ECG", "MR"]
        assert {r[4] for r in rows} == {"application/dicom"} and {r[5] for r in rows} == {"us-1"}
        tasks = [asyncio.create_task(Receiver("127.0.0.1", mosquitto.port, central).run(stop)),
                 asyncio.create_task(SyncDaemon(store, cfg).run(stop))]
        await wait_until(lambda: all(complete(central, r[0]) for r in rows), 60,
                         "instances at central")
        stop.set()
        await asyncio.gather(*tasks)
    for name in SOURCES:
        source = (TEST_FILES / name).read_bytes()
        uid = str(pydicom.dcmread(TEST_FILES / name, stop_before_pixels=True).SOPInstanceUID)
        file_id = next(r[0] for r in rows if r[1] == uid)
        at_central = central_object(central, file_id)
        unit_copy = (cfg.store.path.parent / "attachments" / file_id[:2] / file_id).read_bytes()
        assert at_central == unit_copy  # byte-identical to what the agent acknowledged
        assert elements(at_central) == elements(source)  # and to what the device sent
    studies = resources(central, "ImagingStudy")
    by_study: dict[str, set[str]] = {}
    for r in rows:
        by_study.setdefault(r[2], set()).add(r[1])
    assert len(studies) == len(by_study)
    for study in studies:
        uid = study["identifier"][0]["value"].removeprefix("urn:oid:")
        instances = {i["uid"] for s in study["series"] for i in s["instance"]}
        assert instances == by_study[uid]
        assert study["numberOfInstances"] == len(instances)
    with sqlite3.connect(central.with_name("central.files") / "files.db") as db:
        assert db.execute("SELECT count(*) FROM uploads WHERE state = 'complete'"
                          ).fetchone()[0] == 3
    names = [str(pydicom.dcmread(TEST_FILES / n, stop_before_pixels=True).PatientName)
             for n in SOURCES]
    for name in filter(None, names):  # the patient's name is in the files, never in a log
        assert name not in caplog.text
        assert name.split("^")[0] not in caplog.text


async def test_a_full_budget_answers_out_of_resources_and_stores_nothing(tmp_path: Path
                                                                        ) -> None:
    with Store(tmp_path / "unit.db", UNIT) as store:
        files = AttachmentStore(store, budget_bytes=10_000)  # less than CT_small
        scp = DicomReceiver(files, port=0)
        scp.start()
        try:
            _, out = await storescu(scp.port, TEST_FILES / "CT_small.dcm")
        finally:
            scp.stop()
        count = store.read(lambda db: db.execute("SELECT count(*) FROM attachments"
                                                 ).fetchone()[0])
    assert "0xA700" in out, out  # the device keeps the instance and sends it again later
    assert (scp.stored, scp.refused, count) == (0, 1, 0)
