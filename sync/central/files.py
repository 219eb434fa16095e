"""Central's side of the file transfer (:mod:`sync.files.protocol`): reassembly into its own
content-addressed store, verification, records and FHIR resources.

Each upload is a partial file ``partial/{unit}/{file_id}.part`` and a row holding the offset
central has durably (the bytes fsynced before the row commits; on a restart the partial file
is cut back to that offset, whatever a crash left beyond it). A segment is taken only at that
offset and only when its own sha256 matches; ``fin`` is taken only when the whole file's
sha256 matches, and only then is the file moved to ``objects/<sha[:2]>/<sha256>``, marked
complete and described in FHIR, in one transaction. A file whose checksum does not match is
dropped and never marked received. Every message is answered with the offset central holds.

The records live in ``files.db`` beside the objects (SQLite), whatever database the readings
use. One receiver serves the file topics, with a plain subscription, not the shared one: the
partial files and their offsets are that receiver's own, on its disk, so a segment handed to
another receiver of the group would find no upload there. Several receivers of a group run
with ``--no-files`` but one (``edge-agent receive --files-dir``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from edge_agent.clock import utc_now
from edge_agent.durable import fsync_path
from edge_agent.errors import LinkError
from sync.central import files_fhir
from sync.files import emqx, protocol
from sync.files.protocol import AckState, FileAck, FileFin, FileInit, UpMessage
from sync.link import LinkEvent, MqttLink

log = logging.getLogger(__name__)
UNIT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
MAX_SEGMENT = 4 * 1024 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    unit TEXT NOT NULL,
    file_id TEXT NOT NULL,
    init TEXT NOT NULL,
    size INTEGER NOT NULL,
    offset INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'receiving',
    segment_bytes_in INTEGER NOT NULL DEFAULT 0,
    bad_segments INTEGER NOT NULL DEFAULT 0,
    mismatches INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    PRIMARY KEY (unit, file_id)
);
CREATE TABLE IF NOT EXISTS file_resources (
    id TEXT PRIMARY KEY,
    unit TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


def default_files_dir(db_path: Path | str) -> Path | None:
    """``central.db`` -> ``central.files/``; None for a PostgreSQL URL (give one explicitly)."""
    if isinstance(db_path, str) and "://" in db_path:
        return None
    path = Path(db_path)
    return path.with_name(path.stem + ".files")


class CentralFiles:
    """Synchronous; one thread at a time (the route's worker)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = sqlite3.connect(root / "files.db", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._recover()

    def _recover(self) -> None:
        """After a restart: each partial file back to the offset its row holds (a crash between
        a segment's write and its row's commit leaves bytes central never acknowledged)."""
        for unit, file_id, offset in self.db.execute(
            "SELECT unit, file_id, offset FROM uploads WHERE state = 'receiving'"
        ).fetchall():
            self._cut(str(unit), str(file_id), int(offset))

    def close(self) -> None:
        self.db.close()

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def _partial(self, unit: str, file_id: str) -> Path:
        return self.root / "partial" / unit / f"{file_id}.part"

    def _row(self, unit: str, file_id: str) -> sqlite3.Row | None:
        self.db.row_factory = sqlite3.Row
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM uploads WHERE unit = ? AND file_id = ?", [unit, file_id]
        ).fetchone()
        return row

    def held(self, unit: str, file_id: str) -> int | None:
        """The bytes of an upload central holds durably; None when it has no init."""
        row = self._row(unit, file_id)
        if row is None:
            return None
        return int(row["size"]) if row["state"] == "complete" else int(row["offset"])

    # --- messages ---------------------------------------------------------------------------
    def handle(self, up: UpMessage, payload: bytes, seg_checksum: str | None) -> FileAck:
        reply = f"seg/{up.offset}" if up.part == "seg" else up.part
        if not UNIT_ID.match(up.unit):
            return FileAck(up.file_id, AckState.MISMATCH, 0, "unit id not allowed", reply)
        row = self._row(up.unit, up.file_id)
        if row is not None and row["state"] == "complete":
            return FileAck(up.file_id, AckState.COMPLETE, int(row["size"]), "", reply)
        if up.part == "init":
            return self._init(up, payload, row)
        if row is None:
            return FileAck(up.file_id, AckState.UNKNOWN, 0, "no init", reply)
        if up.part == "seg":
            assert up.offset is not None
            return self._segment(up, row, up.offset, payload, seg_checksum, reply)
        return self._fin(up, row, payload)

    def _init(self, up: UpMessage, payload: bytes, row: sqlite3.Row | None) -> FileAck:
        try:
            init = FileInit.decode(payload)
        except ValueError as exc:
            return FileAck(up.file_id, AckState.MISMATCH, 0, f"bad init: {exc}", "init")
        if init.file_id != up.file_id:
            return FileAck(up.file_id, AckState.MISMATCH, 0, "init names another file", "init")
        if row is None or int(row["size"]) != init.size:
            self.db.execute(
                "INSERT INTO uploads (unit, file_id, init, size, started_at) VALUES "
                "(?, ?, ?, ?, ?) ON CONFLICT (unit, file_id) DO UPDATE SET init = "
                "excluded.init, size = excluded.size, offset = 0",
                [up.unit, up.file_id, payload.decode(), init.size, utc_now()],
            )
            offset = 0
        else:
            offset = int(row["offset"])
        self._cut(up.unit, up.file_id, offset)
        return FileAck(up.file_id, AckState.RECEIVING, offset, "", "init")

    def _cut(self, unit: str, file_id: str, offset: int) -> None:
        """The partial file holds exactly what the row says (a crash may have left more)."""
        part = self._partial(unit, file_id)
        if part.exists() and part.stat().st_size != offset:
            with part.open("r+b") as f:
                f.truncate(offset)
                os.fsync(f.fileno())

    def _segment(
        self,
        up: UpMessage,
        row: sqlite3.Row,
        offset: int,
        data: bytes,
        seg_checksum: str | None,
        reply: str,
    ) -> FileAck:
        held, size = int(row["offset"]), int(row["size"])
        self.db.execute(
            "UPDATE uploads SET segment_bytes_in = segment_bytes_in + ? WHERE "
            "unit = ? AND file_id = ?",
            [len(data), up.unit, up.file_id],
        )
        if offset != held:
            return FileAck(up.file_id, AckState.RECEIVING, held, "not at central's offset", reply)
        if (
            seg_checksum != protocol.checksum(data)
            or offset + len(data) > size
            or not data
            or len(data) > MAX_SEGMENT
        ):
            self.db.execute(
                "UPDATE uploads SET bad_segments = bad_segments + 1 WHERE unit = ? AND file_id = ?",
                [up.unit, up.file_id],
            )
            log.warning(
                "files: unit %s file %s: bad segment at %d (%d bytes): checksum or bounds",
                up.unit,
                up.file_id[:12],
                offset,
                len(data),
            )
            return FileAck(up.file_id, AckState.BAD_SEGMENT, held, "segment checksum", reply)
        part = self._partial(up.unit, up.file_id)
        fresh = not part.exists()
        if fresh:
            part.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, offset)
            os.pwrite(fd, data, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        if fresh:
            fsync_path(part.parent)
        self.db.execute(
            "UPDATE uploads SET offset = ? WHERE unit = ? AND file_id = ?",
            [offset + len(data), up.unit, up.file_id],
        )
        return FileAck(up.file_id, AckState.RECEIVING, offset + len(data), "", reply)

    def _fin(self, up: UpMessage, row: sqlite3.Row, payload: bytes) -> FileAck:
        held, size = int(row["offset"]), int(row["size"])
        init = FileInit.decode(row["init"].encode())
        try:
            fin = FileFin.decode(payload)
        except ValueError as exc:
            return FileAck(up.file_id, AckState.RECEIVING, held, f"bad fin: {exc}", "fin")
        if held != size or fin.size != size:
            return FileAck(up.file_id, AckState.RECEIVING, held, "not all bytes held", "fin")
        part = self._partial(up.unit, up.file_id)
        if size == 0 and not part.exists():  # an empty file has no segment
            part.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            part.touch(mode=0o600)
        digest = _sha256(part) if part.exists() else ""
        if digest != init.sha256 or fin.sha256 != init.sha256:
            # Never marked received: dropped, the unit starts the file again.
            log.error(
                "files: unit %s file %s: the reassembled file's sha256 does not match; dropped",
                up.unit,
                up.file_id[:12],
            )
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            self.db.execute(
                "UPDATE uploads SET offset = 0, mismatches = mismatches + 1 WHERE "
                "unit = ? AND file_id = ?",
                [up.unit, up.file_id],
            )
            return FileAck(up.file_id, AckState.MISMATCH, 0, "file sha256 mismatch", "fin")
        target = self.object_path(init.sha256)
        fresh = not target.parent.exists()
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if target.exists() and target.stat().st_size == size:
            part.unlink()  # this content came already (another unit, or a replay)
        else:
            os.replace(part, target)
        fsync_path(target.parent)
        if fresh:
            fsync_path(target.parent.parent)
        fsync_path(part.parent)
        self._complete(up.unit, init)
        log.info("files: unit %s file %s complete (%d bytes)", up.unit, up.file_id[:12], size)
        return FileAck(up.file_id, AckState.COMPLETE, size, "", "fin")

    def _complete(self, unit: str, init: FileInit) -> None:
        now = utc_now()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "UPDATE uploads SET state = 'complete', completed_at = ? WHERE "
                "unit = ? AND file_id = ?",
                [now, unit, init.file_id],
            )
            kind = files_fhir.resource_type(init)
            if kind == "ImagingStudy":
                assert init.study_uid is not None
                body = files_fhir.imaging_study(unit, self._study(unit, init.study_uid))
            elif kind == "Media":
                body = files_fhir.media(unit, init)
            else:
                body = files_fhir.document_reference(unit, init)
            self.db.execute(
                "INSERT INTO file_resources (id, unit, resource_type, body, updated_at) VALUES "
                "(?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body, "
                "updated_at = excluded.updated_at",
                [body["id"], unit, kind, json.dumps(body, sort_keys=True), now],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _study(self, unit: str, study_uid: str) -> list[FileInit]:
        rows = self.db.execute(
            "SELECT init FROM uploads WHERE unit = ? AND state = 'complete'", [unit]
        ).fetchall()
        inits = [FileInit.decode(str(r[0]).encode()) for r in rows]
        return [i for i in inits if i.study_uid == study_uid]

    # --- queries ------------------------------------------------------------------------------
    def resources(self, resource_type: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT body FROM file_resources"
        params: Sequence[str] = ()
        if resource_type:
            sql += " WHERE resource_type = ?"
            params = (resource_type,)
        return [json.loads(r[0]) for r in self.db.execute(sql + " ORDER BY id", params)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# EMQX's broker side of ``$file/...``: (central, command topic, response topic, payload, packet
# id) -> the response EMQX would publish.
EmqxAnswer = Callable[[CentralFiles, str, str, bytes, int], emqx.Response]


class FileRoute:
    """The receiver's hook: file topics in, acks on ``down/file`` out, PUBACK after both.
    ``emqx``: also play EMQX's part for ``$file/...`` with this answer (a test aid: the
    emulation in ``tests/files/emqx_emulator.py``)."""

    def __init__(self, root: Path, *, emqx: EmqxAnswer | None = None) -> None:
        self.root = root
        self._emqx = emqx
        self.emulate_emqx = emqx is not None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="central-files")
        self._central: CentralFiles | None = None
        self.handled = 0

    def subscriptions(self) -> list[tuple[str, int]]:
        subs = [(protocol.up_filter(), protocol.UP_QOS)]
        if self.emulate_emqx:
            subs.append((emqx.command_filter(), emqx.QOS))
        return subs

    def takes(self, topic: str) -> bool:
        return protocol.is_file_topic(topic) or (self.emulate_emqx and emqx.is_command_topic(topic))

    def _open(self) -> CentralFiles:
        if self._central is None:
            self._central = CentralFiles(self.root)
        return self._central

    def _call(self, up: UpMessage, payload: bytes, seg: str | None) -> FileAck:
        return self._open().handle(up, payload, seg)

    async def on_message(self, link: MqttLink, event: LinkEvent) -> None:
        if emqx.is_command_topic(event.topic):
            await self._on_emqx(link, event)
            return
        up = protocol.parse_up_topic(event.topic)
        if up is None:
            log.warning("files: ignored a message on %s", event.topic)
            link.ack(event.mid, event.qos)
            return
        seg = dict(event.user_properties).get(protocol.SEG_CHECKSUM)
        loop = asyncio.get_running_loop()
        try:
            ack = await loop.run_in_executor(self._executor, self._call, up, event.payload, seg)
        except (OSError, sqlite3.Error) as exc:
            # Not acknowledged: the unit asks again (init) after its timeout.
            log.error("files: cannot store for unit %s (%s)", up.unit, type(exc).__name__)
            return
        try:
            link.publish(protocol.FILE_ACK.of(up.unit), ack.encode(), qos=protocol.FILE_ACK.qos)
        except LinkError as exc:
            log.warning("files: could not answer unit %s: %s", up.unit, exc)
            return
        link.ack(event.mid, event.qos)
        self.handled += 1

    async def _on_emqx(self, link: MqttLink, event: LinkEvent) -> None:
        loop = asyncio.get_running_loop()
        try:
            answer = self._emqx
            if answer is None:
                return
            response = await loop.run_in_executor(
                self._executor,
                lambda: answer(
                    self._open(), event.topic, event.response_topic, event.payload, event.mid
                ),
            )
        except (OSError, sqlite3.Error) as exc:
            log.error("files (EMQX emulation): cannot store (%s)", type(exc).__name__)
            return  # not acknowledged: the unit sends the command again after its timeout
        if event.response_topic.startswith(f"{emqx.RESPONSE_PREFIX}/"):
            try:
                link.publish(event.response_topic, response.encode(), qos=emqx.QOS)
            except LinkError as exc:
                log.warning("files (EMQX emulation): could not answer: %s", exc)
                return
        else:
            log.warning(
                "files (EMQX emulation): %s came without a $file-response/ "
                "Response-Topic; not answered",
                event.topic[:80],
            )
        link.ack(event.mid, event.qos)
        self.handled += 1

    async def close(self) -> None:
        def close() -> None:
            if self._central is not None:
                self._central.close()
                self._central = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)
