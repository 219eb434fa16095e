"""Central's acknowledgements (``mmu/v1/{unit}/down/ack``), parsed strictly.

An ack names the batch, the readings of it central does *not* hold (``refused``, with a reason:
a conflict, a store error), central's last contiguous seq for this store's epoch, and the three
time stamps of an NTP-style exchange: ``t_origin`` (the unit's clock when it published, echoed
from the message's ``sent_at`` property), ``t_recv`` and ``t_send`` (central's clock). Anything
else is refused unparsed (:class:`ValueError`); an ack is about 200 bytes.
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


def parse_ack(payload: bytes) -> Ack:
    """A ``down/ack`` message, strictly; ValueError for anything else."""
    if len(payload) > MAX_ACK_BYTES:
        raise ValueError(f"ack of {len(payload)} bytes")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise ValueError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not isinstance(data.get("batch_id"), str):
        raise ValueError("no batch_id")
    seq = data.get("last_contiguous_seq")
    if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool)):
        raise ValueError("last_contiguous_seq is not an integer")
    epoch = data.get("epoch")
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
    t_send = _number(data, "t_send")
    if t_send is None:
        t_send = _number(data, "central_time")  # older receivers: one time stamp
    return Ack(data["batch_id"], seq, epoch, refused, _number(data, "t_origin"),
               _number(data, "t_recv"), t_send)
