"""EMQX's "file transfer over MQTT" as a mode of the unit's uploader (``[files] mode =
"emqx"``), pure: topics, payloads, answers, and what to send next. No sockets, files or clocks.

The protocol, as EMQX documents it (docs.emqx.com, File Transfer > Clients Development) and
implements it (emqx/emqx, apps/emqx_ft/src/emqx_ft.erl), all QoS 1::

    $file/{file_id}/init                        JSON {name, size, checksum, segments_ttl, ...}
    $file/{file_id}/{offset}[/{sha256 hex}]     the bytes of one segment
    $file/{file_id}/fin/{size}[/{sha256 hex}]   empty; EMQX assembles and exports the file
    $file/{file_id}/abort                       (a no-op in EMQX's source today)

EMQX keeps these to itself (never routed to subscribers) and scopes a transfer by the
publisher's client id: ``{client id, file_id}``. The result of each command is the PUBACK
reason code (MQTT 5) and, since EMQX 5.3.2, a JSON message on ``$file-response/{client id}``
(or the command's Response-Topic) ``{vsn, topic, packet_id, reason_code,
reason_description}``. This unit reads the response message, matched by the command topic it
names (one command outstanding at a time). It also reads the PUBACK reason code where the
broker publishes no response (:func:`puback_meaning`): 0x10 "no matching subscribers" means no
file transfer runs there (an EMQX with file transfer disabled routes ``$file/...`` as a plain
topic), so the unit backs off as when nobody answers; any code >= 0x80 is the broker's refusal
(not authorised, packet too large, quota) or, for 0x80, EMQX's own failure (whose response,
the twin of that PUBACK, is then not acted on twice). A PUBACK 0x00 is not read: EMQX >= 5.3.2
sends the response too, and through a broker that is not EMQX a 0x00 only says the broker
took the message.

How long EMQX keeps segments: ``segments_ttl`` in the init, clamped by EMQX to
``file_transfer.storage.local.segments.gc`` ``[minimum_segments_ttl, maximum_segments_ttl]``,
5 min and 24 h by default (apps/emqx_ft/src/emqx_ft_storage_fs_gc.erl). The unit asks for
:data:`SEGMENTS_TTL` (24 h, which a default EMQX keeps) and resumes from what EMQX confirmed
only while the oldest confirmation is younger than :data:`RESUME_WITHIN`; past that the file
starts again from 0 (EMQX may have collected the early segments, and ``fin`` would fail).

There is no "which bytes do you hold" query. Resuming (a reconnect, an unanswered command) is
EMQX's documented way: send ``init`` again, byte-identical (EMQX accepts an identical init and
refuses a different one for the same transfer: ``filemeta_conflict``), then the segments not
yet confirmed, then ``fin``. The unit remembers, per file and while it runs, the prefix of the
file EMQX confirmed; a restart of the unit sends the file from 0 again.

Reason codes (EMQX's documented table; its source emits only 0x00 and 0x80 today)::

    0x00 success      0x10 send every segment again      0x80 segment: send it again;
    0x83 give the transfer up                             fin: send every segment again
    0x97 quota exceeded: wait, then send again
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from sync.files.protocol import FileInit, is_file_id
from sync.files.uploader import (
    MAX_MISMATCHES,
    Completed,
    Failed,
    FileQueue,
    Outcome,
    Phase,
    Send,
    Transfer,
)

COMMAND_PREFIX: Final = "$file"
RESPONSE_PREFIX: Final = "$file-response"
QOS: Final = 1
SEGMENTS_TTL: Final = 24 * 3600  # EMQX's default maximum_segments_ttl: more is cut to it
RESUME_WITHIN: Final = SEGMENTS_TTL - 3600  # an hour's margin for the resumed upload itself
RESPONSE_VSN: Final = "0.1"
CLIENT_PREFIX: Final = "edge-agent-"  # the unit's MQTT client id (sync/daemon.py link_options)

SUCCESS: Final = 0x00
NO_MATCHING_SUBSCRIBERS: Final = 0x10  # EMQX: "retransmit all segments"
UNSPECIFIED_ERROR: Final = 0x80
IMPLEMENTATION_SPECIFIC: Final = 0x83  # EMQX: "cancel the transfer"
QUOTA_EXCEEDED: Final = 0x97  # EMQX: "pause, then retransmit"
PACKET_TOO_LARGE: Final = 0x95  # the broker's maximum packet size: smaller segments
MAX_INIT_REFUSALS = 3  # inits refused in a row before the file is left to an operator


def init_topic(file_id: str) -> str:
    return f"{COMMAND_PREFIX}/{file_id}/init"


def segment_topic(file_id: str, offset: int, checksum: str | None = None) -> str:
    return f"{COMMAND_PREFIX}/{file_id}/{offset}" + (f"/{checksum}" if checksum else "")


def fin_topic(file_id: str, size: int, checksum: str | None = None) -> str:
    return f"{COMMAND_PREFIX}/{file_id}/fin/{size}" + (f"/{checksum}" if checksum else "")


def abort_topic(file_id: str) -> str:
    return f"{COMMAND_PREFIX}/{file_id}/abort"


def response_topic(client_id: str) -> str:
    return f"{RESPONSE_PREFIX}/{client_id}"


def command_filter() -> str:
    return f"{COMMAND_PREFIX}/#"


def is_command_topic(topic: str) -> bool:
    return topic.startswith(f"{COMMAND_PREFIX}/")


def unit_of_client(client_id: str) -> str:
    """The unit id behind a unit's client id (``edge-agent-{unit}``)."""
    return client_id.removeprefix(CLIENT_PREFIX)


