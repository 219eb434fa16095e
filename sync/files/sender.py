"""The unit's file sender: the thin shell around :class:`~sync.files.uploader.Uploader`.

It reads the upload queue from the store and segments from the attachment files, and turns
the uploader's decisions into MQTT messages; the sync daemon owns the link and calls it::

    sender.subscriptions()              on connect (down/file)
    sender.connected() / disconnected()
    sender.on_message(topic, payload)   True when it was a file ack (then consumed)
    sender.next_publish(now, pace)      the next message to publish, or None
    sender.published(out, now, mid)     once the link took it (mid: its PUBACK is read)
    sender.on_puback(mid, code, now)    EMQX mode: a command's PUBACK reason code
    sender.deadline()                   when to call next_publish again (pacing, ack timeout)
    await sender.refresh()              the queue again (after a new file, at start)

Files go after readings and alerts: the daemon asks only when neither waits, and ``pace``
(the daemon's :class:`~sync.pacing.Pacer`) keeps the uplink cap for all traffic.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.clock import utc_now
from edge_agent.files import attachments
from edge_agent.store.writer import Store
from sync.files import emqx, protocol
from sync.files.protocol import FileAck, FileFin, FileInit
from sync.files.uploader import (
    Completed,
    Failed,
    Outcome,
    SegmentSizer,
    Send,
    SendFin,
    SendInit,
    Uploader,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    send: Send
    user_properties: tuple[tuple[str, str], ...] = ()
    content_type: str | None = None
    response_topic: str | None = None


class FileSender:
    """``mode``: "native" (this project's protocol, any broker, the reference receiver) or
    "emqx" (EMQX's file transfer, :mod:`sync.files.emqx`; ``client_id`` scopes it)."""

    def __init__(
        self,
        store: Store,
        unit: str,
        *,
        uplink_bps: float | None,
        ack_timeout: float = 30.0,
        root: Path | None = None,
        mode: str = "native",
        client_id: str | None = None,
    ) -> None:
        self.store = store
        self.unit = unit
        self.root = root or attachments.root_of(store.path)
        self.mode = mode
        self.client_id = client_id or f"{emqx.CLIENT_PREFIX}{unit}"
        self.uploader: Uploader | emqx.EmqxUploader = (
            emqx.EmqxUploader(ack_timeout, SegmentSizer(uplink_bps))
            if mode == "emqx"
            else Uploader(ack_timeout, SegmentSizer(uplink_bps))
        )
        self.files: dict[str, attachments.Attachment] = {}
        self.completed = 0
        self.failed = 0
        self.refused_acks = 0
        self.teleconsult: str | None = None  # the encounter in teleconsultation now
        self._held: Outgoing | None = None  # paced: due at _held_at
        self._held_at = 0.0
        # EMQX mode: publish mid -> (file id, reply key, command topic) until its PUBACK, and
        # per command topic the 0x80 responses still to come for a PUBACK 0x80 already read.
        self._mids: dict[int, tuple[str, str, str]] = {}
        self._twins: dict[str, int] = {}

    def set_uplink(self, bps: float | None) -> None:
        self.uploader.sizer.bits_per_second = bps
        self.uploader.sizer.size = self.uploader.sizer.target()

    async def refresh(self) -> None:
        for item in await self.store.read_async(attachments.pending):
            if item.file_id not in self.files:
                self.files[item.file_id] = item
                self.uploader.add(item.file_id, item.size)
        self._prioritise()

    def set_teleconsult(self, encounter_id: str | None) -> None:
        """The encounter in teleconsultation now (None: none): its files go first, before
        the readings backlog (never before an alert)."""
        self.teleconsult = encounter_id
        self._prioritise()

    def _prioritise(self) -> None:
        if self.teleconsult is not None:
            self.uploader.prioritise(
                {f for f, item in self.files.items() if item.encounter_id == self.teleconsult}
            )

    def urgent(self) -> bool:
        """A file of the encounter in teleconsultation now is waiting."""
        return self.teleconsult is not None and any(
            item.encounter_id == self.teleconsult for item in self.files.values()
        )

    # --- link events ----------------------------------------------------------------------
    def subscriptions(self) -> list[tuple[str, int]]:
        if self.mode == "emqx":
            return [(emqx.response_topic(self.client_id), emqx.QOS)]
        return [(protocol.FILE_ACK.of(self.unit), protocol.FILE_ACK.qos)]

    def connected(self) -> None:
        self._held = None
        self.uploader.connected()

    def disconnected(self) -> None:
        self._held = None
        self._mids.clear()  # those PUBACKs will never come
        self._twins.clear()
        self.uploader.disconnected()

    def on_puback(self, mid: int, reason_code: int, now: float) -> None:
        """EMQX mode: a command's PUBACK, read where the broker publishes no response
        (:func:`sync.files.emqx.puback_meaning`)."""
        entry = self._mids.pop(mid, None)
        if entry is None or not isinstance(self.uploader, emqx.EmqxUploader):
            return
        file_id, key, topic = entry
        meaning = emqx.puback_meaning(reason_code)
        if meaning == "ignore":
            return
        log.warning("files: the broker answered %s with PUBACK %#04x", topic[:80], reason_code)
        if meaning == "no-route":
            self.uploader.no_route(file_id, key, now)
            return
        if meaning == "twin":
            self._twins[topic] = self._twins.get(topic, 0) + 1
        self._outcomes(self.uploader.on_answer(file_id, key, reason_code, now))

    def on_message(self, topic: str, payload: bytes) -> bool:
        if isinstance(self.uploader, emqx.EmqxUploader):
            if topic != emqx.response_topic(self.client_id):
                return False
            try:
                response = emqx.Response.decode(payload)
            except ValueError as exc:
                self.refused_acks += 1
                log.warning(
                    "files: refused a malformed EMQX file response (%d bytes): %s",
                    len(payload),
                    exc,
                )
                return True
            key = emqx.reply_key_of(response.topic)
            if key is None:
                return True  # a response to a command this unit does not send
            if response.reason_code == emqx.UNSPECIFIED_ERROR and self._twins.get(response.topic):
                self._twins[response.topic] -= 1  # its PUBACK 0x80 was acted on already
                return True
            if response.reason_code != emqx.SUCCESS:
                log.warning(
                    "files: EMQX answered %s with %#04x (%s)",
                    response.topic[:80],
                    response.reason_code,
                    response.reason_description[:200],
                )
            self._outcomes(self.uploader.on_answer(*key, response.reason_code, time.monotonic()))
            return True
        if topic != protocol.FILE_ACK.of(self.unit):
            return False
        try:
            ack = FileAck.decode(payload)
        except ValueError as exc:
            self.refused_acks += 1
            log.warning("files: refused a malformed file ack (%d bytes): %s", len(payload), exc)
            return True
        self._outcomes(self.uploader.on_ack(ack))
        return True

    def _outcomes(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.files.pop(outcome.file_id, None)
            if isinstance(outcome, Completed):
                self.completed += 1
                log.info("files: central holds file %s", outcome.file_id[:12])
                self.store.submit(
                    functools.partial(attachments.mark_held, file_id=outcome.file_id, at=utc_now())
                )
            elif isinstance(outcome, Failed):
                self.failed += 1
                log.error(
                    "files: file %s left to an operator: %s", outcome.file_id[:12], outcome.reason
                )
                self.store.submit(
                    functools.partial(
                        attachments.mark_failed, file_id=outcome.file_id, reason=outcome.reason
                    )
                )

    # --- sending ----------------------------------------------------------------------------
    def next_publish(self, now: float, pace: Callable[[int, float], float]) -> Outgoing | None:
        """The message due now; ``pace(nbytes, now)`` reserves the uplink and says how long to
        wait (then the message is held until that time, its bandwidth already counted)."""
        held = self._held
        if held is not None:
            if now < self._held_at:
                return None
            self._held = None
            return held
        send = self.uploader.next_send(now)
        if send is None:
            return None
        out = self._build(send)
        if out is None:
            return None
        wait = pace(len(out.payload), now)
        if wait > 0:
            self._held, self._held_at = out, now + wait
            return None
        return out

    def published(self, out: Outgoing, now: float, mid: int | None = None) -> None:
        self.uploader.sent(out.send, now)
        if mid is not None and self.mode == "emqx":
            key = emqx.reply_key_of(out.topic)
            if key is not None:
                self._mids[mid] = (*key, out.topic)

    def deadline(self) -> float | None:
        if self._held is not None:
            return self._held_at
        return self.uploader.deadline()

    def _build(self, send: Send) -> Outgoing | None:
        item = self.files.get(send.file_id)
        if item is None:
            return None
        if isinstance(send, SendInit):
            init = FileInit(
                file_id=item.file_id,
                sha256=item.sha256,
                size=item.size,
                media_type=item.media_type,
                kind=item.kind,
                segment_size=self.uploader.sizer.size,
                received_at=item.received_at,
                name=item.name,
                device=item.source_device,
                encounter_id=item.encounter_id,
                patient_system=item.patient_system,
                patient_value=item.patient_value,
                study_uid=item.study_uid,
                series_uid=item.series_uid,
                instance_uid=item.instance_uid,
                sop_class_uid=item.sop_class_uid,
                modality=item.modality,
            )
            if self.mode == "emqx":
                return Outgoing(
                    emqx.init_topic(item.file_id),
                    emqx.init_payload(init),
                    send,
                    content_type="application/json",
                    response_topic=emqx.response_topic(self.client_id),
                )
            return Outgoing(
                protocol.init_topic(self.unit, item.file_id),
                init.encode(),
                send,
                content_type="application/json",
            )
        if isinstance(send, SendFin) and self.mode == "emqx":
            return Outgoing(
                emqx.fin_topic(item.file_id, item.size, item.sha256),
                b"",
                send,
                response_topic=emqx.response_topic(self.client_id),
            )
        if isinstance(send, SendFin):
            return Outgoing(
                protocol.fin_topic(self.unit, item.file_id),
                FileFin(item.size, item.sha256).encode(),
                send,
                content_type="application/json",
            )
        data = self._read(item.file_id, send.offset, send.length)
        if data is None:
            return None
        if self.mode == "emqx":
            return Outgoing(
                emqx.segment_topic(item.file_id, send.offset, protocol.checksum(data)),
                data,
                send,
                response_topic=emqx.response_topic(self.client_id),
            )
        return Outgoing(
            protocol.segment_topic(self.unit, item.file_id, send.offset),
            data,
            send,
            user_properties=((protocol.SEG_CHECKSUM, protocol.checksum(data)),),
        )

    def _read(self, file_id: str, offset: int, length: int) -> bytes | None:
        try:
            with (self.root / file_id[:2] / file_id).open("rb") as f:
                f.seek(offset)
                return f.read(length)
        except OSError as exc:
            log.error(
                "files: cannot read file %s (%s); left to an operator",
                file_id[:12],
                exc.strerror or type(exc).__name__,
            )
            self.files.pop(file_id, None)
            self.uploader.current = None
            self.store.submit(
                functools.partial(
                    attachments.mark_failed, file_id=file_id, reason="unreadable on the unit"
                )
            )
            return None

    def status(self) -> dict[str, int]:
        up = self.uploader
        return {
            "files_pending": len(self.files),
            "files_completed": self.completed,
            "files_failed": self.failed,
            "file_bytes_sent": up.sent_bytes,
            "file_bytes_resent": up.resent_bytes,
            "file_bad_segments": up.bad_segments,
            "file_segment_size": up.sizer.size,
            "file_inits": up.inits,
        }

    def state(self) -> str:
        """ "central does not take files yet" while inits go unanswered; "" otherwise."""
        return self.uploader.retry.state()
