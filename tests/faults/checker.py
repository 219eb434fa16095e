"""The chaos harness's checker, Jepsen-shaped (docs FAULT-TESTING.md §2.9): pure functions over
the witness history, central's rows and the unit's rows after heal-and-drain.

Every reading a monitor sent is classified by content (observation time, quantity):
**ok** (acknowledged AA, at central), **lost** (acknowledged, not at central), **recovered**
(never acknowledged, at central: allowed), **unacked** (never acknowledged, not at central:
allowed, the monitor would have kept it). Central rows that no monitor sent, or whose value
differs from what was sent, are **unexpected**. A reading at central more than once is
**duplicated by content**; an id or a (unit, epoch, seq) held twice, or a seq of the unit's
store held at central under another id (a seq reused after a power cut), is **duplicated by
id**. Seq numbers must be contiguous per (unit, store epoch), or per unit without epochs.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync.fhir import EXT_DEVICE_TIME

ContentKey = tuple[int, str]  # (observation time in epoch seconds, quantity)
EPOCH_COLUMNS = ("store_epoch", "epoch", "incarnation")


@dataclass(frozen=True)
class CentralRow:
    id: str
    unit: str
    seq: int
    epoch: str | None  # the unit's store epoch when central records one
    key: ContentKey | None  # None: no observation time or quantity readable
    value: float | None


@dataclass(frozen=True)
class UnitRow:
    id: str
    seq: int
    epoch: str | None


@dataclass
class Classes:
    ok: int = 0
    lost: int = 0
    recovered: int = 0
    unacked: int = 0
    unexpected: int = 0
    duplicated_by_content: int = 0
    duplicated_by_id: int = 0
    seq_gaps: int = 0
    lost_examples: list[str] = field(default_factory=list)  # MSH-10s, a few

    @property
    def valid(self) -> bool:
        return not (
            self.lost
            or self.unexpected
            or self.duplicated_by_content
            or self.duplicated_by_id
            or self.seq_gaps
        )


@dataclass
class History:
    """What the witness file says: readings sent (by content) and messages acknowledged."""

    sent: dict[ContentKey, tuple[str, float]] = field(default_factory=dict)  # -> (MSH-10, value)
    acked: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    messages: int = 0
    resends: int = 0


def read_history(records: Iterable[Mapping[str, Any]]) -> History:
    h = History()
    for rec in records:
        if rec["e"] == "sent":
            h.messages += 1
            for quantity, value in rec["r"]:
                h.sent[(int(rec["t"]), str(quantity))] = (str(rec["cid"]), float(value))
        elif rec["e"] == "resend":
            h.resends += 1
        elif rec["e"] == "ack":
            (h.acked if rec["code"] in ("AA", "CA") else h.refused).add(str(rec["cid"]))
    return h


def _quantity(code: Any) -> str | None:
    """The catalogue quantity of an Observation's code: its text when the unit wrote one (the
    mmu.readings/2 shape), else its IEEE 11073 MDC code (one per quantity), else its LOINC."""
    from edge_agent.catalogue import catalogue

    if not isinstance(code, dict):
        return None
    if isinstance(code.get("text"), str):
        return str(code["text"])
    codings = [c for c in code.get("coding") or [] if isinstance(c, dict)]
    for key, q in catalogue().items():
        for c in codings:
            if (q.mdc is not None and str(c.get("code")) == str(q.mdc)) or (
                q.loinc is not None and c.get("code") == q.loinc
            ):
                return key
    return None


def content_key(resource: Mapping[str, Any]) -> tuple[ContentKey | None, float | None]:
    """(observation time, quantity) and value of a central Observation resource."""
    quantity = _quantity(resource.get("code"))
    # The device's time: effectiveDateTime (always zoned in mmu.readings/3), else the raw
    # device time the older shape kept in an extension.
    stamp = (
        resource.get("effectiveDateTime")
        if "effectiveDateTime" in resource
        else next(
            (
                e.get("valueString")
                for e in resource.get("extension", [])
                if e.get("url") == EXT_DEVICE_TIME
            ),
            None,
        )
    )
    raw = resource.get("valueQuantity", {}).get("value")
    value = float(raw) if isinstance(raw, int | float) else None
    if not isinstance(quantity, str) or not isinstance(stamp, str):
        return None, value
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None, value
    if moment.tzinfo is None:
        return None, value
    return (int(moment.timestamp()), quantity), value


def central_row(id_: str, unit: str, seq: int, epoch: str | None, resource: str) -> CentralRow:
    key, value = content_key(json.loads(resource))
    return CentralRow(id_, unit, int(seq), epoch, key, value)


def seq_gaps(seqs: Iterable[int]) -> int:
    """Holes between the lowest and highest seq (a reused seq is counted elsewhere)."""
    distinct = set(seqs)
    return 0 if not distinct else max(distinct) - min(distinct) + 1 - len(distinct)


def classify(history: History, central: list[CentralRow], unit: list[UnitRow]) -> Classes:
    out = Classes()
    at_central: Counter[ContentKey] = Counter()
    for row in central:
        sent = history.sent.get(row.key) if row.key is not None else None
        if sent is None or sent[1] != row.value:
            out.unexpected += 1
        else:
            at_central[row.key] += 1  # type: ignore[index]  # key is set when sent is
    for key, (control_id, _) in history.sent.items():
        count = at_central[key]
        if count > 1:
            out.duplicated_by_content += 1
        if control_id in history.acked:
            if count:
                out.ok += 1
            else:
                out.lost += 1
                if len(out.lost_examples) < 5 and control_id not in out.lost_examples:
                    out.lost_examples.append(control_id)
        elif count:
            out.recovered += 1
        else:
            out.unacked += 1
    ids = Counter(row.id for row in central)
    out.duplicated_by_id += sum(n - 1 for n in ids.values() if n > 1)
    slots = Counter((row.unit, row.epoch, row.seq) for row in central)
    out.duplicated_by_id += sum(n - 1 for n in slots.values() if n > 1)
    by_slot = {(row.epoch, row.seq): row.id for row in central}
    out.duplicated_by_id += sum(  # the unit's seq held at central by another reading
        1 for row in unit if by_slot.get((row.epoch, row.seq), row.id) != row.id
    )
    groups: defaultdict[tuple[str, str | None], list[int]] = defaultdict(list)
    for row in central:
        groups[(row.unit, row.epoch)].append(row.seq)
    out.seq_gaps = sum(seq_gaps(seqs) for seqs in groups.values())
    return out
