"""Outbox rows of every shape the codec writes (lone readings with and without a patient,
source key, value, flags, clock source, device time with or without a zone or a clock offset,
updates; BP panels; GPS fixes), with fixed ids: ``tests/sync/golden/bundle-v3.json`` is the
Bundle sync/fhir.py wrote for them before issue 19 (the wire output must not change)."""

from __future__ import annotations

import json
from typing import Any

from sync import fhir
from tests.sync.test_fhir import ENCOUNTER, ENCOUNTER_INFO, row

FACTS = json.dumps(
    {
        "serial": "SN1",
        "system_id": None,
        "mac": "00-1C-05-FF-E8-74",
        "manufacturer": "Nonin",
        "model": "3230",
        "firmware": "r2.1",
        "mdc_type": 528388,
        "version": "v1",
        "acked": None,
    }
)
HELD = json.dumps({"serial": "SN2", "version": "v2", "acked": "v2"})


def golden_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(quantity: str, value: float | None, **extra: Any) -> None:
        seq = len(rows) + 1 + (3 if len(rows) > 20 else 0)  # a gap in the seqs
        rows.append(
            row(
                seq,
                quantity,
                value,
                id=f"00000000-0000-4000-8000-{seq:012d}",
                received_at=f"2026-11-23T08:{seq // 60:02d}:{seq % 60:02d}.250Z",
                device_facts=FACTS if seq % 2 else HELD,
                timezone="Africa/Casablanca",
                **extra,
            )
        )

    for i, quantity in enumerate(
        [
            "spo2",
            "pulse_rate",
            "body_temperature",
            "glucose",
            "body_fat_percentage",
            "respiratory_rate",
        ]
    ):
        add(quantity, 97.5 - i, device_id=f"dev-{i % 2}")
    add("spo2", 84.0, flags='["alert"]', clock_source="gps")
    add("spo2", None, absent_reason="error", flags='["implausible","alert"]')
    add(
        "glucose",
        6.1,
        unit="mmol/L",
        source_key='hl7:["MON","MSG1",1]',
        context='[["result-status","P"]]',
    )
    add("pulse_rate", 70.0, device_time="2026-11-23T07:59:00", clock_source="untrusted")
    add("pulse_rate", 71.0, device_time="2026-11-23T07:59:00+01:00")
    add(
        "pulse_rate",
        72.0,
        device_time="2026-11-23T07:59:00Z",
        context=f'[["{fhir.CONTEXT_CLOCK_OFFSET}","90"]]',
    )
    add("pulse_rate", 73.0, device_time="not a time")
    add("spo2", 96.0, encounter_id=ENCOUNTER, encounter=ENCOUNTER_INFO)
    add(
        "spo2",
        95.0,
        encounter_id=ENCOUNTER,
        encounter=ENCOUNTER_INFO,
        attributed_at="2026-11-23T08:05:00.000Z",
        source_key="astm:S1|GLU",
    )
    for quantity, value in (
        ("systolic_bp", 120.0),
        ("diastolic_bp", 80.0),
        ("mean_arterial_pressure", 93.0),
    ):
        add(
            quantity,
            value,
            device_id="cuff",
            device_time="2026-11-23T08:01:00",
            encounter_id=ENCOUNTER,
            encounter=ENCOUNTER_INFO,
        )
    add("systolic_bp", 130.0, device_id="cuff")  # a panel without its diastolic
    add("mean_arterial_pressure", 90.0, device_id="cuff", device_time="2026-11-23T08:02:00")
    for quantity, value in (("latitude", 33.5731), ("longitude", -7.5898), ("altitude", 50.0)):
        add(quantity, value, device_id="gps", device_time="2026-11-23T08:03:00Z")
    add("latitude", 33.6, device_id="gps")  # half a fix
    for i in range(8):  # many readings of one shape
        add("spo2", 90.0 + i / 3, device_id="dev-0", source_key=f'hl7:["MON","MSG{i}",1]')
    return rows
