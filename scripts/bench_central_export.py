"""Time ``edge-agent central export`` on a SQLite central store of ``--readings`` readings.

The store is built as the receiver leaves it (codec-built mmu.readings/3 batches of 500 stored
by the real CentralStore): half of the readings in encounters (one patient per 50 readings,
with the van's GPS place), a fifth of them blood pressure pairs (one panel resource for two
readings). Then the real command runs in its own process; prints the wall time, resources a
second and the export's peak memory (max RSS).

    python scripts/bench_central_export.py --readings 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sync import codec
from sync.central.store import SqliteCentral

UNIT = "mmu-bench"


def readings(start: int, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for seq in range(start, start + n):
        group = seq // 50
        row: dict[str, Any] = {
            "seq": seq,
            "id": str(uuid.uuid4()),
            "device_id": "ox",
            "quantity": "spo2",
            "value": 97.0,
            "unit": "%",
            "loinc": "59408-5",
            "mdc": 150456,
            "device_time": None,
            "received_at": f"2026-11-23T08:{seq // 1000 % 60:02d}:00.000Z",
            "clock_source": "system",
            "flags": "[]",
            "absent_reason": None,
            "encounter_id": None,
        }
        if seq % 10 in (0, 1):  # a blood pressure pair
            row.update(
                device_id="cuff",
                quantity="systolic_bp" if seq % 10 == 0 else "diastolic_bp",
                value=120.0,
                unit="mm[Hg]",
                loinc=None,
                mdc=None,
                received_at=f"2026-11-23T08:00:{seq // 10 % 60:02d}.000Z",
            )
        if group % 2:  # in an encounter
            row["encounter_id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"enc{group}"))
            row["encounter"] = json.dumps(
                {
                    "patient_system": "urn:mmu:patient:bench",
                    "patient_value": f"P{group}",
                    "opened_at": "2026-11-23T07:59:00.000Z",
                    "closed_at": None,
                    "latitude": 33.57,
                    "longitude": -7.59,
                }
            )
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "central.db"
        central = SqliteCentral(db)
        began = time.perf_counter()
        for start in range(1, args.readings + 1, 500):
            payload = codec.encode_batch(
                UNIT,
                str(uuid.uuid4()),
                readings(start, min(500, args.readings + 1 - start)),
                "2026-11-23T08:00:00Z",
                epoch="5f0c2b1e-8d3a-4c1b-9f2e-0a1b2c3d4e5f",
            )
            central.store_batches([codec.decode_batch(payload)], "2026-11-23T08:00:01.000Z")
        central.close()
        print(
            f"built {args.readings} readings in {time.perf_counter() - began:.1f} s "
            f"({db.stat().st_size / 1e6:.0f} MB)"
        )
        began = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent",
                "central",
                "export",
                "--db",
                str(db),
                "--out",
                str(Path(tmp) / "out"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        took = time.perf_counter() - began
        manifest = json.loads((Path(tmp) / "out" / "manifest.json").read_text())
        total = sum(o["count"] for o in manifest["output"])
        size = sum(p.stat().st_size for p in (Path(tmp) / "out").iterdir())
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(done.stderr.strip().splitlines()[-1])
        print({o["type"]: o["count"] for o in manifest["output"]})
        print(
            f"export: {took:.1f} s for {args.readings} readings, {total} resources "
            f"({total / took:.0f} resources/s, {size / 1e6:.0f} MB NDJSON), "
            f"peak RSS {peak:.0f} MB"
        )


if __name__ == "__main__":
    main()
