"""Print a new zlib preset dictionary for the codec, from sync/fhir.py's current output.

    python -m scripts.zdict > sync/dictionaries/mmu-zdict-<n+1>.zdict  # named in sync/codec.py

The dictionary is a Bundle of the shapes a unit sends, values emptied (ids, times, numbers),
in the order of how often they occur (zlib finds the end of the window at the shortest
distances): the Bundle head, a Device with every fact, a GPS fix, an encounter (Patient,
Location, Encounter), lab results, body composition, then the vital signs, SpO2 last. A
shipped dictionary is never edited: the codec keeps decoding every version it ever sent.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from edge_agent.catalogue import catalogue
from sync import fhir

UNIT, DEVICE = "mmu-", "x"
FACTS = {
    "serial": "x",
    "system_id": "x",
    "mac": "x",
    "manufacturer": "x",
    "model": "x",
    "firmware": "x",
    "mdc_type": 528388,
}
ENCOUNTER = json.dumps(
    {
        "patient_system": "urn:mmu:patient:national-id",
        "patient_value": "x",
        "opened_at": "2026-11-23T07:59:00.000Z",
        "closed_at": None,
        "practitioner_role": "nurse",
        "latitude": 1.0,
        "longitude": 1.0,
    }
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def _row(seq: int, quantity: str, **extra: Any) -> dict[str, Any]:
    q = catalogue()[quantity]
    base: dict[str, Any] = {
        "seq": seq,
        "id": f"00000000-0000-0000-0000-{seq:012d}",
        "device_id": DEVICE,
        "quantity": quantity,
        "value": 1.0,
        "unit": q.ucum,
        "loinc": q.loinc,
        "mdc": q.mdc,
        "device_time": None,
        "received_at": "2026-11-23T08:00:00.000Z",
        "clock_source": "system",
        "flags": "[]",
        "absent_reason": None,
        "encounter_id": None,
        "context": "[]",
        "source_key": None,
        "attributed_at": None,
        "timezone": None,
        "encounter": None,
        "device_facts": json.dumps(FACTS),
    }
    base.update(extra)
    return base


def rows() -> list[dict[str, Any]]:
    out = [
        _row(1, "latitude", device_time="2026-11-23T08:00:00Z"),
        _row(2, "longitude", device_time="2026-11-23T08:00:00Z"),
        _row(3, "altitude", device_time="2026-11-23T08:00:00Z"),
        _row(4, "spo2", encounter_id="00000000-0000-0000-0000-000000000000", encounter=ENCOUNTER),
        _row(
            5,
            "glucose",
            unit="mmol/L",
            device_time="2026-11-23T08:00:00",
            source_key='hl7:["',
            context='[["result-status","P"]]',
        ),
        _row(
            6, "glucose", value=None, absent_reason="unknown", flags='["alert"]', clock_source="gps"
        ),
        _row(7, "hba1c"),
        _row(8, "body_fat_percentage"),
        _row(9, "body_temperature"),
        _row(10, "body_weight"),
        _row(11, "respiratory_rate"),
        _row(12, "systolic_bp"),
        _row(13, "diastolic_bp"),
        _row(14, "mean_arterial_pressure"),
        _row(15, "pulse_rate"),
        _row(16, "spo2"),
    ]
    return out


def dictionary() -> bytes:
    bundle = fhir.bundle(UNIT, "", "", rows(), "2026-11-23T08:00:00.000Z")
    text = json.dumps(bundle, separators=(",", ":"), ensure_ascii=False)
    text = _UUID.sub("", text)
    text = _TIME.sub(lambda m: "2026-11-T:" + (".Z" if m.group(2) else ""), text)
    text = re.sub(r'"(value|valueDecimal|latitude|longitude|altitude)":-?[0-9.]+', r'"\1":0', text)
    text = text.replace(f'"{DEVICE}"', '""').replace(f'|{DEVICE}"', '|"')
    text = re.sub(r'"code":"1-[0-9,-]*"', '"code":"1-"', text)
    return text.encode()


if __name__ == "__main__":
    sys.stdout.buffer.write(dictionary())  # the exact bytes: no final newline
