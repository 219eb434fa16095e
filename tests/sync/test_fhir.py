"""The uplink Bundle is FHIR R4 that a platform accepts as it is: every Bundle the codec can
produce validates against the fhir.resources R4B models, has no empty arrays, and follows the
R4 vital-signs profile rules written here as assertions."""

from __future__ import annotations

import json
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.catalogue import catalogue
from sync import codec, conformance, fhir

EPOCH = "5f0c2b1e-8d3a-4c1b-9f2e-0a1b2c3d4e5f"
NOW = "2026-11-23T08:00:01.000Z"
ENCOUNTER = "0a9e1f7c-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
ENCOUNTER_INFO = json.dumps(
    {
        "patient_system": "urn:mmu:patient:national-id",
        "patient_value": "CANARY-AB123456",
        "opened_at": "2026-11-23T07:59:00.000Z",
        "closed_at": None,
        "practitioner_role": "nurse",
        "latitude": 33.57,
        "longitude": -7.59,
        "altitude": 50.0,
    }
)
# Profile rules (R4 vital-signs): quantity -> (profile LOINC, allowed UCUM codes).
PROFILE_UNITS = {
    "spo2": ("2708-6", {"%"}),
    "pulse_rate": ("8867-4", {"/min"}),
    "heart_rate": ("8867-4", {"/min"}),
    "respiratory_rate": ("9279-1", {"/min"}),
    "body_temperature": ("8310-5", {"Cel", "[degF]"}),
    "body_weight": ("29463-7", {"kg", "g", "[lb_av]"}),
    "body_height": ("8302-2", {"cm", "[in_i]"}),
    "bmi": ("39156-5", {"kg/m2"}),
}
STATUSES = ["F", "P", "C", "X", "R", "", "D"]


def row(seq: int, quantity: str, value: float | None = 1.0, **extra: Any) -> dict[str, Any]:
    q = catalogue()[quantity]
    base: dict[str, Any] = {
        "seq": seq,
        "id": str(uuid.uuid4()),
        "device_id": "monitor-1",
        "quantity": quantity,
        "value": value,
        "unit": q.ucum,
        "loinc": q.loinc,
        "mdc": q.mdc,
        "device_time": None,
        "received_at": "2026-11-23T08:00:00.000Z",
        "clock_source": "system",
        "flags": "[]",
        "absent_reason": None if value is not None else "error",
        "encounter_id": None,
        "context": "[]",
        "source_key": None,
        "attributed_at": None,
        "timezone": None,
        "encounter": None,
    }
    base.update(extra)
    return base


def walk(node: Any, path: str = "") -> list[str]:
    """Paths of empty arrays, objects or blank strings (invalid FHIR JSON)."""
    bad: list[str] = []
    if isinstance(node, dict):
        if not node:
            bad.append(path)
        for key, value in node.items():
            bad += walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        if not node:
            bad.append(path)
        for i, value in enumerate(node):
            bad += walk(value, f"{path}[{i}]")
    elif isinstance(node, str) and not node.strip():  # FHIR strings have content
        bad.append(path)
    return bad


def check_bundle(bundle: dict[str, Any]) -> None:
    """The Bundle validates (R4B models), has no empty values, follows the profile rules."""
    Bundle.model_validate(bundle)
    assert walk(bundle) == []
    # What a platform's validator checks beyond the models: the vital-signs profile, and a
    # StructureDefinition for every extension URL.
    assert conformance.profile_violations(bundle) == []
    assert conformance.unresolved_extensions(bundle, set(conformance.shipped_profiles())) == []
    assert bundle["type"] == "transaction" and bundle["timestamp"]
    assert bundle["identifier"]["system"] == "urn:ietf:rfc:3986"
    full_urls = [e["fullUrl"] for e in bundle["entry"] if "fullUrl" in e]
    assert len(full_urls) == len(set(full_urls))
    assert all(u.startswith("urn:uuid:") for u in full_urls)
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        if request["method"] == "POST":
            assert request["url"] == resource["resourceType"]
            assert request["ifNoneExist"].startswith("identifier=")
            system, _, value = request["ifNoneExist"].removeprefix("identifier=").partition("|")
            assert {"system": system, "value": value} in resource["identifier"]
        else:
            assert request["method"] == "PUT" and "?identifier=" in request["url"]
            assert "fullUrl" in entry
        for ident in resource.get("identifier", []):
            assert ident["value"] and (ident.get("system") or ident.get("type"))
        if resource["resourceType"] == "Observation":
            check_observation(resource, full_urls)
        if resource["resourceType"] == "Device":
            check_device(resource, request)


