"""Validate a unit's uplink as FHIR R4: every reading of a store encoded as the sync daemon
does (batches of ``--batch``), each Bundle checked against the fhir.resources R4B models and
for empty arrays/objects/strings; prints the counts, and one Bundle with the patient's and the
readings' identifiers redacted (``--show``).

    edge-agent demo --seconds 30 --keep /tmp/demo
    python scripts/fhir_check.py /tmp/demo/unit.db --show
"""

from __future__ import annotations

import argparse
import collections
import json
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from sqlite_utils import Database

from sync import codec, fhir, outbox


def empties(node: Any) -> int:
    if isinstance(node, dict):
        return (not node) + sum(empties(v) for v in node.values())
    if isinstance(node, list):
        return (not node) + sum(empties(v) for v in node)
    return int(node == "")


def redact(bundle: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        for ident in resource.get("identifier", []):
            if resource["resourceType"] == "Patient" or ident["system"] == fhir.READING_SYSTEM:
                text = text.replace(ident["value"], "REDACTED")
    return json.loads(text)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--show", action="store_true", help="print one Bundle, redacted")
    args = parser.parse_args()
    conn = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True)
    (epoch,), = conn.execute("SELECT epoch FROM store_identity").fetchall()
    rows = outbox.readings(Database(conn), "1 ORDER BY seq", [])
    counts: collections.Counter[str] = collections.Counter()
    shown = False
    for start in range(0, len(rows), args.batch):
        chunk = rows[start:start + args.batch]
        payload = codec.encode_batch("mmu-check", str(uuid.uuid4()), chunk,
                                     "2026-11-23T08:00:00.000Z", epoch=str(epoch))
        bundle = json.loads(codec._inflate(payload))
        Bundle.model_validate(bundle)  # raises on an invalid Bundle
        counts["bundles valid"] += 1
        counts["empty arrays/objects/strings"] += empties(bundle)
        counts["bytes"] += len(payload)
        for entry in bundle["entry"]:
            resource = entry["resource"]
            kind = resource["resourceType"]
            if kind == "Observation":
                kind += " " + resource["category"][0]["coding"][0]["code"]
                if "encounter" in resource:
                    counts["Observations with subject Patient and encounter"] += 1
                if "component" in resource:
                    counts["Observations BP panel 85354-9"] += 1
            counts[kind] += 1
        if args.show and not shown and any(
                e["resource"]["resourceType"] == "Encounter" for e in bundle["entry"]):
            print(json.dumps(redact(bundle), indent=1))
            shown = True
    counts["readings"] = len(rows)
    for key, value in sorted(counts.items()):
        print(f"{key:50} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
