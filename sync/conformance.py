"""What a platform's validator checks beyond the base R4 models (pure, but for
:func:`shipped_profiles`, which reads the package's own files).

- :func:`profile_violations`: the R4 vital-signs profile's required elements on every
  Observation of category ``vital-signs``: ``status``; the ``vital-signs`` category; a LOINC
  ``code``; ``subject`` a
  Patient; ``effective[x]``; a value or a ``dataAbsentReason`` (vs-2; on each component, vs-3);
  every ``valueQuantity`` in UCUM (system and code).
- :func:`unresolved_extensions`: extension URLs that resolve to no StructureDefinition: neither
  one the project ships (``sync/fhir_profiles/*.json``) nor one of the FHIR core's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any, Final

from sync import fhir

VITAL_SIGNS: Final = "vital-signs"
CORE_EXTENSIONS: Final = "http://hl7.org/fhir/StructureDefinition/"


def shipped_profiles() -> dict[str, dict[str, Any]]:
    """The project's StructureDefinitions, by canonical URL."""
    found: dict[str, dict[str, Any]] = {}
    for item in (resources.files("sync") / "fhir_profiles").iterdir():
        if item.name.endswith(".json"):
            definition = json.loads(item.read_text(encoding="utf-8"))
            found[str(definition["url"])] = definition
    return found


def extension_urls(node: Any) -> Iterator[str]:
    """Every ``extension``/``modifierExtension`` URL in ``node``, nested ones included."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in ("extension", "modifierExtension") and isinstance(value, list):
                for ext in value:
                    if isinstance(ext, Mapping) and isinstance(ext.get("url"), str):
                        yield ext["url"]
            yield from extension_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from extension_urls(value)


def unresolved_extensions(node: Any, known: set[str]) -> list[str]:
    """The extension URLs of ``node`` no StructureDefinition defines (``known``: the shipped
    ones' URLs; the FHIR core's resolve by their base)."""
    return [
        url
        for url in extension_urls(node)
        if url not in known and not url.startswith(CORE_EXTENSIONS)
    ]


def _codes(concept: Any, system: str) -> list[str]:
    coding = concept.get("coding", []) if isinstance(concept, Mapping) else []
    return [
        str(c.get("code"))
        for c in coding
        if isinstance(c, Mapping) and c.get("system") == system and c.get("code")
    ]


def _quantity_problems(holder: Mapping[str, Any], where: str) -> list[str]:
    value = holder.get("valueQuantity")
    if value is None:
        return (
            []
            if "dataAbsentReason" in holder or any(k.startswith("value") for k in holder)
            else [f"{where}: no value, no dataAbsentReason"]
        )
    if value.get("system") != fhir.UCUM or not value.get("code"):
        return [f"{where}: valueQuantity not in UCUM"]
    return []


def is_patient(reference: Any, kinds: Mapping[str, str]) -> bool:
    """``reference`` names a Patient: ``Patient/<id>``, a fullUrl of a Patient entry
    (``kinds``: fullUrl -> resourceType), or a logical reference typed Patient."""
    if not isinstance(reference, Mapping):
        return False
    ref = reference.get("reference")
    if isinstance(ref, str):
        return ref.startswith("Patient/") or kinds.get(ref) == "Patient"
    return reference.get("type") == "Patient" and "identifier" in reference


def observation_violations(
    obs: Mapping[str, Any], kinds: Mapping[str, str], where: str = "Observation"
) -> list[str]:
    """The vital-signs profile's violations of one Observation ([] when it is not one)."""
    categories = [code for c in obs.get("category", []) for code in _codes(c, fhir.CATEGORY)]
    if VITAL_SIGNS not in categories:
        return []
    out: list[str] = []
    if not obs.get("status"):
        out.append(f"{where}: no status")
    loinc = _codes(obs.get("code"), fhir.LOINC)
    if not loinc:
        out.append(f"{where}: code has no LOINC coding")
    if not is_patient(obs.get("subject"), kinds):
        out.append(f"{where}: subject is not a Patient")
    if not any(k.startswith("effective") for k in obs):
        out.append(f"{where}: no effective[x]")
    components = obs.get("component") or []
    if not components and not obs.get("hasMember"):
        out += _quantity_problems(obs, where)
    for i, component in enumerate(components):
        if not _codes(component.get("code"), fhir.LOINC):
            out.append(f"{where}.component[{i}]: code has no LOINC coding")
        out += _quantity_problems(component, f"{where}.component[{i}]")
    return out


def profile_violations(bundle: Mapping[str, Any]) -> list[str]:
    """The vital-signs profile's violations of every Observation of a Bundle."""
    entries = [e for e in bundle.get("entry", []) if isinstance(e, Mapping)]
    kinds = {
        str(e["fullUrl"]): str(e["resource"].get("resourceType"))
        for e in entries
        if "fullUrl" in e and isinstance(e.get("resource"), Mapping)
    }
    out: list[str] = []
    for i, entry in enumerate(entries):
        resource = entry.get("resource")
        if isinstance(resource, Mapping) and resource.get("resourceType") == "Observation":
            out += observation_violations(resource, kinds, f"entry[{i}] Observation")
    return out
