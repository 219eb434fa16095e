"""DICOM C-STORE into the agent with pynetdicom's own SCU (``python -m pynetdicom storescu``)
and test files shipped by pydicom; then through the real daemon and receiver to central."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import zlib
from io import BytesIO
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


# Compressed instances shipped with pydicom, one per transfer syntax family (distinct SOP
# Instance UIDs: pydicom's MR_small_* share one).
COMPRESSED = {
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "JPGExtended.dcm": "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "SC_rgb_jpeg_gdcm.dcm": "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "SC_rgb_jls_lossy_line.dcm": "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",  # RLE Lossless
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
}


async def scu(
    app: str, port: int, *args: str, called: str = "EDGEAGENT", calling: str | None = None
) -> tuple[int, str]:
    """pynetdicom's own storescu/echoscu as the peer."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pynetdicom",
        app,
        "127.0.0.1",
        str(port),
        *args,
        "-aec",
        called,
        *(["-aet", calling] if calling else []),
        "-v",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode(errors="replace")


async def storescu(
    port: int,
    *paths: Path,
    options: tuple[str, ...] = (),
    called: str = "EDGEAGENT",
    calling: str | None = None,
) -> tuple[int, str]:
    return await scu("storescu", port, *map(str, paths), *options, called=called, calling=calling)


def dataset_part(data: bytes) -> bytes:
    """The bytes of a Part 10 file after its file meta (group 0002, length-prefixed)."""
    assert data[132:136] == b"\x02\x00\x00\x00", "file meta starts with its group length"
    return data[144 + int.from_bytes(data[140:144], "little") :]


def elements(data: bytes) -> dict[int, object]:
    """A Part 10 file's data set, element by element (storescu may change the transfer
    syntax it sends in, so the bytes after the file meta may differ from the source file's)."""
    from io import BytesIO

    # Implicit VR reads an empty text element as None, explicit VR as "": the same absence;
    # and a private element's VR is unknown once implicit (raw bytes): public elements only.
    return {
        int(e.tag): None if e.value == "" else e.value
        for e in pydicom.dcmread(BytesIO(data))
        if not e.tag.is_private
    }


