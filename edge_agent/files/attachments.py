"""The attachment store: teleconsultation files (DICOM, ECG, images, documents) beside the
SQLite store, content-addressed by sha256.

A file is *accepted* only when it is durable: its bytes are written to a temporary file,
fsynced, renamed to ``attachments/<sha[:2]>/<sha256>`` and the directory fsynced, and only
then does its row commit (through the store's one writer). A crash in between leaves at worst
an orphan file that the next copy of the same content reuses. Files are 0600 and their
directories 0700.

The same content is stored once (its sha256 is its id), and a DICOM instance once (its SOP
Instance UID is unique): a device that sends again after a lost response is recognised.

A disk budget (``[files] budget_mb``) is kept by evicting the local copies of files central
already holds, oldest acknowledgement first, never a file central does not hold: when that is
not enough the new file is refused (:class:`AttachmentsFull`) and the device keeps it.

Nothing here logs a file's name or content (a name may carry the patient's name).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mimetypes
import os
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from edge_agent.clock import utc_now
from edge_agent.durable import fsync_path
from edge_agent.errors import StoreError
from edge_agent.files.dicom_meta import MEDIA_TYPE as DICOM_MEDIA_TYPE
from edge_agent.files.dicom_meta import DicomMeta, is_dicom, read_meta
from edge_agent.store.writer import Store

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class FileKind(StrEnum):
    DICOM = "dicom"
    ECG = "ecg"  # an ECG export that is not DICOM (PDF, XML, SCP-ECG)
    IMAGE = "image"  # a photo from a dermatoscope, otoscope or USB camera
    VIDEO = "video"  # an ultrasound or endoscope clip
    DOCUMENT = "document"  # a spirometry report, an analyser printout


class AttachmentsFull(StoreError):
    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(
            "attachments.full",
            f"the attachment budget ({budget} bytes) is spent on files "
            f"central does not hold yet; {needed} more bytes refused (let sync catch up, or "
            "raise [files] budget_mb)",
            needed=needed,
            budget=budget,
        )


@dataclass(frozen=True)
class Added:
    file_id: str
    size: int
    new: bool  # False: this content (or DICOM instance) was already held


@dataclass(frozen=True)
class Attachment:
    file_id: str
    sha256: str
    size: int
    media_type: str
    kind: str
    name: str | None
    source_device: str | None
    encounter_id: str | None
    patient_system: str | None  # the encounter's patient identifier (edge_agent.store.encounters)
    patient_value: str | None
    study_uid: str | None
    series_uid: str | None
    instance_uid: str | None
    sop_class_uid: str | None
    modality: str | None
    received_at: str


def open_encounter_id(db: Database) -> str | None:
    """The encounter open when a file arrives (``edge-agent patient open``): the file is
    bound to it, like the readings taken meanwhile."""
    from edge_agent.store.encounters import current

    encounter = current(db)
    return None if encounter is None else encounter.id


def no_open_encounter(db: Database) -> str | None:
    return None


def classify(name: str | None, head: bytes, kind: str | None = None) -> tuple[str, str]:
    """(kind, media type) from the given kind, the content's first bytes, then the name."""
    if is_dicom(head):
        return kind or FileKind.DICOM, DICOM_MEDIA_TYPE
    media = mimetypes.guess_type(name or "")[0] or ""
    if head.startswith(b"%PDF"):
        media = "application/pdf"
    elif head.startswith(b"\x89PNG"):
        media = "image/png"
    elif head.startswith(b"\xff\xd8\xff"):
        media = "image/jpeg"
    media = media or "application/octet-stream"
    if kind is None:
        if media.startswith("image/"):
            kind = FileKind.IMAGE
        elif media.startswith("video/"):
            kind = FileKind.VIDEO
        else:
            kind = FileKind.DOCUMENT
    return kind, media


_listeners: weakref.WeakKeyDictionary[Store, list[Callable[[], None]]] = weakref.WeakKeyDictionary()


def add_listener(store: Store, listener: Callable[[], None]) -> None:
    """``listener()`` runs (in the adding thread) after a new file's row commits."""
    _listeners.setdefault(store, []).append(listener)


def remove_listener(store: Store, listener: Callable[[], None]) -> None:
    if listener in _listeners.get(store, []):
        _listeners[store].remove(listener)


def root_of(store_path: Path) -> Path:
    return store_path.parent / "attachments"


