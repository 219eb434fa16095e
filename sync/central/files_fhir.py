"""FHIR R4 resources for the files central received, pure: DocumentReference for documents
and ECG files, Media for images and clips, ImagingStudy for DICOM (one per study, rebuilt
from every instance central holds, so a replay changes nothing).

Ids are deterministic (uuid5 of unit, file or study): replays never make a second resource."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from typing import Any

from sync.fhir import ENCOUNTER_SYSTEM, EXT_FILE, EXT_SHA256
from sync.files.protocol import FileInit

NS = uuid.UUID("8a4f0a56-54c1-4d1e-9a42-6b7f0c9d2e31")
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ECG_LOINC = ("11524-6", "EKG study")


def resource_id(*parts: str) -> str:
    return str(uuid.uuid5(NS, "\x1f".join(parts)))


def file_url(sha256: str) -> str:
    return f"urn:mmu:file:sha256:{sha256}"


def _attachment(init: FileInit) -> dict[str, Any]:
    return {
        "contentType": init.media_type,
        "url": file_url(init.sha256),
        "size": init.size,
        # FHIR's hash is SHA-1; the sha256 is the url (and the extension below).
        "creation": init.received_at,
        "extension": [
            {
                "url": EXT_SHA256,
                "valueBase64Binary": base64.b64encode(bytes.fromhex(init.sha256)).decode(),
            }
        ],
    }


def _context(init: FileInit) -> dict[str, Any]:
    """The patient by identifier (the one the unit's readings carry: sync/fhir.py)."""
    out: dict[str, Any] = {}
    if init.patient_system and init.patient_value:
        out["subject"] = {
            "type": "Patient",
            "identifier": {"system": init.patient_system, "value": init.patient_value},
        }
    return out


def _encounter(init: FileInit) -> dict[str, Any] | None:
    if not init.encounter_id:
        return None
    return {
        "type": "Encounter",
        "identifier": {"system": ENCOUNTER_SYSTEM, "value": init.encounter_id},
    }


def _device(unit: str, init: FileInit) -> dict[str, Any]:
    return {"display": f"{unit}/{init.device}" if init.device else unit}


def resource_type(init: FileInit) -> str:
    if init.study_uid and init.media_type == "application/dicom":
        return "ImagingStudy"
    if init.kind in ("image", "video") or init.media_type.startswith(("image/", "video/")):
        return "Media"
    return "DocumentReference"


def document_reference(unit: str, init: FileInit) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": resource_id(unit, init.file_id),
        "status": "current",
        "date": init.received_at,
        **_context(init),
        "content": [{"attachment": _attachment(init)}],
        "author": [_device(unit, init)],
    }
    if init.kind == "ecg":
        body["type"] = {
            "coding": [
                {"system": "http://loinc.org", "code": ECG_LOINC[0], "display": ECG_LOINC[1]}
            ]
        }
    else:
        body["type"] = {"text": init.kind}
    encounter = _encounter(init)
    if encounter:
        body["context"] = {"encounter": [encounter]}
    return body


def media(unit: str, init: FileInit) -> dict[str, Any]:
    code = "video" if init.kind == "video" or init.media_type.startswith("video/") else "image"
    body: dict[str, Any] = {
        "resourceType": "Media",
        "id": resource_id(unit, init.file_id),
        "status": "completed",
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/media-type", "code": code}]
        },
        **_context(init),
        "issued": init.received_at,
        "device": _device(unit, init),
        "content": _attachment(init),
    }
    encounter = _encounter(init)
    if encounter:
        body["encounter"] = encounter
    return body


def imaging_study(unit: str, instances: Sequence[FileInit]) -> dict[str, Any]:
    """One ImagingStudy from every instance central holds of that study (same study UID)."""
    first = instances[0]
    assert first.study_uid is not None
    series: dict[str, dict[str, Any]] = {}
    for inst in sorted(instances, key=lambda i: (i.series_uid or "", i.instance_uid or "")):
        entry = series.setdefault(
            inst.series_uid or "",
            {
                "uid": inst.series_uid or "",
                "modality": {"system": DCM, "code": inst.modality or "OT"},
                "instance": [],
            },
        )
        entry["instance"].append(
            {
                "uid": inst.instance_uid or "",
                "sopClass": {
                    "system": "urn:ietf:rfc:3986",
                    "code": f"urn:oid:{inst.sop_class_uid or ''}",
                },
                "extension": [{"url": EXT_FILE, "valueUrl": file_url(inst.sha256)}],
            }
        )
    body: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": resource_id(unit, "study", first.study_uid),
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{first.study_uid}"}],
        **_context(first),
        "modality": [
            {"system": DCM, "code": m} for m in sorted({i.modality or "OT" for i in instances})
        ],
        "started": min(i.received_at for i in instances),
        "numberOfSeries": len(series),
        "numberOfInstances": sum(len(s["instance"]) for s in series.values()),
        "series": list(series.values()),
    }
    encounter = _encounter(first)
    if encounter:
        body["encounter"] = encounter
    return body
