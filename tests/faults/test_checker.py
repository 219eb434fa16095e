"""The chaos checker on hand-made histories: each class is recognised, including the receiver's
``ON CONFLICT DO NOTHING`` dropping a reading whose seq another reading already holds."""

from __future__ import annotations

import json
from typing import Any

from sync import codec
from tests.faults.checker import (
    CentralRow,
    History,
    UnitRow,
    central_row,
    classify,
    read_history,
)
from tests.faults.witness import BASE_EPOCH

T = BASE_EPOCH


def history(*messages: tuple[str, int, list[tuple[str, float]], bool]) -> History:
    records: list[dict[str, Any]] = []
    for cid, t, readings, acked in messages:
        records.append({"e": "sent", "cid": cid, "t": t, "r": [list(r) for r in readings]})
        if acked:
            records.append({"e": "ack", "cid": cid, "code": "AA"})
    return read_history(records)


def row(id_: str, seq: int, t: int, quantity: str, value: float) -> CentralRow:
    return CentralRow(id_, "u", seq, None, (t, quantity), value)


H = history(
    ("M1", T + 1, [("spo2", 97.0), ("pulse_rate", 70.0)], True),
    ("M2", T + 2, [("spo2", 95.0)], False),
)


def test_every_class() -> None:
    good = [row("a", 1, T + 1, "spo2", 97.0), row("b", 2, T + 1, "pulse_rate", 70.0)]
    c = classify(H, good, [UnitRow("a", 1, None), UnitRow("b", 2, None)])
    assert (c.ok, c.lost, c.recovered, c.unacked, c.valid) == (2, 0, 0, 1, True)

    c = classify(H, good[:1], [])
    assert (c.ok, c.lost, c.lost_examples) == (1, 1, ["M1"])

    c = classify(H, [*good, row("c", 3, T + 2, "spo2", 95.0)], [])
    assert (c.recovered, c.unacked, c.valid) == (1, 0, True)

    c = classify(H, [*good, row("x", 3, T + 9, "spo2", 95.0), row("y", 4, T + 2, "spo2", 1.0)], [])
    assert c.unexpected == 2

    c = classify(H, [*good, row("a2", 3, T + 1, "spo2", 97.0)], [])
    assert (c.duplicated_by_content, c.duplicated_by_id, c.ok) == (1, 0, 2)

    c = classify(H, [good[0], row("b", 3, T + 1, "pulse_rate", 70.0)], [])
    assert (c.seq_gaps, c.duplicated_by_id) == (1, 0)

    c = classify(H, [*good, good[1]], [])
    assert c.duplicated_by_id == 2  # the id and the seq held twice


def test_seq_reused_after_a_power_cut_and_dropped_by_the_receiver() -> None:
    # The unit lost "b" (seq 2) in a power cut after central stored it, then gave seq 2 to the
    # pulse reading "b2"; central's ON CONFLICT DO NOTHING dropped "b2" silently.
    hist = history(
        ("M1", T + 1, [("spo2", 97.0)], True), ("M3", T + 3, [("pulse_rate", 70.0)], True)
    )
    central = [row("a", 1, T + 1, "spo2", 97.0), row("b", 2, T + 2, "spo2", 50.0)]
    c = classify(hist, central, [UnitRow("a", 1, None), UnitRow("b2", 2, None)])
    assert (c.lost, c.unexpected, c.duplicated_by_id) == (1, 1, 1)


def test_seq_contiguity_is_per_store_epoch() -> None:
    central = [
        CentralRow("a", "u", 1, "e1", (T + 1, "spo2"), 97.0),
        CentralRow("b", "u", 1, "e2", (T + 1, "pulse_rate"), 70.0),
    ]
    c = classify(H, central, [])
    assert (c.seq_gaps, c.duplicated_by_id, c.ok) == (0, 0, 2)


def test_content_key_of_a_real_observation() -> None:
    stamp = "2024-01-01T01:00:05+01:00"  # BASE_EPOCH + 5
    obs = codec.observation(
        "u",
        {
            "id": "r1",
            "seq": 7,
            "quantity": "spo2",
            "device_time": stamp,
            "received_at": "2026-11-30T00:00:00.000Z",
            "device_id": "d",
            "value": 97.0,
            "unit": "%",
            "loinc": "59408-5",
            "mdc": 150456,
            "flags": "[]",
            "clock_source": "system",
        },
    )
    got = central_row("r1", "u", 7, None, json.dumps(obs))
    assert (got.key, got.value, got.seq) == ((T + 5, "spo2"), 97.0, 7)