async def test_storescu_instances_reach_central_byte_identical_once_with_imaging_study(
    tmp_path: Path, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
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
        rows = store.read(
            lambda db: db.execute(
                "SELECT file_id, instance_uid, study_uid, modality, media_type, source_device "
                "FROM attachments ORDER BY modality"
            ).fetchall()
        )
        assert [r[3] for r in rows] == ["CT", "ECG", "MR"]
        assert {r[4] for r in rows} == {"application/dicom"} and {r[5] for r in rows} == {"us-1"}
        tasks = [
            asyncio.create_task(Receiver("127.0.0.1", mosquitto.port, central).run(stop)),
            asyncio.create_task(SyncDaemon(store, cfg).run(stop)),
        ]
        await wait_until(
            lambda: all(complete(central, r[0]) for r in rows), 60, "instances at central"
        )
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
        assert (
            db.execute("SELECT count(*) FROM uploads WHERE state = 'complete'").fetchone()[0] == 3
        )
    names = [
        str(pydicom.dcmread(TEST_FILES / n, stop_before_pixels=True).PatientName) for n in SOURCES
    ]
    for name in filter(None, names):  # the patient's name is in the files, never in a log
        assert name not in caplog.text
        assert name.split("^")[0] not in caplog.text


async def test_a_full_budget_answers_out_of_resources_and_stores_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", UNIT) as store:
        files = AttachmentStore(store, budget_bytes=10_000)  # less than CT_small
        scp = DicomReceiver(files, port=0)
        scp.start()
        try:
            _, out = await storescu(scp.port, TEST_FILES / "CT_small.dcm")
        finally:
            scp.stop()
        count = store.read(lambda db: db.execute("SELECT count(*) FROM attachments").fetchone()[0])
    assert "0xA700" in out, out  # the device keeps the instance and sends it again later
    assert (scp.stored, scp.refused, count) == (0, 1, 0)


async def test_compressed_instances_are_accepted_kept_as_sent_and_reach_central_once(
    tmp_path: Path, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE and deflate, each sent by
    storescu in its own transfer syntax (-cx: only the contexts the files need)."""
    caplog.set_level(logging.DEBUG)
    cfg = settings(tmp_path, mosquitto.port)
    central = tmp_path / "central.db"
    stop = asyncio.Event()
    paths = [TEST_FILES / n for n in COMPRESSED]
    with Store(cfg.store.path, UNIT) as store:
        scp = DicomReceiver(AttachmentStore(store), port=0, device="derm-1")
        scp.start()
        try:
            code, out = await storescu(scp.port, *paths, options=("-cx",))
        finally:
            scp.stop()
        assert code == 0, out
        assert (scp.stored, scp.refused) == (len(COMPRESSED), 0), out
        rows = dict(
            store.read(
                lambda db: db.execute("SELECT instance_uid, file_id FROM attachments").fetchall()
            )
        )
        tasks = [
            asyncio.create_task(Receiver("127.0.0.1", mosquitto.port, central).run(stop)),
            asyncio.create_task(SyncDaemon(store, cfg).run(stop)),
        ]
        await wait_until(
            lambda: all(complete(central, f) for f in rows.values()),
            60,
            "compressed instances at central",
        )
        stop.set()
        await asyncio.gather(*tasks)
    assert len(rows) == len(COMPRESSED)
    for name, syntax in COMPRESSED.items():
        source = (TEST_FILES / name).read_bytes()
        uid = str(pydicom.dcmread(TEST_FILES / name, stop_before_pixels=True).SOPInstanceUID)
        at_central = central_object(central, rows[uid])
        unit_copy = (cfg.store.path.parent / "attachments" / rows[uid][:2] / rows[uid]).read_bytes()
        assert at_central == unit_copy, name
        kept = pydicom.dcmread(BytesIO(at_central), stop_before_pixels=True)
        assert kept.file_meta.TransferSyntaxUID == syntax, name  # not decompressed
        if syntax == "1.2.840.10008.1.2.1.99":
            # storescu deflates again when it encodes: the same data set once inflated.
            assert zlib.decompress(dataset_part(at_central), -15) == zlib.decompress(
                dataset_part(source), -15
            ), name
        else:
            assert dataset_part(at_central) == dataset_part(source), name
    with sqlite3.connect(central.with_name("central.files") / "files.db") as db:
        assert (
            db.execute(
                "SELECT count(*), sum(segment_bytes_in = size) FROM uploads WHERE "
                "state = 'complete'"
            ).fetchone()
            == (len(COMPRESSED),) * 2
        )  # once
    for name in COMPRESSED:
        patient = str(
            pydicom.dcmread(TEST_FILES / name, stop_before_pixels=True).get("PatientName") or ""
        ).strip("^")
        if patient:
            assert patient.split("^")[0] not in caplog.text, name


async def test_an_association_must_call_the_agent_and_come_from_an_allowed_ae(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """pynetdicom's echoscu and storescu as the peer: a wrong called AE title is rejected
    (before: C-ECHO and C-STORE succeeded), a calling AE outside dicom_calling_aes too; the
    right ones are accepted. Rejections are logged (AE titles, no patient data) and counted."""
    caplog.set_level(logging.INFO)
    ct = TEST_FILES / "CT_small.dcm"
    with Store(tmp_path / "unit.db", UNIT) as store:
        scp = DicomReceiver(
            AttachmentStore(store), port=0, ae_title="VAN12", calling_aes=["US-VAN12", "DERMCAM"]
        )
        scp.start()
        try:
            wrong_called = await scu("echoscu", scp.port, called="ANY-SCP", calling="US-VAN12")
            wrong_store = await storescu(scp.port, ct, called="PACS", calling="US-VAN12")
            stranger = await scu("echoscu", scp.port, called="VAN12", calling="LAPTOP")
            stranger_store = await storescu(scp.port, ct, called="VAN12", calling="LAPTOP")
            echo = await scu("echoscu", scp.port, called="VAN12", calling="DERMCAM")
            stored = await storescu(scp.port, ct, called="VAN12", calling="US-VAN12")
        finally:
            scp.stop()
        count = store.read(lambda db: db.execute("SELECT count(*) FROM attachments").fetchone()[0])
    for _, out in (wrong_called, wrong_store, stranger, stranger_store):
        assert "Association Rejected" in out, out
        assert "Success" not in out, out
    assert "Called AE title not recognised" in wrong_called[1], wrong_called[1]
    assert "Calling AE title not recognised" in stranger[1], stranger[1]
    assert echo[0] == 0 and "Echo Response (Status: 0x0000 - Success)" in echo[1], echo[1]
    assert stored[0] == 0 and "0x0000" in stored[1], stored[1]
    assert (scp.rejected, scp.stored, count) == (4, 1, 1)
    rejected = [r.getMessage() for r in caplog.records if "rejected an association" in r.message]
    assert len(rejected) == 4
    assert "called AE title 'ANY-SCP', not 'VAN12'" in rejected[0], rejected
    assert "calling AE title 'LAPTOP' is not in dicom_calling_aes" in rejected[2], rejected
    patient = str(pydicom.dcmread(ct, stop_before_pixels=True).PatientName)
    assert patient.split("^")[0] not in caplog.text


async def test_an_empty_calling_list_lets_any_device_in_but_the_called_ae_still_counts(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "unit.db", UNIT) as store:
        scp = DicomReceiver(AttachmentStore(store), port=0)  # EDGEAGENT, any calling AE
        scp.start()
        try:
            anyone = await scu("echoscu", scp.port, calling="WHATEVER")
            wrong = await scu("echoscu", scp.port, called="edgeagent", calling="WHATEVER")
        finally:
            scp.stop()
    assert anyone[0] == 0 and "0x0000 - Success" in anyone[1], anyone[1]
    assert "Association Rejected" in wrong[1], wrong[1]  # AE titles are case-sensitive
    assert scp.rejected == 1
