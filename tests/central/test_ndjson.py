"""The pure rules of the Bulk Data export: ids are the Bundle's fullUrl uuids derived again from
what the receiver stores, every ``urn:uuid:`` reference becomes ``Type/id``, a panel is written
by one of its rows, ``--since`` is read as an instant."""

from __future__ import annotations

import json

import pytest

from sync import fhir
from sync.central import ndjson
from tests.sync.test_fhir import ENCOUNTER, ENCOUNTER_INFO, row


def a_bundle() -> dict[str, object]:
    rows = [
        row(1, "spo2"),
        row(2, "systolic_bp", 120.0, encounter_id=ENCOUNTER, encounter=ENCOUNTER_INFO),
        row(3, "diastolic_bp", 80.0, encounter_id=ENCOUNTER, encounter=ENCOUNTER_INFO),
    ]
    return fhir.bundle("mmu-t", "e", "b", rows, "2026-11-23T08:00:00.000Z")


def test_stored_ids_are_the_bundles_full_urls() -> None:
    entries = a_bundle()["entry"]
    assert isinstance(entries, list)
    heads = [
        e for e in entries if "fullUrl" in e and e["resource"]["resourceType"] != "Observation"
    ]
    assert {e["resource"]["resourceType"] for e in heads} == {
        "Patient",
        "Device",
        "Encounter",
        "Location",
    }
    for entry in heads:
        resource = entry["resource"]
        first = resource["identifier"][0]
        key = f"{first['system']}|{first['value']}"
        assert entry["fullUrl"] == "urn:uuid:" + str(
            ndjson.stored_id(resource["resourceType"], key)
        )
    assert ndjson.stored_id("Practitioner", "urn:x|1") is None
    assert ndjson.stored_id("Device", "urn:other|1") is None


def test_rewrite_makes_every_reference_literal() -> None:
    bundle = a_bundle()
    entries = bundle["entry"]
    assert isinstance(entries, list)
    kinds = {
        e["fullUrl"].removeprefix("urn:uuid:"): e["resource"]["resourceType"]
        for e in entries
        if "fullUrl" in e
    }
    for entry in entries:
        out, made, unresolved = ndjson.rewrite(entry["resource"], kinds.get)
        assert unresolved == 0 and "urn:uuid:" not in json.dumps(out)
        for ref in made:
            kind, _, rid = ref.partition("/")
            assert kinds[rid] == kind
        assert "urn:uuid:" in json.dumps(entry["resource"]) or not made  # the input kept
    panel = next(e["resource"] for e in entries if "component" in e["resource"])
    out, made, _ = ndjson.rewrite(panel, kinds.get)
    assert out["subject"]["reference"].startswith("Patient/")
    assert out["encounter"]["reference"] == f"Encounter/{ENCOUNTER}"
    assert sorted(r.partition("/")[0] for r in made) == ["Device", "Encounter", "Patient"]


def test_a_reference_to_nothing_held_is_dropped_and_counted() -> None:
    resource = {
        "resourceType": "Observation",
        "subject": {"reference": "urn:uuid:gone"},
        "device": {"reference": "Device/kept"},
    }
    out, made, unresolved = ndjson.rewrite(resource, lambda _: None)
    assert unresolved == 1 and made == []
    assert out["subject"] == {"display": "a resource central does not hold"}
    assert out["device"] == {"reference": "Device/kept"}


def test_a_panel_is_written_by_its_first_held_row() -> None:
    panel = {
        "identifier": [
            {"system": fhir.READING_SYSTEM, "value": "a"},
            {"system": fhir.SOURCE_SYSTEM, "value": "x"},
            {"system": fhir.READING_SYSTEM, "value": "b"},
        ]
    }
    assert ndjson.first_reading(panel, "a") == ("a", [])
    assert ndjson.first_reading(panel, "b") == ("a", ["a"])
    assert ndjson.first_reading({}, "r1") == ("r1", [])
    bad = ndjson.first_reading(
        {"identifier": [{"system": fhir.READING_SYSTEM, "value": "a|b"}]}, "a|b"
    )[0]
    assert bad == fhir.stable_uuid("id", "a|b") and ndjson.FHIR_ID.match(bad)


def test_files_logical_references_get_literal_ones_when_held() -> None:
    patient = fhir.stable_uuid("patient", "urn:p", "42")
    media = {
        "resourceType": "Media",
        "subject": {"type": "Patient", "identifier": {"system": "urn:p", "value": "42"}},
        "encounter": {
            "type": "Encounter",
            "identifier": {"system": fhir.ENCOUNTER_SYSTEM, "value": "enc-not-held"},
        },
    }
    out, made = ndjson.link_logical(media, {patient: "Patient"}.get)
    assert made == [f"Patient/{patient}"]
    assert out["subject"]["reference"] == f"Patient/{patient}"
    assert "reference" not in out["encounter"]  # central does not hold it: logical only


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-11-23", "2026-11-23T00:00:00.000Z"),
        ("2026-11-23T08:00:01Z", "2026-11-23T08:00:01.000Z"),
        ("2026-11-23T09:00:01.5+01:00", "2026-11-23T08:00:01.500Z"),
        ("2026-11-23T08:00:01.000Z", "2026-11-23T08:00:01.000Z"),
    ],
)
def test_since_is_an_instant_in_the_stored_form(text: str, instant: str) -> None:
    assert ndjson.parse_since(text) == instant


@pytest.mark.parametrize("text", ["2026-11-23T08:00:01", "yesterday", "2026-13-01", ""])
def test_since_refuses_what_is_not_an_instant(text: str) -> None:
    with pytest.raises(ValueError, match=r"zone|ISO 8601"):
        ndjson.parse_since(text)


def test_finish_puts_type_id_and_meta_first() -> None:
    out = ndjson.finish(
        {"status": "final", "resourceType": "Observation", "meta": {"tag": []}},
        "r1",
        "2026-11-23T08:00:01.000Z",
    )
    assert list(out)[:3] == ["resourceType", "id", "meta"]
    assert out["meta"] == {"tag": [], "lastUpdated": "2026-11-23T08:00:01.000Z"}


def test_manifest_lists_types_with_resources_in_bulk_order() -> None:
    made = ndjson.manifest("T", "req", {"Observation": 2, "Patient": 1, "Media": 0}, {})
    assert made["output"] == [
        {"type": "Patient", "url": "Patient.ndjson", "count": 1},
        {"type": "Observation", "url": "Observation.ndjson", "count": 2},
    ]
