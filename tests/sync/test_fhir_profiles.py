"""The project's own FHIR extensions resolve: each one the unit or central emits has a
StructureDefinition shipped in the package (sync/fhir_profiles/*.json) at a canonical http(s)
URL, valid for the fhir.resources R4B model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fhir.resources.R4B.structuredefinition import StructureDefinition

from sync import conformance, fhir
from sync.central import files_fhir
from sync.files.protocol import FileInit
from tests.sync.test_fhir import EPOCH, NOW, row

PROFILES = Path(fhir.__file__).parent / "fhir_profiles"


def test_every_shipped_structure_definition_is_a_valid_extension_definition() -> None:
    files = sorted(PROFILES.glob("*.json"))
    assert files, "no StructureDefinition shipped"
    for path in files:
        raw = json.loads(path.read_text())
        definition = StructureDefinition.model_validate(raw)
        assert definition.url == fhir.PROFILES + path.stem == raw["url"]
        assert definition.url.startswith("https://")
        assert definition.type == "Extension" and definition.derivation == "constraint"
        assert definition.baseDefinition == "http://hl7.org/fhir/StructureDefinition/Extension"
        assert definition.context, "where the extension may be used"
        assert definition.differential is not None
        elements = {e.path: e for e in definition.differential.element}
        assert elements["Extension.url"].fixedUri == definition.url
        assert elements["Extension.value[x]"].min == 1
    assert set(conformance.shipped_profiles()) == {
        fhir.PROFILES + p.stem for p in files
    }  # the package data the checker reads


def emitted() -> list[dict[str, Any]]:
    """Resources with every extension the unit's codec and central's files emit."""
    rows = [
        row(
            1,
            "spo2",
            97.0,
            flags='["alert"]',
            device_time="2026-11-23T08:59:58",
            clock_source="gps",
        ),
        row(2, "latitude", 33.5, device_time="2026-11-23T07:59:58Z"),
        row(3, "longitude", -7.6, device_time="2026-11-23T07:59:58Z"),
    ]
    bundle = fhir.bundle("u", EPOCH, "b", rows, NOW)
    sha = hashlib.sha256(b"ecg").hexdigest()
    init = FileInit(
        sha,
        sha,
        3,
        "application/dicom",
        "dicom",
        3,
        NOW,
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        instance_uid="1.2.3.4.5",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.9.1.1",
        modality="ECG",
    )
    return [bundle, files_fhir.document_reference("u", init), files_fhir.imaging_study("u", [init])]


def test_every_extension_the_codec_and_central_emit_has_a_structure_definition() -> None:
    shipped = conformance.shipped_profiles()
    urls = {url for resource in emitted() for url in conformance.extension_urls(resource)}
    assert urls == {
        fhir.EXT_FLAGS,
        fhir.EXT_DEVICE_TIME,
        fhir.EXT_CLOCK,
        fhir.EXT_SHA256,
        fhir.EXT_FILE,
    }  # all of them are exercised
    assert urls <= set(shipped)
    for resource in emitted():
        assert conformance.unresolved_extensions(resource, set(shipped)) == []
    # Each one is used where its definition says it may be, with the value type it declares.
    bundle = emitted()[0]
    for entry in bundle["entry"]:
        for ext in entry["resource"].get("extension", []):
            definition = shipped[ext["url"]]
            contexts = {c["expression"] for c in definition["context"]}
            assert entry["resource"]["resourceType"] in contexts
            (value_type,) = definition["differential"]["element"][3]["type"]
            assert "value" + value_type["code"][0].upper() + value_type["code"][1:] in ext


def test_an_unresolved_extension_url_is_reported() -> None:
    resource = {
        "resourceType": "Observation",
        "extension": [
            {"url": "urn:mmu:fhir:flags", "valueString": "alert"},
            {
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "unknown",
            },
        ],
    }
    assert conformance.unresolved_extensions(resource, set(conformance.shipped_profiles())) == [
        "urn:mmu:fhir:flags"
    ]