_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Command:
    file_id: str
    kind: str  # "init" | "seg" | "fin" | "abort"
    offset: int | None = None  # seg
    size: int | None = None  # fin
    checksum: str | None = None  # seg, fin (lower-case hex)

    def reply_key(self) -> str:
        """How the uploader names the command it waits for: init, seg/{offset}, fin."""
        return f"seg/{self.offset}" if self.kind == "seg" else self.kind


def parse_command(topic: str) -> Command | None:
    """``$file/{id}/...`` as EMQX parses it; None for anything else."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != COMMAND_PREFIX or not parts[1]:
        return None
    file_id, rest = parts[1], parts[2:]
    if rest == ["init"]:
        return Command(file_id, "init")
    if rest == ["abort"]:
        return Command(file_id, "abort")
    if rest[0] == "fin" and len(rest) in (2, 3) and _count(rest[1]) is not None:
        if len(rest) == 3 and not _HEX64.match(rest[2]):
            return None
        return Command(
            file_id,
            "fin",
            size=_count(rest[1]),
            checksum=rest[2].lower() if len(rest) == 3 else None,
        )
    if len(rest) in (1, 2) and _count(rest[0]) is not None:
        if len(rest) == 2 and not _HEX64.match(rest[1]):
            return None
        return Command(
            file_id,
            "seg",
            offset=_count(rest[0]),
            checksum=rest[1].lower() if len(rest) == 2 else None,
        )
    return None


def _count(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 19 else None


def safe_name(init: FileInit) -> str:
    """EMQX stores the file under ``name`` (240 bytes at most; unsafe characters are refused
    or escaped): the sha256 and the original extension, never a name a nurse typed (it may
    hold a patient's name)."""
    ext = ""
    if init.name and "." in init.name:
        tail = init.name.rsplit(".", 1)[1].lower()
        if tail.isalnum() and len(tail) <= 8:
            ext = "." + tail
    return init.sha256 + ext


def opaque(init: FileInit) -> FileInit:
    """What EMQX may keep of a file's description (it stores the init, ``user_data``
    included, on the broker): opaque ids only. No patient identifier and no original file
    name (a name like "ECG_0412 Mme X.pdf" names the patient); central finds the patient
    through the encounter id, which its readings carry with the patient's identifier."""
    return replace(init, name=None, patient_system=None, patient_value=None)


def init_payload(init: FileInit) -> bytes:
    """Byte-identical for one file whenever it is sent (EMQX refuses a different init for a
    transfer it knows): no time in it, and the segment size (which follows the link) is 0."""
    meta: dict[str, Any] = {
        "name": safe_name(init),
        "size": init.size,
        "checksum": init.sha256,
        "segments_ttl": SEGMENTS_TTL,
        "user_data": asdict(replace(opaque(init), segment_size=0)),
    }
    return json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()


def file_init_of(payload: bytes) -> FileInit:
    """The native :class:`FileInit` an EMQX init carries in ``user_data`` (the emulation)."""
    try:
        meta = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"init: not JSON: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise ValueError("init: needs a name (EMQX's one required field)")
    user = meta.get("user_data")
    if not isinstance(user, dict):
        raise ValueError("init: user_data holds no file description")
    init = FileInit.decode(json.dumps(user).encode())
    if meta.get("checksum") not in (None, init.sha256):
        raise ValueError("init: checksum differs from user_data's sha256")
    return init


@dataclass(frozen=True)
class Response:
    topic: str  # the command's topic
    packet_id: int
    reason_code: int
    reason_description: str = ""
    vsn: str = RESPONSE_VSN

    def encode(self) -> bytes:
        return json.dumps(
            {
                "vsn": self.vsn,
                "topic": self.topic,
                "packet_id": self.packet_id,
                "reason_code": self.reason_code,
                "reason_description": self.reason_description,
            }
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Response:
        try:
            body = json.loads(payload)
            if not isinstance(body, dict):
                raise TypeError("not a JSON object")
            response = cls(
                str(body["topic"]),
                int(body.get("packet_id") or 0),
                int(body["reason_code"]),
                str(body.get("reason_description", "")),
                str(body.get("vsn", RESPONSE_VSN)),
            )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"file response: {exc!r}") from None
        if not 0 <= response.reason_code <= 0xFF:
            raise ValueError("file response: reason_code is not a byte")
        return response


@dataclass
class _Current(Transfer):
    refusals: int = 0  # inits refused in a row
    fin_failures: int = 0


@dataclass
class EmqxUploader(FileQueue[_Current]):
    """Same shape as :class:`~sync.files.uploader.Uploader` (the sender drives either), but
    answers are EMQX reason codes (:meth:`on_answer`) and the resume point is what EMQX
    confirmed, remembered here."""

    confirmed: dict[str, int] = field(default_factory=dict)  # file id -> bytes EMQX confirmed
    confirmed_since: dict[str, float] = field(default_factory=dict)  # its oldest confirmation
    expired: int = 0  # resumes given up: EMQX may have collected the segments (segments_ttl)
    _pause_until: float = 0.0  # 0x97: EMQX asked to wait

    def _start(self, file_id: str, size: int) -> _Current:
        return _Current(file_id, size)

    def _held(self, cur: _Current) -> int:
        return self.confirmed.get(cur.file_id, 0)

    def _hold_until(self) -> float:
        return self._pause_until

    def _step_aside(self, cur: _Current) -> None:
        """EMQX keeps its segments (segments_ttl): resumed later from what it confirmed."""

    def _forget(self, file_id: str) -> None:
        self.confirmed.pop(file_id, None)
        self.confirmed_since.pop(file_id, None)
        super()._forget(file_id)

    def next_send(self, now: float) -> Send | None:
        cur = self.current
        since = self.confirmed_since.get(cur.file_id) if cur is not None else None
        if cur is not None and since is not None and now - since > RESUME_WITHIN:
            # EMQX may have collected the first segments: all of them again, from init.
            self.expired += 1
            self._forget(cur.file_id)
            cur.phase, cur.waiting = Phase.INIT, ""
        return super().next_send(now)

    def no_route(self, file_id: str, command: str, now: float) -> None:
        """PUBACK 0x10 on ``command``: nothing handles ``$file/...`` there (file transfer not
        enabled): wait as after an unanswered init, then init again. What EMQX confirmed is
        kept (the segments are EMQX's until their TTL)."""
        cur = self.current
        if cur is None or cur.file_id != file_id or cur.waiting != command:
            return
        self.retry.timed_out(now)
        cur.phase, cur.waiting = Phase.INIT, ""

    def on_answer(self, file_id: str, command: str, reason_code: int, now: float) -> list[Outcome]:
        """EMQX's answer to ``command`` (init, seg/{offset}, fin) of ``file_id``."""
        cur = self.current
        if cur is None or cur.file_id != file_id or not cur.waiting or command != cur.waiting:
            return []  # a late answer to a command given up on: the next one is coming
        self.retry.answered()  # something serves files
        waiting, cur.waiting = cur.waiting, ""
        if reason_code == IMPLEMENTATION_SPECIFIC:
            return self._finish(Failed(file_id, "EMQX cancelled the transfer (0x83)"))
        if reason_code == QUOTA_EXCEEDED:
            self._pause_until = now + self.retry.backoff.next_delay()
            cur.phase = Phase.INIT if waiting == "init" else cur.phase
            return []
        if waiting == "init":
            if reason_code == SUCCESS:
                cur.refusals = 0
                cur.phase = Phase.SEGMENT
                return []
            cur.refusals += 1
            if cur.refusals >= MAX_INIT_REFUSALS:
                return self._finish(
                    Failed(
                        file_id,
                        f"EMQX refused init {cur.refusals} times (reason code {reason_code:#04x})",
                    )
                )
            self.retry.timed_out(now)  # wait before asking again
            return []
        if waiting == "fin":
            if reason_code == SUCCESS:
                return self._finish(Completed(file_id))
            cur.fin_failures += 1
            if cur.fin_failures >= MAX_MISMATCHES:
                return self._finish(
                    Failed(
                        file_id,
                        f"EMQX refused fin {cur.fin_failures} "
                        f"times (reason code {reason_code:#04x})",
                    )
                )
            self._restart(cur)  # EMQX: after a failed fin, every segment again
            return []
        if reason_code == SUCCESS:
            self.confirmed[file_id] = max(self.confirmed.get(file_id, 0), cur.pending_end)
            self.confirmed_since.setdefault(file_id, now)
            self.sizer.acked()
        elif reason_code == NO_MATCHING_SUBSCRIBERS:
            self._restart(cur)
            return []
        else:
            self.bad_segments += 1  # EMQX: this segment again
            if reason_code == PACKET_TOO_LARGE:
                self.sizer.interrupted()  # the broker's packet limit: a smaller one
        cur.phase = Phase.FIN if self.confirmed.get(file_id, 0) >= cur.size else Phase.SEGMENT
        return []

    def _restart(self, cur: _Current) -> None:
        self._forget(cur.file_id)  # a new attempt: from 0, not counted as re-sent
        cur.phase = Phase.INIT


def reply_key_of(topic: str) -> tuple[str, str] | None:
    """(file id, init | seg/{offset} | fin) of a command topic a response names."""
    command = parse_command(topic)
    if command is None or command.kind == "abort" or not is_file_id(command.file_id):
        return None
    return command.file_id, command.reply_key()


def puback_meaning(reason_code: int) -> str:
    """What the unit makes of a command's PUBACK: "ignore" (0x00 and other successes: the
    response says more), "no-route" (0x10: nothing handles ``$file/...``), "twin" (0x80:
    EMQX's own failure, whose response follows) or "refused" (the broker refused the
    publish: no response follows)."""
    if reason_code == NO_MATCHING_SUBSCRIBERS:
        return "no-route"
    if reason_code < UNSPECIFIED_ERROR:
        return "ignore"
    return "twin" if reason_code == UNSPECIFIED_ERROR else "refused"