def check_device(device: dict[str, Any], request: dict[str, Any]) -> None:
    """The unit's identifier first (central's key, the conditional update's), then only what
    the device said, each identifier with its system (or the serial number's type)."""
    first = device["identifier"][0]
    assert first["system"].startswith(fhir.DEVICE_SYSTEM + ":")
    assert request == {
        "method": "PUT",
        "url": f"Device?identifier={first['system']}|{first['value']}",
    }
    systems = [i.get("system") for i in device["identifier"][1:]]
    assert len(systems) == len(set(systems))
    for ident in device["identifier"][1:]:
        if "system" not in ident:
            assert ident["type"]["coding"] == [{"system": fhir.ID_TYPE, "code": "SNO"}]
        else:
            assert ident["system"] in (fhir.EUI64_SYSTEM, fhir.BLUETOOTH_SYSTEM)


def check_observation(obs: dict[str, Any], full_urls: list[str]) -> None:
    assert obs["category"][0]["coding"][0]["system"] == fhir.CATEGORY
    assert obs["code"].get("coding") or obs["code"].get("text")
    assert "T" in obs["effectiveDateTime"] and fhir.has_zone(obs["effectiveDateTime"])
    assert obs["subject"]["reference"] in full_urls  # a Patient, or a QC run's Device
    if "device" in obs:  # a Patient's (named or the session's unidentified one)
        assert obs["device"]["reference"] in full_urls
        assert obs["subject"]["reference"] != obs["device"]["reference"]
    else:  # a QC run: the Device is the subject, not said twice
        assert "encounter" not in obs
    assert ("valueQuantity" in obs) != ("dataAbsentReason" in obs) or "component" in obs
    if "valueQuantity" in obs:
        vq = obs["valueQuantity"]
        assert vq["system"] == fhir.UCUM and vq["code"] and vq["unit"]
    codes = [c["code"] for c in obs["code"].get("coding", []) if c["system"] == fhir.LOINC]
    if obs["category"][0]["coding"][0]["code"] != "vital-signs":
        return
    if "encounter" in obs:  # attributed: the vital-signs profile applies in full
        assert obs["subject"]["reference"] != obs["device"]["reference"]
    if "component" in obs:
        assert codes == [fhir.BP_PANEL]
        parts = [c["code"]["coding"][0]["code"] for c in obs["component"]]
        assert {"8480-6", "8462-4"} <= set(parts) and len(parts) == len(set(parts))
        for component in obs["component"]:
            if "valueQuantity" in component:
                assert component["valueQuantity"]["code"] == "mm[Hg]"
            else:
                assert component["dataAbsentReason"]
        return
    for quantity, (profile, units) in PROFILE_UNITS.items():
        if profile in codes and codes[0] == profile:
            if "valueQuantity" in obs:
                assert obs["valueQuantity"]["code"] in units, quantity
            return


observable = sorted(k for k in catalogue() if k not in fhir.POSITION)
rows_strategy = st.lists(
    st.tuples(
        st.sampled_from([*observable, "latitude", "longitude", "altitude"]),
        st.none() | st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
        st.lists(
            st.sampled_from(["alert", "implausible", "artifact", "preliminary", "clock-untrusted"]),
            unique=True,
            max_size=2,
        ),
        st.none()
        | st.sampled_from(
            [
                "2026-11-23T08:00:00",
                "2026-11-23T08:00:00+01:00",
                "2026-11-23T08:00:00Z",
                "not a time",
            ]
        ),
        st.sampled_from(STATUSES),
        st.booleans(),  # in the encounter
        st.booleans(),  # attributed later (a conditional update)
        st.sampled_from(["system", "gps", "untrusted"]),
    ),
    min_size=1,
    max_size=25,
)