class AttachmentStore:
    def __init__(
        self,
        store: Store,
        *,
        root: Path | None = None,
        budget_bytes: int | None = None,
        open_encounter: Callable[[Database], str | None] = open_encounter_id,
    ) -> None:
        self.store = store
        self.root = root or root_of(store.path)
        self.budget_bytes = budget_bytes
        self.open_encounter = open_encounter
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        (self.root / "tmp").mkdir(mode=0o700, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    # --- adding ----------------------------------------------------------------------------
    def add_bytes(
        self,
        data: bytes,
        *,
        name: str | None = None,
        kind: str | None = None,
        device: str | None = None,
    ) -> Added:
        kind, media = classify(name, data[:132], kind)
        dicom = read_meta(data) if media == DICOM_MEDIA_TYPE else None
        if dicom is not None and dicom.instance_uid is not None:
            held = self._held_instance(dicom.instance_uid)
            if held is not None:
                return held
        return self._add(
            [data], len(data), name=name, kind=kind, media=media, device=device, dicom=dicom
        )

    def add_file(self, path: Path, *, kind: str | None = None, device: str | None = None) -> Added:
        with path.open("rb") as f:
            head = f.read(132)
        kind, media = classify(path.name, head, kind)
        dicom = read_meta(path.read_bytes()) if media == DICOM_MEDIA_TYPE else None
        if dicom is not None and dicom.instance_uid is not None:
            held = self._held_instance(dicom.instance_uid)
            if held is not None:
                return held
        return self._add(
            _chunks(path),
            path.stat().st_size,
            name=path.name,
            kind=kind,
            media=media,
            device=device,
            dicom=dicom,
        )

    def _held_instance(self, instance_uid: str) -> Added | None:
        row = self.store.read(
            lambda db: db.execute(
                "SELECT file_id, size FROM attachments WHERE instance_uid = ?", [instance_uid]
            ).fetchone()
        )
        return None if row is None else Added(str(row[0]), int(row[1]), new=False)

    def _add(
        self,
        chunks: Iterable[bytes],
        size_hint: int,
        *,
        name: str | None,
        kind: str,
        media: str,
        device: str | None,
        dicom: DicomMeta | None,
    ) -> Added:
        self.make_room(size_hint)
        sha, size = self._write_durably(chunks)
        meta = dicom or DicomMeta(None, None, None, None, None)
        row: dict[str, Any] = {
            "file_id": sha,
            "sha256": sha,
            "size": size,
            "media_type": media,
            "kind": kind,
            "name": name,
            "source_device": device,
            "study_uid": meta.study_uid,
            "series_uid": meta.series_uid,
            "instance_uid": meta.instance_uid,
            "sop_class_uid": meta.sop_class_uid,
            "modality": meta.modality,
            "received_at": utc_now(),
        }

        def op(db: Database) -> bool:
            found = db.execute(
                "SELECT evicted_at FROM attachments WHERE file_id = ?", [sha]
            ).fetchone()
            if found is not None:
                if found[0] is not None:  # evicted, now held again
                    db.execute("UPDATE attachments SET evicted_at = NULL WHERE file_id = ?", [sha])
                return False
            row["encounter_id"] = self.open_encounter(db)
            cols = ", ".join(row)
            db.execute(
                f"INSERT INTO attachments ({cols}) VALUES ({', '.join('?' for _ in row)})",
                list(row.values()),
            )
            return True

        new = self.store.call(op)
        if new:
            log.info(
                "attachments: stored a %s file of %d bytes (%s) from %s",
                kind,
                size,
                sha[:12],
                device or "the command line",
            )
            for listener in list(_listeners.get(self.store, [])):
                try:
                    listener()
                except Exception:
                    log.exception("attachments: listener failed")
        return Added(sha, size, new)

    def _write_durably(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")  # 0600
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                f.flush()
                os.fsync(f.fileno())
            sha = digest.hexdigest()
            final = self.path_of(sha)
            fresh_dir = not final.parent.exists()
            final.parent.mkdir(mode=0o700, exist_ok=True)
            if final.exists() and final.stat().st_size == size:
                os.unlink(tmp)  # this content is here already (an orphan, or an eviction race)
            else:
                os.replace(tmp, final)
            fsync_path(final.parent)
            if fresh_dir:
                fsync_path(self.root)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return sha, size

    # --- budget -----------------------------------------------------------------------------
    def make_room(self, size: int) -> list[str]:
        """Evict held files (oldest acknowledgement first) until ``size`` more bytes fit the
        budget; :class:`AttachmentsFull` when only files central lacks would remain."""
        budget = self.budget_bytes
        if budget is None:
            return []

        def op(db: Database) -> tuple[int, list[tuple[str, int]]]:
            used = db.execute(
                "SELECT coalesce(sum(size), 0) FROM attachments WHERE evicted_at IS NULL"
            ).fetchone()[0]
            held = db.execute(
                "SELECT file_id, size FROM attachments WHERE evicted_at IS NULL "
                "AND central_holds_at IS NOT NULL ORDER BY central_holds_at, "
                "file_id"
            ).fetchall()
            return int(used), [(str(r[0]), int(r[1])) for r in held]

        used, held = self.store.read(op)
        victims: list[str] = []
        for file_id, victim_size in held:
            if used + size <= budget:
                break
            victims.append(file_id)
            used -= victim_size
        if used + size > budget:
            raise AttachmentsFull(size, budget)
        if victims:
            at = utc_now()
            # The rows first: a crash after this leaves orphan files, never a row that says
            # "here" for a file that is gone.
            self.store.call(
                lambda db: db.conn.executemany(
                    "UPDATE attachments SET evicted_at = ? WHERE file_id = ? AND central_holds_at "
                    "IS NOT NULL",
                    [(at, v) for v in victims],
                )
            )
            for file_id in victims:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path_of(file_id))
            log.info("attachments: evicted %d files central holds", len(victims))
        return victims


def pending(db: Database) -> list[Attachment]:
    """Files central does not hold yet, oldest first (the upload queue)."""
    rows = db.execute(
        "SELECT a.file_id, a.sha256, a.size, a.media_type, a.kind, a.name, a.source_device, "
        "a.encounter_id, e.patient_system, e.patient_value, a.study_uid, a.series_uid, "
        "a.instance_uid, a.sop_class_uid, a.modality, a.received_at FROM attachments a "
        "LEFT JOIN encounters e ON e.id = a.encounter_id WHERE a.central_holds_at IS NULL AND "
        "a.failed IS NULL AND a.evicted_at IS NULL ORDER BY a.received_at, a.file_id"
    ).fetchall()
    return [Attachment(*row) for row in rows]


def mark_held(db: Database, file_id: str, at: str) -> None:
    db.execute(
        "UPDATE attachments SET central_holds_at = ? WHERE file_id = ? AND "
        "central_holds_at IS NULL",
        [at, file_id],
    )


def mark_failed(db: Database, file_id: str, reason: str) -> None:
    db.execute("UPDATE attachments SET failed = ? WHERE file_id = ?", [reason, file_id])


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk
