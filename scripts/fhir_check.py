"""Validate a unit's uplink as FHIR R4: every reading of a store encoded as the sync daemon
does (batches of ``--batch``), each Bundle checked against the fhir.resources R4B models and
for empty arrays/objects/strings; prints the counts, and one Bundle with the patient's and the
readings' identifiers redacted (``--show``). Also counts the R4 vital-signs profile's
violations (sync/conformance.py) and the extension URLs no StructureDefinition defines (the
project's own are in sync/fhir_profiles/); each one found is printed. Exit 1 when any.

Given an export folder (``edge-agent central export --out DIR``) instead of a store, checks
every NDJSON line the same way, and the manifest's ``request`` and ``output[].url`` (absolute
URLs).

    edge-agent demo --seconds 30 --keep /tmp/demo
    python scripts/fhir_check.py /tmp/demo/unit.db --show
    python scripts/fhir_check.py /tmp/export
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

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from sqlite_utils import Database

from sync import codec, conformance, fhir, outbox

PROBLEMS = (
    "profile violations (vital-signs)",
    "unresolved extension URLs",
    "manifest URLs not absolute",
)


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
    counts: collections.Counter[str] = collections.Counter()
    problems: list[str] = []
    if args.store.is_dir():
        check_export(args.store, counts, problems)
    else:
        check_store(args, counts, problems)
    for key in PROBLEMS:
        counts[key] += 0
    for key, value in sorted(counts.items()):
        print(f"{key:50} {value}")
    for problem in problems[:50]:
        print("  " + problem)
    return 1 if problems else 0


def check_resource_conformance(
    resource: dict[str, Any],
    where: str,
    known: set[str],
    kinds: dict[str, str],
    counts: collections.Counter[str],
    problems: list[str],
) -> None:
    found = (
        conformance.observation_violations(resource, kinds, where)
        if resource.get("resourceType") == "Observation"
        else []
    )
    counts[PROBLEMS[0]] += len(found)
    problems += found
    unresolved = conformance.unresolved_extensions(resource, known)
    counts[PROBLEMS[1]] += len(unresolved)
    problems += [f"{where}: extension {url} has no StructureDefinition" for url in unresolved]


def check_export(out: Path, counts: collections.Counter[str], problems: list[str]) -> None:
    known = set(conformance.shipped_profiles())
    manifest = json.loads((out / "manifest.json").read_text())
    for url in [manifest["request"], *(o["url"] for o in manifest["output"])]:
        if not url.startswith(("http://", "https://", "file:///")):  # absolute URLs
            counts[PROBLEMS[2]] += 1
            problems.append(f"manifest: {url!r} is not an absolute URL")
    for item in manifest["output"]:
        path = out / item["url"].rsplit("/", 1)[-1]
        for n, line in enumerate(path.read_text().splitlines(), 1):
            resource = json.loads(line)
            kind = resource["resourceType"]
            get_fhir_model_class(kind).model_validate(resource)  # raises when invalid
            counts["empty arrays/objects/strings"] += empties(resource)
            counts[kind] += 1
            check_resource_conformance(resource, f"{path.name}:{n}", known, {}, counts, problems)
            if kind == "Observation":
                counts["Observation " + resource["category"][0]["coding"][0]["code"]] += 1


def check_store(
    args: argparse.Namespace, counts: collections.Counter[str], problems: list[str]
) -> None:
    known = set(conformance.shipped_profiles())
    conn = sqlite3.connect(f"file:{args.store}?mode=ro", uri=True)
    ((epoch,),) = conn.execute("SELECT epoch FROM store_identity").fetchall()
    rows = outbox.readings(Database(conn), "1 ORDER BY seq", [])
    counts: collections.Counter[str] = collections.Counter()
    shown = False
    for start in range(0, len(rows), args.batch):
        chunk = rows[start : start + args.batch]
        payload = codec.encode_batch(
            "mmu-check", str(uuid.uuid4()), chunk, "2026-11-23T08:00:00.000Z", epoch=str(epoch)
        )
        bundle = json.loads(codec._inflate(payload))
        Bundle.model_validate(bundle)  # raises on an invalid Bundle
        counts["bundles valid"] += 1
        counts["empty arrays/objects/strings"] += empties(bundle)
        counts["bytes"] += len(payload)
        kinds = {
            e["fullUrl"]: e["resource"]["resourceType"] for e in bundle["entry"] if "fullUrl" in e
        }
        for n, entry in enumerate(bundle["entry"]):
            resource = entry["resource"]
            kind = resource["resourceType"]
            check_resource_conformance(
                resource, f"bundle {start // args.batch} entry {n}", known, kinds, counts, problems
            )
            if kind == "Observation":
                kind += " " + resource["category"][0]["coding"][0]["code"]
                if "encounter" in resource:
                    counts["Observations with subject Patient and encounter"] += 1
                elif kinds.get(resource["subject"]["reference"]) == "Patient":
                    counts["Observations with the unidentified Patient"] += 1
                if "component" in resource:
                    counts["Observations BP panel 85354-9"] += 1
            counts[kind] += 1
        if (
            args.show
            and not shown
            and any(e["resource"]["resourceType"] == "Encounter" for e in bundle["entry"])
        ):
            print(json.dumps(redact(bundle), indent=1))
            shown = True
    counts["readings"] = len(rows)


if __name__ == "__main__":
    sys.exit(main())
