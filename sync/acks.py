"""Central's acknowledgements (``mmu/v1/{unit}/down/ack``), parsed strictly.

An ack names the batch, the readings of it central does *not* hold (``refused``, with a reason:
a conflict, a store error), central's last contiguous seq for this store's epoch, and the three
time stamps of an NTP-style exchange: ``t_origin`` (the unit's clock when it published, echoed
from the message's ``sent_at`` property), ``t_recv`` and ``t_send`` (central's clock). Anything
else is refused unparsed (:class:`ValueError`); an ack is about 200 bytes.

A *cumulative ack* covers several batches of one store in one message (central committed them
together): ``{"acks": [{"batch_id", "refused", "t_origin", "t_recv"}, ...], "epoch",
"last_contiguous_seq", "t_send"}``. :func:`parse_acks` reads both forms; the whole message is
refused when any part of it is malformed (nothing of it is believed).

A *dead-letter notice* travels on the same topic: ``{"dead_letter": {"reason", "batch_id",
"epoch", "bytes", "parked_at"}}`` says central parked one of the unit's messages for a human
(it could not decode it, or its store refused it for good). The batch id and epoch are those
of the message's user properties (``null`` when it had none). No reading, no payload.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

MAX_ACK_BYTES = 64 * 1024  # room for a batch's worth of refusals; anything larger is refused


@dataclass(frozen=True)
class Ack:
    batch_id: str
    last_contiguous_seq: int | None = None
    epoch: str | None = None
    refused: dict[str, str] = field(default_factory=dict)  # reading id -> reason
    t_origin: float | None = None
    t_recv: float | None = None
    t_send: float | None = None


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} is not a number")
    return float(value)


MAX_BATCHES = 256  # batches one cumulative ack may cover


def parse_ack(payload: bytes) -> Ack:
    """A single-batch ``down/ack`` message, strictly; ValueError for anything else."""
    acks = parse_acks(payload)
    if len(acks) != 1:
        raise ValueError(f"an ack of {len(acks)} batches")
    return acks[0]


def parse_acks(payload: bytes) -> list[Ack]:
    """A ``down/ack`` message of one batch or a cumulative one, strictly, in the order central
    committed the batches; ValueError for anything else."""
    if len(payload) > MAX_ACK_BYTES:
        raise ValueError(f"ack of {len(payload)} bytes")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise ValueError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError("no batch_id")
    if "acks" not in data:
        return [_one(data, data)]
    items = data["acks"]
    if not isinstance(items, list) or not items or len(items) > MAX_BATCHES:
        raise ValueError(f"acks is not a list of 1 to {MAX_BATCHES} batches")
    if not all(isinstance(item, dict) for item in items):
        raise ValueError("an acks entry is not an object")
    return [_one(item, data) for item in items]


def _one(data: dict[str, Any], outer: dict[str, Any]) -> Ack:
    """One batch's ack: its own fields from ``data``; the store's epoch, seq and central's
    send time from ``outer`` (the same dict for a single-batch ack)."""
    if not isinstance(data.get("batch_id"), str):
        raise ValueError("no batch_id")
    seq = outer.get("last_contiguous_seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise ValueError("last_contiguous_seq is not an integer")
    epoch = outer.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        raise ValueError("epoch is not a string")
    refused: dict[str, str] = {}
    items = data.get("refused", [])
    if not isinstance(items, list):
        raise ValueError("refused is not a list")
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("id"), str)):
            raise ValueError("a refused entry without an id")
        reason = item.get("reason", "refused")
        refused[item["id"]] = reason if isinstance(reason, str) else "refused"
    t_send = _number(outer, "t_send")
    if t_send is None:
        t_send = _number(outer, "central_time")  # older receivers: one time stamp
    return Ack(
        data["batch_id"],
        seq,
        epoch,
        refused,
        _number(data, "t_origin"),
        _number(data, "t_recv"),
        t_send,
    )


MAX_REASON = 200  # a dead letter's reason as the unit sees it: the error's first words


@dataclass(frozen=True)
class DeadLetterNotice:
    reason: str
    batch_id: str | None = None
    epoch: str | None = None
    bytes: int = 0
    parked_at: str | None = None


def dead_letter_body(notice: DeadLetterNotice) -> bytes:
    """Central's side: the notice as it goes on ``down/ack``."""
    return json.dumps(
        {
            "dead_letter": {
                "reason": notice.reason[:MAX_REASON],
                "batch_id": notice.batch_id,
                "epoch": notice.epoch,
                "bytes": notice.bytes,
                "parked_at": notice.parked_at,
            }
        }
    ).encode()


def parse_dead_letter(payload: bytes) -> DeadLetterNotice | None:
    """A dead-letter notice, strictly; None when the payload is not one (an ordinary ack, or
    anything :func:`parse_ack` refuses); ValueError for a notice of the wrong shape."""
    if len(payload) > MAX_ACK_BYTES or b'"dead_letter"' not in payload:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or "dead_letter" not in data:
        return None
    body = data["dead_letter"]
    if not isinstance(body, dict) or not isinstance(body.get("reason"), str):
        raise ValueError("a dead-letter notice without a reason")
    for key in ("batch_id", "epoch", "parked_at"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ValueError(f"dead letter {key} is not a string")
    size = body.get("bytes", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("dead letter bytes is not a count")
    return DeadLetterNotice(
        body["reason"][:MAX_REASON],
        body.get("batch_id"),
        body.get("epoch"),
        size,
        body.get("parked_at"),
    )
