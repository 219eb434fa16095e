"""An EMULATION of EMQX's broker-side file transfer, for testing the unit's "emqx" mode
without EMQX (``Receiver(..., emqx_answer=answer)``). It is not EMQX, and it is a test aid:
it lives with the tests, and no command of the agent or central offers it.

EMQX handles ``$file/...`` inside the broker and never routes it to subscribers. Mosquitto does
route it: a client may publish to ``$file/...`` and a client that subscribes to ``$file/#``
explicitly gets it (checked with Mosquitto 2 in tests/files/test_emqx_mode.py; ``#`` alone never
matches a ``$`` topic). So the reference receiver can play EMQX's part behind Mosquitto:
subscribe to ``$file/#``, store through the same :class:`~sync.central.files.CentralFiles`
as the native protocol, and answer each command on its Response-Topic with EMQX's response
message ``{vsn, topic, packet_id, reason_code, reason_description}``.

Differences from EMQX, on purpose or by necessity:

* EMQX scopes a transfer by the publisher's client id; through Mosquitto a subscriber does not
  learn it, so the unit puts ``$file-response/{client id}`` in each command's Response-Topic
  (EMQX honours that property too) and the emulation takes the client id from there, and the
  unit id from the client id (``edge-agent-{unit}``).
* ``packet_id`` is the id the message had on the receiver's own session, not the unit's (a
  broker in between renumbers); the unit matches a response by its ``topic``.
* The PUBACK the unit gets is Mosquitto's, not the command's result (0x00 while the emulation
  listens, which the unit does not read; 0x10 when nothing listens, which it reads as "file
  transfer not enabled").
* The init's ``user_data`` holds opaque ids only (no patient identifier, no original name):
  the resources it records refer to the patient through the encounter, as central's readings
  do.
* EMQX accepts segments at any offset and checks coverage at ``fin``; the emulation stores in
  order (it keeps the part of a segment beyond what it holds, and refuses a segment past a gap
  with 0x80, which makes the unit send it again).
* The file is checked against its sha256 and recorded (with FHIR) as the native route does;
  EMQX would export it to its configured storage instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sync.files import emqx, protocol
from sync.files.emqx import Command, Response
from sync.files.protocol import AckState, FileFin, UpMessage

if TYPE_CHECKING:
    from sync.central.files import CentralFiles

_Reply = Callable[[int, str], Response]


def answer(
    central: CentralFiles, command_topic: str, response_topic: str, payload: bytes, packet_id: int
) -> Response:
    """Handle one command; the response EMQX would publish."""

    def reply(code: int, text: str) -> Response:
        return Response(command_topic, packet_id, code, text)

    command = emqx.parse_command(command_topic)
    if command is None:
        return reply(emqx.UNSPECIFIED_ERROR, "invalid_file_command")
    client = response_topic.removeprefix(f"{emqx.RESPONSE_PREFIX}/")
    if not response_topic.startswith(f"{emqx.RESPONSE_PREFIX}/") or not client:
        return reply(
            emqx.UNSPECIFIED_ERROR, "emulation: no $file-response/{clientid} Response-Topic"
        )
    unit = emqx.unit_of_client(client)
    if not protocol.is_file_id(command.file_id):
        return reply(emqx.UNSPECIFIED_ERROR, "emulation: file ids are sha256 (64 hex)")
    if command.kind == "abort":
        return reply(emqx.SUCCESS, "success")  # EMQX: a no-op today
    if command.kind == "init":
        return _init(central, unit, command, payload, reply)
    if command.kind == "seg":
        return _segment(central, unit, command, payload, reply)
    return _fin(central, unit, command, reply)


def _init(
    central: CentralFiles, unit: str, command: Command, payload: bytes, reply: _Reply
) -> Response:
    try:
        init = emqx.file_init_of(payload)
    except ValueError as exc:
        return reply(emqx.UNSPECIFIED_ERROR, f"invalid_filemeta: {exc}")
    ack = central.handle(UpMessage(unit, command.file_id, "init", None), init.encode(), None)
    if ack.state in (AckState.RECEIVING, AckState.COMPLETE):
        return reply(emqx.SUCCESS, "success")
    return reply(emqx.UNSPECIFIED_ERROR, ack.reason or str(ack.state))


def _segment(
    central: CentralFiles, unit: str, command: Command, data: bytes, reply: _Reply
) -> Response:
    assert command.offset is not None
    if command.checksum is not None and protocol.checksum(data) != command.checksum:
        return reply(emqx.UNSPECIFIED_ERROR, "checksum_mismatch")  # as EMQX validates it
    offset, end = command.offset, command.offset + len(data)
    row_offset = central.held(unit, command.file_id)
    if row_offset is None:
        return reply(emqx.UNSPECIFIED_ERROR, "no init for this transfer")
    if end <= row_offset:
        return reply(emqx.SUCCESS, "success")  # held already: EMQX stores it again
    if offset > row_offset:
        return reply(emqx.UNSPECIFIED_ERROR, "emulation: a segment past a gap")
    tail = data[row_offset - offset :]
    ack = central.handle(
        UpMessage(unit, command.file_id, "seg", row_offset), tail, protocol.checksum(tail)
    )
    if ack.state is AckState.COMPLETE or (ack.state is AckState.RECEIVING and ack.offset >= end):
        return reply(emqx.SUCCESS, "success")
    return reply(emqx.UNSPECIFIED_ERROR, ack.reason or str(ack.state))


def _fin(central: CentralFiles, unit: str, command: Command, reply: _Reply) -> Response:
    assert command.size is not None
    fin = FileFin(command.size, command.checksum or command.file_id)
    ack = central.handle(UpMessage(unit, command.file_id, "fin", None), fin.encode(), None)
    if ack.state is AckState.COMPLETE:
        return reply(emqx.SUCCESS, "success")
    return reply(emqx.UNSPECIFIED_ERROR, ack.reason or str(ack.state))
