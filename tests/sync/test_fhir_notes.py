"""NTE comments and OBX-7 reference ranges reach central (issue 20), through real parts: an
HL7 monitor's ORU through the MLLP decoder and the runtime into a real SQLite store, then the
outbox and the codec. They travel as ``Observation.note`` and ``Observation.referenceRange``,
validated with the fhir.resources R4B models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation

from drivers.protocols.mllp import MllpDecoder, frame
from drivers.runtime import dispatch
from edge_agent.service.supervisor import Supervisor
from edge_agent.settings import Settings, UnitSettings
from edge_agent.store.writer import Store
from sync import codec, fhir_notes, outbox
from tests.sync.test_fhir import check_bundle

UNIT = "mmu-20"
ORU = (
    "MSH|^~\\&|MON|VAN-1|EDGE||20261123100130+0100||ORU^R01|N1|P|2.6",
    "OBR|1|||X|||20261123100130+0100",
    "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||91|262688^MDC_DIM_PERCENT^MDC|94-100|L|||F",
    "NTE|1||probe moved\\R\\replaced~patient cold",
    "NTE|2||repeat in 5 min",
    "OBX|2|NM|8480-6^Systolic^LN||128|mm[Hg]^^UCUM|<130||||F",
    "OBX|3|NM|8462-4^Diastolic^LN||84|mm[Hg]^^UCUM|<85||||F",
    "OBX|4|NM|2345-7^Glucose^LN||5.4|mmol/L^^UCUM|normal||||F",
)


async def bundle_of(tmp_path: Path) -> dict[str, Any]:
    with Store(tmp_path / "unit.db", UNIT) as store:
        sink = Supervisor(Settings(unit=UnitSettings(id=UNIT)), store, sync=False).sink
        decoder = MllpDecoder(clock=lambda: "20261123100200+0100")
        data = frame("".join(s + "\r" for s in ORU).encode())
        await dispatch("monitor", decoder.receive_data(data), sink, decoder)
        assert decoder.data_to_send()  # acknowledged after the commit
        rows = store.read(lambda db: outbox.next_batch(db, 500))
        payload = codec.encode_batch(
            UNIT, "b1", rows, "2026-11-23T09:05:00.000Z", epoch=store.epoch
        )
    bundle: dict[str, Any] = json.loads(codec._inflate(payload))
    check_bundle(bundle)
    return bundle


async def test_comments_and_reference_ranges_reach_the_observations(tmp_path: Path) -> None:
    bundle = await bundle_of(tmp_path)
    spo2, bp, glucose = [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    ]
    for obs in (spo2, bp, glucose):
        Observation.model_validate(obs)
    assert spo2["note"] == [
        {"text": "probe moved~replaced patient cold"},
        {"text": "repeat in 5 min"},
    ]
    percent = {"unit": "%", "system": fhir_notes.UCUM, "code": "%"}
    assert spo2["referenceRange"] == [
        {"low": {"value": 94, **percent}, "high": {"value": 100, **percent}, "text": "94-100"}
    ]
    mmhg = {"unit": "mm[Hg]", "system": fhir_notes.UCUM, "code": "mm[Hg]"}
    assert [c["referenceRange"] for c in bp["component"]] == [
        [{"high": {"value": 130, **mmhg}, "text": "<130"}],
        [{"high": {"value": 85, **mmhg}, "text": "<85"}],
    ]
    assert "note" not in bp
    assert glucose["referenceRange"] == [{"text": "normal"}]  # not numbers: the text alone


@pytest.mark.parametrize(
    ("text", "unit", "flags", "expected"),
    [
        ("3.5-5.1", "mmol/L", "[]", {"low": {"value": 3.5}, "high": {"value": 5.1}}),
        ("-2 - 2", "Cel", "[]", {"low": {"value": -2}, "high": {"value": 2}}),
        (">=60", "mL/min", "[]", {"low": {"value": 60}}),
        ("\u2264 200", "mg/dL", "[]", {"high": {"value": 200}}),
        ("10-5", "g", "[]", {}),  # low above high: not a range we can read, kept as text
        ("90-100", "furlongs", '["unit-unmapped"]', {"low": {"value": 90}, "high": {"value": 100}}),
    ],
)
def test_reference_range_text_reads_as_low_and_high_when_it_can(
    text: str, unit: str, flags: str, expected: dict[str, Any]
) -> None:
    row = {"unit": unit, "flags": flags, "context": json.dumps([["reference-range", text]])}
    (found,) = fhir_notes.reference_range(row)
    assert found["text"] == text
    for side in ("low", "high"):
        if side not in expected:
            assert side not in found
            continue
        assert found[side]["value"] == expected[side]["value"]
        assert found[side]["unit"] == unit
        # a unit the device spelt its own way is not claimed as a UCUM code
        assert ("code" in found[side]) == ("unit-unmapped" not in flags)
