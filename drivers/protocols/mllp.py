"""MLLP (HL7 minimal lower layer protocol) receiver: frames -> HL7 v2 events, ACK after commit.

Sans-I/O :class:`~drivers.base.StreamDecoder`. A frame is ``VT (0x0B) message FS (0x1C) CR``;
bytes may arrive split anywhere and several frames may share one read. Facts:
``docs/protocols.md`` §5; message parsing is ``drivers.protocols.hl7v2``.

Events per frame
    A readable message gives its events (measurements, per-OBX rejects, device facts), then
    ``MessageComplete(message_id=<MSH-10>)``, and queues nothing. ``acknowledge(id,
    stored=True)`` queues ``MSA|AA`` (``AR`` with the reason when the message as a whole was
    refused, e.g. not ORU^R01: it is kept as a reject first, so the monitor may stop resending
    it; ``AE`` with an ERR per OBX when every OBX had an unknown code, so nothing usable was
    stored; ``AA`` with those ERR as warnings when others were stored); ``stored=False``
    queues ``AE`` (the monitor resends). A message whose MSH cannot be read
    gives ``Rejected(message, reason)`` and an ``AR`` queued at once (there is nothing to
    commit but the reject, and our transports write only after the dispatch stored it).
    Replies leave in the order of the messages they answer: an ACK waits behind the ACK of an
    earlier message that is still being committed.

Resync and bounds
    Bytes outside a frame become ``Rejected(raw, "no-frame")`` when the next VT arrives (CR/LF
    alone between frames are dropped: some senders end frames with CR LF). A VT inside a frame
    means the frame lost its end: ``Rejected(partial, "truncated")`` and a new frame starts. A
    frame over ``max_message`` bytes is rejected as ``too-long`` in pieces (memory stays
    bounded; the pieces depend only on byte counts, so any split gives the same events) and
    answered AR. FS without the CR is accepted. An empty frame (``VT FS CR``, a keep-alive
    for some senders) is ignored. ``receive_data(b"")`` (end of stream) rejects a partial
    frame as ``truncated``.

Exactly once: a monitor that never got our AA (connection lost after the commit) resends the
message with the same MSH-10. Its measurements carry the same ``source_key`` (see
``drivers.protocols.hl7v2``), so the store recognises readings it already holds and keeps them
once; the resend is committed and answered ``AA`` again, and the monitor moves on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from drivers.base import DecoderMisuse, Event, MessageComplete, Rejected
from drivers.protocols.hl7v2 import (
    ERROR_CODES,
    AckError,
    Header,
    Hl7Error,
    Message,
    build_ack,
    decode_oru,
    parse_header,
    parse_message,
    split_segments,
    unknown_observations,
)
from drivers.protocols.sitecodes import CodeMapping
from edge_agent.models import Measurement

__all__ = ["CR", "FS", "VT", "MllpDecoder", "frame", "unframe"]

VT: Final = 0x0B
FS: Final = 0x1C
CR: Final = 0x0D
MAX_MESSAGE: Final = 1 << 20
_JUNK_LIMIT: Final = 4096
_START: Final = bytes((VT,))
_END: Final = bytes((FS, CR))


def frame(message: bytes) -> bytes:
    """Wrap one HL7 message in MLLP framing."""
    return _START + message + _END


def unframe(data: bytes) -> list[bytes]:
    """The complete messages in ``data`` (simple sender-side helper; no resync reporting)."""
    messages = []
    for part in data.split(_START)[1:]:
        end = part.find(bytes((FS,)))
        if end >= 0:
            messages.append(part[:end])
    return messages


@dataclass(slots=True)
class _Reply:
    message_id: str | None  # None: answered at once, never acknowledged by the runtime
    header: Header | None
    code: str  # what stored=True answers: "AA", "AE" (nothing usable), "AR" (refused)
    reason: str = ""
    ack: bytes | None = None  # the framed ACK once decided
    errors: tuple[AckError, ...] = ()  # ERR segments of the stored=True answer


class MllpDecoder:
    """HL7 v2 over MLLP, receiver side. See the module docstring for the ACK contract.

    ``clock`` returns the HL7 time stamp for the ACK's MSH-7 (the transport owns the clock;
    without one MSH-7 stays empty). ACK control ids (MSH-10) come from ``control_ids`` (the
    agent passes one source for the whole process:
    :mod:`drivers.transports.hl7_control_ids`), else ``control_id_prefix`` + a counter of
    this decoder (tests, ``decode``)."""

    carries_identity = True  # PID holds patient ids: rejects are logged as digests

    def __init__(
        self,
        *,
        clock: Callable[[], str] | None = None,
        control_id_prefix: str = "EA",
        control_ids: Callable[[], str] | None = None,
        application: str = "EDGE-AGENT",
        max_message: int = MAX_MESSAGE,
        code_map: Mapping[str, CodeMapping] | None = None,
    ) -> None:
        if max_message < 16:
            raise DecoderMisuse(f"max_message {max_message} is too small")
        self._clock = clock
        self._code_map = dict(code_map or {})
        self._prefix = control_id_prefix
        self._control_ids = control_ids
        self._application = application
        self._max = max_message
        self._frame: bytearray | None = None
        self._overflowed = False  # the current frame exceeded max_message
        self._overflow_header: Header | None = None
        self._after_fs = False
        self._junk = bytearray()
        self._replies: list[_Reply] = []
        self._acks = 0

    @property
    def pending(self) -> tuple[str, ...]:
        """Message ids waiting for :meth:`acknowledge`, oldest first."""
        return tuple(
            r.message_id for r in self._replies if r.message_id is not None and r.ack is None
        )

    # -- StreamDecoder -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if not data:
            self._eof(events)
            return events
        i, n = 0, len(data)
        while i < n:
            if self._after_fs:
                self._after_fs = False
                if data[i] == CR:
                    i += 1
                    continue
            if self._frame is None:
                start = data.find(VT, i)
                self._add_junk(data[i : n if start < 0 else start], events)
                if start < 0:
                    break
                self._flush_junk(events)
                self._frame = bytearray()
                i = start + 1
                continue
            ends = [j for j in (data.find(FS, i), data.find(VT, i)) if j >= 0]
            j = min(ends) if ends else n
            self._add_to_frame(data[i:j], events)
            if j == n:
                break
            if data[j] == FS:
                self._complete(events)
                self._after_fs = True
            else:
                self._lost_end(events)
            i = j + 1
        return events

    def data_to_send(self) -> bytes:
        out = bytearray()
        while self._replies and self._replies[0].ack is not None:
            ack = self._replies.pop(0).ack
            assert ack is not None
            out += ack
        return bytes(out)

    def acknowledge(self, message_id: str, *, stored: bool) -> None:
        for reply in self._replies:
            if reply.message_id == message_id and reply.ack is None:
                if stored:
                    reply.ack = self._ack(reply.header, reply.code, reply.reason, reply.errors)
                else:
                    reply.ack = self._ack(reply.header, "AE", "commit-failed")
                return
        raise DecoderMisuse(f"no HL7 message {message_id!r} is waiting for acknowledgement")

    # -- framing -------------------------------------------------------------------------------

    def _add_junk(self, chunk: bytes, events: list[Event]) -> None:
        self._junk += chunk
        while len(self._junk) >= _JUNK_LIMIT:
            piece = bytes(self._junk[:_JUNK_LIMIT])
            del self._junk[:_JUNK_LIMIT]
            if piece.strip(b"\r\n"):
                events.append(Rejected(piece, "no-frame"))

    def _flush_junk(self, events: list[Event]) -> None:
        if self._junk.strip(b"\r\n"):
            events.append(Rejected(bytes(self._junk), "no-frame"))
        self._junk.clear()

    def _add_to_frame(self, chunk: bytes, events: list[Event]) -> None:
        current = self._frame
        assert current is not None
        current += chunk
        while len(current) > self._max:
            if not self._overflowed:
                self._overflowed = True
                self._overflow_header = _header_or_none(bytes(current))
            events.append(Rejected(bytes(current[: self._max]), "too-long"))
            del current[: self._max]

    def _lost_end(self, events: list[Event]) -> None:
        assert self._frame is not None
        reason = "too-long" if self._overflowed else "truncated"
        # Keep the start-block octet: a lost frame is never an empty reject.
        events.append(Rejected(bytes([VT]) + bytes(self._frame), reason))
        self._frame = bytearray()
        self._overflowed = False

    def _eof(self, events: list[Event]) -> None:
        self._flush_junk(events)
        if self._frame is not None:
            if self._frame or not self._overflowed:
                reason = "too-long" if self._overflowed else "truncated"
                prefix = b"" if self._overflowed else bytes([VT])
                events.append(Rejected(prefix + bytes(self._frame), reason))
            self._frame = None
        self._overflowed = False
        self._after_fs = False

    # -- messages ------------------------------------------------------------------------------

    def _complete(self, events: list[Event]) -> None:
        assert self._frame is not None
        content = bytes(self._frame)
        self._frame = None
        if self._overflowed:
            self._overflowed = False
            if content:
                events.append(Rejected(content, "too-long"))
            self._answer_now(self._overflow_header, "too-long")
            return
        if not content.strip(b"\r\n"):
            return  # keep-alive
        try:
            message = parse_message(content)
        except Hl7Error as exc:
            events.append(Rejected(content, exc.reason))
            self._answer_now(exc.header, exc.reason)
            return
        decoded = decode_oru(message, self._code_map)
        events.extend(decoded)
        refused = next(
            (e.reason for e in decoded if isinstance(e, Rejected) and e.raw == message.raw), ""
        )
        code, reason, errors = ("AR", refused, ()) if refused else _verdict(message, decoded)
        self._replies.append(_Reply(message.control_id, message.header, code, reason, None, errors))
        events.append(MessageComplete(message.control_id))

    def _answer_now(self, header: Header | None, reason: str) -> None:
        self._replies.append(_Reply(None, header, "AR", reason, self._ack(header, "AR", reason)))

    def _ack(
        self, header: Header | None, code: str, reason: str, errors: tuple[AckError, ...] = ()
    ) -> bytes:
        self._acks += 1
        control_id = (
            self._control_ids() if self._control_ids is not None else f"{self._prefix}{self._acks}"
        )
        message = build_ack(
            header,
            code,
            control_id,
            text=reason,
            timestamp=self._clock() if self._clock is not None else "",
            application=self._application,
            error_code=ERROR_CODES.get(reason, "207"),
            errors=errors,
        )
        return frame(message)


def _verdict(message: Message, events: list[Event]) -> tuple[str, str, tuple[AckError, ...]]:
    """What a stored ORU is answered: AA, with a warning ERR per OBX whose code we do not know
    (those went to the rejects) when others were stored; AE with those ERR when none was."""
    unknown = tuple(unknown_observations(message, events))
    if not unknown:
        return "AA", "", ()
    if any(isinstance(e, Measurement) for e in events):
        return "AA", "", tuple(replace(e, severity="W") for e in unknown)
    return "AE", "unknown-observation", unknown


def _header_or_none(data: bytes) -> Header | None:
    """The MSH of an overlong frame's first piece, to answer it in its own terms."""
    lines = split_segments(data[:4096])
    try:
        return parse_header(lines[0]) if lines else None
    except Hl7Error as exc:
        return exc.header
