"""The attachment store: content-addressed, durable before its row, 0600, once per content and
per DICOM instance, and a budget that evicts only files central holds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pydicom
import pytest

from edge_agent.files import attachments
from edge_agent.files.attachments import AttachmentsFull, AttachmentStore, classify
from edge_agent.files.dicom_meta import read_meta
from edge_agent.store.writer import Store

UNIT = "mmu-t"
CT = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def test_a_file_is_on_disk_and_synced_before_its_row_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(a: str, b: str) -> None:
        events.append("rename")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with Store(tmp_path / "unit.db", UNIT) as store:
        files = AttachmentStore(store)
        real_call = store.call

        def call(op: object, timeout: float | None = 60) -> object:
            events.append("commit")
            return real_call(op, timeout)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "call", call)
        added = files.add_bytes(b"%PDF-1.4 report", name="r.pdf")
        monkeypatch.undo()
        path = files.path_of(added.file_id)
        assert path.read_bytes() == b"%PDF-1.4 report"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(files.root.stat().st_mode) == 0o700
    # data fsynced, renamed into place, its directory fsynced, then the row
    assert events[:4] == ["fsync", "rename", "fsync", "fsync"] and events[-1] == "commit"
    assert "commit" not in events[:-1]


def test_the_same_content_and_the_same_dicom_instance_are_stored_once(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", UNIT) as store:
        files = AttachmentStore(store)
        first = files.add_file(CT, device="us-1")
        assert first.new
        assert files.add_bytes(CT.read_bytes()).new is False
        # The same instance re-encoded (another file meta): recognised by its SOP Instance UID.
        ds = pydicom.dcmread(CT)
        ds.file_meta.ImplementationVersionName = "OTHER_SCU"
        other = tmp_path / "again.dcm"
        ds.save_as(other)
        assert other.read_bytes() != CT.read_bytes()
        again = files.add_file(other)
        assert (again.file_id, again.new) == (first.file_id, False)
        rows = store.read(
            lambda db: db.execute(
                "SELECT kind, media_type, modality, instance_uid FROM attachments"
            ).fetchall()
        )
    meta = read_meta(CT.read_bytes())
    assert rows == [("dicom", "application/dicom", "CT", meta.instance_uid)]


def test_the_budget_evicts_only_files_central_holds(tmp_path: Path) -> None:
    with Store(tmp_path / "unit.db", UNIT) as store:
        files = AttachmentStore(store, budget_bytes=250_000)
        a = files.add_bytes(os.urandom(100_000), name="a.jpg")
        b = files.add_bytes(os.urandom(100_000), name="b.jpg")
        with pytest.raises(AttachmentsFull):  # nothing central holds: refused, nothing evicted
            files.add_bytes(os.urandom(100_000), name="c.jpg")
        store.call(lambda db: attachments.mark_held(db, b.file_id, "2026-01-01T00:00:00Z"))
        c = files.add_bytes(os.urandom(100_000), name="c.jpg")
        assert files.path_of(a.file_id).exists() and files.path_of(c.file_id).exists()
        assert not files.path_of(b.file_id).exists()  # the one central holds
        pending = {p.file_id for p in store.read(attachments.pending)}
        assert pending == {a.file_id, c.file_id}
        evicted = store.read(
            lambda db: db.execute(
                "SELECT file_id FROM attachments WHERE evicted_at IS NOT NULL"
            ).fetchall()
        )
        assert evicted == [(b.file_id,)]
        assert not list((files.root / "tmp").iterdir())  # no temporary file left behind


@pytest.mark.parametrize(
    ("name", "head", "kind", "expected"),
    [
        ("x.pdf", b"%PDF-1.7", None, ("document", "application/pdf")),
        ("ecg.pdf", b"%PDF-1.7", "ecg", ("ecg", "application/pdf")),
        ("photo", b"\xff\xd8\xff\xe0", None, ("image", "image/jpeg")),
        ("p.png", b"\x89PNG\r\n", None, ("image", "image/png")),
        ("clip.mp4", b"\x00\x00\x00\x18ftyp", None, ("video", "video/mp4")),
        ("scp.xml", b"<?xml", "ecg", ("ecg", "application/xml")),
        ("n", b"\x00" * 128 + b"DICM", None, ("dicom", "application/dicom")),
    ],
)
def test_kind_and_media_type(
    name: str, head: bytes, kind: str | None, expected: tuple[str, str]
) -> None:
    assert classify(name, head, kind) == expected