# What a device may have told us: every fact absent, present, empty or blank (the outbox's
# device_facts JSON; NULL when nothing is known).
FACT_TEXT = st.none() | st.sampled_from(["", "  ", "A&D Medical ", "UA-651BLE", "r2.1"])
facts_strategy = st.none() | st.fixed_dictionaries(
    {
        "serial": FACT_TEXT,
        "system_id": st.none() | st.just("74-E8-FF-FE-FF-05-1C-00"),
        "mac": st.none() | st.just("00-1C-05-FF-E8-74"),
        "manufacturer": FACT_TEXT,
        "model": FACT_TEXT,
        "firmware": FACT_TEXT,
        "mdc_type": st.none() | st.sampled_from([528388, 528391, 528401]),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    rows_strategy,
    st.sampled_from([None, "Africa/Casablanca", "UTC", "Nowhere/Else"]),
    st.lists(facts_strategy, min_size=2, max_size=2),
    st.sampled_from([None, "0", "90", "-3600.5", "junk", "1e300"]),
)
def test_any_rows_encode_to_a_bundle_that_validates(
    specs: list[Any], tz: str | None, facts: list[dict[str, Any] | None], offset: str | None
) -> None:
    rows = []
    for i, (quantity, value, flags, device_time, status, attributed, amended, clock) in enumerate(
        specs
    ):
        context = [["result-status", status]] if status else []
        if offset is not None:
            context.append([fhir.CONTEXT_CLOCK_OFFSET, offset])
        rows.append(
            row(
                i + 1,
                quantity,
                value,
                flags=json.dumps(flags),
                device_time=device_time,
                device_id=f"dev-{i % 2}",
                device_facts=json.dumps(facts[i % 2]),
                context=json.dumps(context),
                encounter_id=ENCOUNTER if attributed else None,
                encounter=ENCOUNTER_INFO if attributed else None,
                attributed_at="2026-11-23T08:05:00.000Z" if amended and attributed else None,
                source_key=f'hl7:["MON","ICU","20261123","MSG{i}",1,{i}]' if i % 3 == 0 else None,
                clock_source=clock,
                timezone=tz,
            )
        )
    bundle = fhir.bundle("mmu-01", EPOCH, str(uuid.uuid4()), rows, "2026-11-23T08:00:01.000Z")
    check_bundle(bundle)
    batch = codec.decode_batch(codec.encode_batch("mmu-01", "b", rows, "t", epoch=EPOCH))
    assert sorted((r.id, r.seq) for r in batch.readings) == sorted(
        (r["id"], r["seq"]) for r in rows
    )


def test_spo2_carries_both_loinc_codes_and_the_vital_signs_category() -> None:
    entry = fhir.bundle("u", EPOCH, "b", [row(1, "spo2", 97.0)], NOW)["entry"][-1]
    obs = entry["resource"]
    # The profile's LOINC first; no MDC beside it (the LOINC says it exactly).
    assert [c["code"] for c in obs["code"]["coding"]] == ["2708-6", "59408-5"]
    assert obs["category"][0]["coding"][0]["code"] == "vital-signs"


def test_one_blood_pressure_measurement_is_one_panel_observation() -> None:
    rows = [
        row(1, "systolic_bp", 128.0),
        row(2, "diastolic_bp", 84.0),
        row(3, "mean_arterial_pressure", 99.0),
        row(4, "pulse_rate", 71.0),
        row(5, "systolic_bp", 131.0, received_at="2026-11-23T08:05:00.000Z"),
        row(6, "diastolic_bp", 86.0, received_at="2026-11-23T08:05:00.000Z"),
    ]
    bundle = fhir.bundle("u", EPOCH, "b", rows, NOW)
    check_bundle(bundle)
    observations = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    panels = [o for o in observations if o["code"]["coding"][0]["code"] == "85354-9"]
    assert len(observations) == 3 and len(panels) == 2
    values = [[c["valueQuantity"]["value"] for c in p["component"]] for p in panels]
    assert values == [[128.0, 84.0, 99.0], [131.0, 86.0]]
    assert "valueQuantity" not in panels[0]
    batch = codec.decode_batch(codec.encode_batch("u", "b", rows, "t", epoch=EPOCH))
    assert [r.seq for r in batch.readings] == [1, 2, 3, 4, 5, 6]


def test_lab_results_have_the_laboratory_category_and_the_loinc_of_their_unit() -> None:
    mass = fhir.bundle("u", EPOCH, "b", [row(1, "glucose", 110.0)], NOW)["entry"][-1]
    molar = fhir.bundle("u", EPOCH, "b", [row(1, "glucose", 6.1, unit="mmol/L")], NOW)
    obs = molar["entry"][-1]["resource"]
    assert obs["category"][0]["coding"][0]["code"] == "laboratory"
    assert mass["resource"]["code"]["coding"][0]["code"] == "41653-7"
    assert obs["code"]["coding"][0]["code"] == "14743-9"  # moles/volume, capillary


def test_device_status_and_absent_values_are_told() -> None:
    rows = [
        row(1, "glucose", 5.0, context='[["result-status","P"]]'),
        row(2, "glucose", 5.2, context='[["result-status","C"]]'),
        row(3, "glucose", None, context='[["result-status","X"]]', absent_reason="error"),
        row(4, "glucose", 5.4),
    ]
    bundle = fhir.bundle("u", EPOCH, "b", rows, NOW)
    check_bundle(bundle)
    obs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert [o["status"] for o in obs] == ["preliminary", "corrected", "cancelled", "final"]
    assert obs[2]["dataAbsentReason"]["coding"][0]["code"] == "error"


def test_a_device_time_without_zone_is_read_in_the_units_zone_and_kept_raw() -> None:
    obs = [
        fhir.bundle(
            "u",
            EPOCH,
            "b",
            [row(1, "spo2", 97.0, device_time="2026-07-01T10:00:00", timezone=zone)],
            NOW,
        )["entry"][-1]["resource"]
        for zone in ("Africa/Casablanca", "UTC")
    ]
    assert obs[0]["effectiveDateTime"] == "2026-07-01T10:00:00+01:00"
    assert obs[1]["effectiveDateTime"] == "2026-07-01T10:00:00+00:00"
    assert obs[0]["issued"] == "2026-11-23T08:00:00.000Z"
    assert {"url": fhir.EXT_DEVICE_TIME, "valueString": "2026-07-01T10:00:00"} in (
        obs[0]["extension"]
    )


def test_gps_fixes_are_locations_not_observations() -> None:
    rows = [
        row(1, "latitude", 33.57),
        row(2, "longitude", -7.59),
        row(3, "altitude", 50.0),
        row(4, "spo2", 97.0),
    ]
    bundle = fhir.bundle("u", EPOCH, "b", rows, NOW)
    check_bundle(bundle)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds.count("Location") == 1 and kinds.count("Observation") == 1
    fix = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Location"
    )
    assert fix["position"] == {"latitude": 33.57, "longitude": -7.59, "altitude": 50.0}
    times = [e for e in fix["extension"] if e["url"] == fhir.EXT_DEVICE_TIME]
    assert times == [{"url": fhir.EXT_DEVICE_TIME, "valueString": "2026-11-23T08:00:00.000Z"}]
    assert "geolocation" not in json.dumps(bundle)


