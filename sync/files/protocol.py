"""The file transfer protocol over MQTT (docs/files.md), pure.

Unit -> central, QoS 1, per file (``file_id`` = the file's sha256)::

    mmu/v1/{unit}/up/file/{file_id}/init            JSON FileInit
    mmu/v1/{unit}/up/file/{file_id}/seg/{offset}    the bytes; user property seg_sha256
    mmu/v1/{unit}/up/file/{file_id}/fin             JSON {"size", "sha256"}

Central -> unit, QoS 1, after central's own commit::

    mmu/v1/{unit}/down/file                         JSON FileAck

A FileAck always says how many bytes of the file central holds durably (``offset``): the unit
sends the segment at that offset next, whatever it sent before. So a disconnect, a restart of
either side or a lost message costs at most the one segment that was in flight.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final

from sync.topics import PREFIX, Topic

FILE_ACK: Final = Topic("down/file", 1, False)
UP_QOS: Final = 1
SEG_CHECKSUM: Final = "seg_sha256"


class AckState(StrEnum):
    RECEIVING = "receiving"  # central holds ``offset`` bytes: send the segment there
    COMPLETE = "complete"  # central holds the whole file, checksum verified, recorded
    UNKNOWN = "unknown"  # central has no upload of that id: send init
    BAD_SEGMENT = "bad-segment"  # the segment's checksum did not match: send it again
    MISMATCH = "mismatch"  # the whole file's sha256 did not match: central dropped it


def up_topic(unit: str, file_id: str, part: str) -> str:
    return f"{PREFIX}/{unit}/up/file/{file_id}/{part}"


def init_topic(unit: str, file_id: str) -> str:
    return up_topic(unit, file_id, "init")


def segment_topic(unit: str, file_id: str, offset: int) -> str:
    return up_topic(unit, file_id, f"seg/{offset}")


def fin_topic(unit: str, file_id: str) -> str:
    return up_topic(unit, file_id, "fin")


def up_filter() -> str:
    return f"{PREFIX}/+/up/file/#"


@dataclass(frozen=True)
class UpMessage:
    unit: str
    file_id: str
    part: str  # "init" | "seg" | "fin"
    offset: int | None  # "seg" only


def parse_up_topic(topic: str) -> UpMessage | None:
    """``mmu/v1/{unit}/up/file/{id}/...``; None for any other topic (or a malformed one)."""
    parts = topic.split("/")
    if len(parts) < 7 or "/".join(parts[:2]) != PREFIX or parts[3:5] != ["up", "file"]:
        return None
    unit, file_id, rest = parts[2], parts[5], parts[6:]
    if not unit or not is_file_id(file_id):
        return None
    if rest in (["init"], ["fin"]):
        return UpMessage(unit, file_id, rest[0], None)
    if len(rest) == 2 and rest[0] == "seg" and rest[1].isdigit() and len(rest[1]) < 16:
        return UpMessage(unit, file_id, "seg", int(rest[1]))
    return None


def is_file_topic(topic: str) -> bool:
    return topic.startswith(f"{PREFIX}/") and "/up/file/" in topic


def is_file_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class FileInit:
    file_id: str
    sha256: str
    size: int
    media_type: str
    kind: str
    segment_size: int
    received_at: str
    name: str | None = None
    device: str | None = None
    encounter_id: str | None = None
    patient_system: str | None = None  # the encounter's patient identifier
    patient_value: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    instance_uid: str | None = None
    sop_class_uid: str | None = None
    modality: str | None = None

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, payload: bytes) -> FileInit:
        body = _object(payload)
        try:
            init = cls(**body)
        except TypeError as exc:
            raise ValueError(f"init: {exc}") from None
        if not is_file_id(init.file_id) or init.sha256 != init.file_id:
            raise ValueError("init: file_id must be the file's sha256 (64 hex digits)")
        if not isinstance(init.size, int) or init.size < 0:
            raise ValueError("init: size must be a non-negative integer")
        return init


@dataclass(frozen=True)
class FileFin:
    size: int
    sha256: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, payload: bytes) -> FileFin:
        body = _object(payload)
        size, sha = body.get("size"), body.get("sha256")
        if not isinstance(size, int) or not isinstance(sha, str):
            raise ValueError("fin: needs size (integer) and sha256 (text)")
        return cls(size, sha)


@dataclass(frozen=True)
class FileAck:
    file_id: str
    state: AckState
    offset: int
    reason: str = ""
    # What this ack answers: "init", "seg/{offset}" or "fin" (the unit ignores an answer to a
    # message it no longer waits for, so a late ack never makes it send a segment twice).
    reply_to: str = ""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "file_id": self.file_id,
                "state": str(self.state),
                "offset": self.offset,
                "reason": self.reason,
                "reply_to": self.reply_to,
            }
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> FileAck:
        body = _object(payload)
        try:
            ack = cls(
                str(body["file_id"]),
                AckState(body["state"]),
                int(body["offset"]),
                str(body.get("reason", "")),
                str(body.get("reply_to", "")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"file ack: {exc!r}") from None
        if ack.offset < 0:
            raise ValueError("file ack: negative offset")
        return ack


def _object(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body