def test_an_attributed_reading_has_patient_encounter_and_location() -> None:
    rows = [
        row(1, "spo2", 97.0, encounter_id=ENCOUNTER, encounter=ENCOUNTER_INFO),
        row(2, "pulse_rate", 70.0),
    ]
    bundle = fhir.bundle("u", EPOCH, "b", rows, NOW)
    check_bundle(bundle)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry)
    patient, unidentified = by_type["Patient"]
    encounter = by_type["Encounter"][0]
    attributed, alone = (e["resource"] for e in by_type["Observation"])
    assert attributed["subject"]["reference"] == patient["fullUrl"]
    assert attributed["encounter"]["reference"] == encounter["fullUrl"]
    assert (
        encounter["resource"]["location"][0]["location"]["reference"]
        == (by_type["Location"][0]["fullUrl"])
    )
    # No patient open: the session's unidentified Patient, no person invented.
    assert alone["subject"]["reference"] == unidentified["fullUrl"]
    assert unidentified["resource"] == {
        "resourceType": "Patient",
        "identifier": [{"system": f"{fhir.UNIDENTIFIED_SYSTEM}:u", "value": "2026-11-23"}],
        "name": [{"use": "anonymous", "text": "unidentified"}],
    }
    assert alone["device"]["reference"] == by_type["Device"][0]["fullUrl"]
    assert "encounter" not in alone


def test_unattributed_readings_get_one_unidentified_patient_per_unit_and_local_day() -> None:
    """The session of readings taken with no patient open is the unit's local day: two
    readings either side of local midnight (Casablanca, UTC+1) are two sessions; a QC run is
    nobody's (its Device is its subject)."""
    rows = [
        row(1, "spo2", 97.0, received_at="2026-11-23T22:30:00.000Z"),
        row(2, "spo2", 96.0, received_at="2026-11-23T23:30:00.000Z"),
        row(3, "pulse_rate", 70.0, received_at="2026-11-23T23:40:00.000Z"),
        row(4, "glucose", 5.5, flags='["control"]'),
    ]
    bundle = fhir.bundle("u", EPOCH, "b", rows, NOW)
    check_bundle(bundle)
    entries = {e.get("fullUrl"): e["resource"] for e in bundle["entry"]}
    obs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    days = [entries[o["subject"]["reference"]]["identifier"][0]["value"] for o in obs[:3]]
    assert days == ["2026-11-23", "2026-11-24", "2026-11-24"]
    assert entries[obs[3]["subject"]["reference"]]["resourceType"] == "Device"
    assert "device" not in obs[3]


def test_the_documented_recipe_decodes_a_payload_without_the_project() -> None:
    """What a platform that is not ours runs: the dictionary bytes, zlib, json."""
    payload = codec.encode_batch(
        "mmu-01", str(uuid.uuid4()), [row(1, "spo2", 97.0)], NOW, epoch=EPOCH
    )
    zdict = codec.ZDICT_V3  # the dictionary bytes (docs/wire-format.md)
    # -- the snippet in docs/wire-format.md --
    inflater = zlib.decompressobj(zdict=zdict)
    bundle = json.loads(inflater.decompress(payload) + inflater.flush())
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    # -- end --
    assert int.from_bytes(payload[2:6], "big") == zlib.adler32(zdict)
    assert dict(codec.WIRE_PROPERTIES)["zlib-dictionary"] == codec.ZDICT_V3_NAME
    check_bundle(bundle)


def test_a_full_batch_stays_within_the_wire_budget() -> None:
    """<= 40 B a reading at a full batch of the default size (the bench's four vital signs,
    from a device that told us every fact)."""
    from edge_agent.settings import SyncSettings

    full = SyncSettings().batch_size
    quantities = [
        ("spo2", 97.0, 1.5),
        ("pulse_rate", 72.0, 8.0),
        ("body_temperature", 36.8, 0.3),
        ("systolic_bp", 120.0, 10.0),
    ]
    import random

    rng = random.Random(1)
    rows = [
        row(
            i + 1,
            quantities[i % 4][0],
            round(quantities[i % 4][1] + rng.uniform(-1, 1) * quantities[i % 4][2], 1),
            device_id="dev-0",
            received_at="2026-11-23T08:00:00.123Z",
            device_facts=json.dumps(FULL_FACTS),
        )
        for i in range(full)
    ]
    size = len(
        codec.encode_batch(
            "mmu-01", str(uuid.uuid4()), rows, "2026-11-23T08:00:00.000Z", epoch=EPOCH
        )
    )
    assert size / full <= 40, size / full


def device_of(bundle: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Device"
    ]
    assert len(found) == 1
    return found[0]


FULL_FACTS = {
    "serial": "501900083",
    "system_id": "74-E8-FF-FE-FF-05-1C-00",
    "mac": "00-1C-05-FF-E8-74",
    "manufacturer": "Nonin Medical, Inc.",
    "model": "Model 3230",
    "firmware": "r2.1",
    "mdc_type": 528388,
}


def test_the_device_carries_what_it_told_us_with_the_units_identifier_first() -> None:
    bundle = fhir.bundle(
        "mmu-01",
        EPOCH,
        "b",
        [row(1, "spo2", 97.0, device_id="ox", device_facts=json.dumps(FULL_FACTS))],
        NOW,
    )
    check_bundle(bundle)
    dev = device_of(bundle)
    assert dev["identifier"] == [
        {"system": "urn:mmu:device:mmu-01", "value": "ox"},
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SNO"}
                ]
            },
            "value": "501900083",
        },
        {
            "system": "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680",
            "value": "74-E8-FF-FE-FF-05-1C-00",
        },
        {"system": "http://hl7.org/fhir/sid/eui-48/bluetooth", "value": "00-1C-05-FF-E8-74"},
    ]
    assert (dev["manufacturer"], dev["modelNumber"], dev["serialNumber"]) == (
        "Nonin Medical, Inc.",
        "Model 3230",
        "501900083",
    )
    assert dev["type"] == {"coding": [{"system": fhir.MDC, "code": "528388"}]}
    assert dev["version"] == [
        {"type": {"coding": [{"system": fhir.MDC, "code": "531976"}]}, "value": "r2.1"}
    ]


def test_a_device_that_told_nothing_has_only_the_units_identifier() -> None:
    blank = {
        "serial": "",
        "system_id": None,
        "mac": None,
        "manufacturer": "  ",
        "model": None,
        "firmware": "",
        "mdc_type": None,
    }
    for facts in (None, blank):
        bundle = fhir.bundle(
            "mmu-01",
            EPOCH,
            "b",
            [row(1, "spo2", 97.0, device_id="ox", device_facts=json.dumps(facts))],
            NOW,
        )
        check_bundle(bundle)
        assert device_of(bundle) == {
            "resourceType": "Device",
            "identifier": [{"system": "urn:mmu:device:mmu-01", "value": "ox"}],
            "deviceName": [{"name": "ox", "type": "user-friendly-name"}],
        }


local_times = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30))
offsets = st.floats(-86400 * 30, 86400 * 30, allow_nan=False).map(lambda x: round(x, 3))


@given(
    local_times,
    offsets,
    st.sampled_from(["Africa/Casablanca", "UTC", "Europe/Paris"]),
    st.booleans(),
)
def test_a_known_clock_offset_is_subtracted_from_the_device_time(
    when: datetime, offset: float, tz: str, zoned: bool
) -> None:
    """The instant is the device's reading of its clock minus how far that clock is ahead;
    without an offset the time is the device's (read in the unit's zone when it has none)."""
    zone = fhir.zone(tz)
    raw = when.replace(tzinfo=UTC).isoformat() if zoned else when.isoformat()
    base = when.replace(tzinfo=UTC) if zoned else when.replace(tzinfo=zone)
    stamp, used = fhir.effective(raw, NOW, zone, offset)
    assert used and fhir.has_zone(stamp)
    got = datetime.fromisoformat(stamp)
    assert got == base - timedelta(seconds=offset)
    if not offset:
        assert fhir.effective(raw, NOW, zone) == (stamp, True)


def test_the_raw_device_time_is_kept_when_an_offset_corrected_it() -> None:
    context = json.dumps([[fhir.CONTEXT_CLOCK_OFFSET, "90"]])
    obs = fhir.bundle(
        "u",
        EPOCH,
        "b",
        [row(1, "spo2", 97.0, context=context, device_time="2026-11-23T08:01:30Z")],
        NOW,
    )["entry"][-1]["resource"]
    assert obs["effectiveDateTime"] == "2026-11-23T08:00:00+00:00"
    assert {"url": fhir.EXT_DEVICE_TIME, "valueString": "2026-11-23T08:01:30Z"} in (
        obs["extension"]
    )
