"""Issue 8 end to end, through real parts: an HL7 monitor's ORU through the MLLP decoder and the
runtime's dispatch into the agent's sink and SQLite store, then the outbox and the codec. The
FHIR Device carries what the monitor said about itself (and what the configuration says); a
device time is corrected for the device's known clock offset, recorded with the reading at
ingest so a later configuration change does not rewrite it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from drivers.protocols.mllp import MllpDecoder, frame
from drivers.runtime import dispatch
from edge_agent.service.supervisor import Supervisor
from edge_agent.settings import DeviceSettings, Settings, UnitSettings
from edge_agent.store import device_facts
from edge_agent.store.writer import Store
from sync import codec, fhir, outbox
from tests.sync.test_fhir import check_bundle

UNIT = "mmu-08"
# The monitor's clock is 90 s ahead; it sends times without a zone (Casablanca: UTC+1).
ORU = (
    "MSH|^~\\&|AcmeMon^0012345678ABCDEF^EUI-64|VAN-1|EDGE||20261123100130||ORU^R01|C7|P|2.6",
    "OBR|1|||X|||20261123100130",
    "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|262688^MDC_DIM_PERCENT^MDC|||||F|||"
    "20261123100130||||0012345678ABCDEF^EUI-64",
)


def bundle_of(store: Store) -> dict[str, Any]:
    rows = store.read(lambda db: outbox.next_batch(db, 500))
    payload = codec.encode_batch(UNIT, "b1", rows, "2026-11-23T09:05:00.000Z", epoch=store.epoch)
    bundle: dict[str, Any] = json.loads(codec._inflate(payload))
    check_bundle(bundle)
    return bundle


async def test_facts_and_clock_offset_from_a_monitor_reach_the_bundle(tmp_path: Path) -> None:
    settings = Settings(
        unit=UnitSettings(id=UNIT),
        devices=[
            DeviceSettings(
                id="monitor",
                kind="hl7-mllp",
                listen="127.0.0.1:2575",
                clock_offset=timedelta(seconds=90),
            )
        ],
    )
    with Store(tmp_path / "unit.db", UNIT) as store:
        sink = Supervisor(settings, store, sync=False).sink
        decoder = MllpDecoder(clock=lambda: "20261123100200+0100")
        data = frame("".join(s + "\r" for s in ORU).encode())
        await dispatch("monitor", decoder.receive_data(data), sink, decoder)
        assert decoder.data_to_send()  # acknowledged after the commit
        store.call(lambda db: None)  # the facts' background write is behind us
        # The technician changes the offset later: what was taken keeps the old one.
        sink.clock_offsets["monitor"] = 3600.0
        bundle = bundle_of(store)
        kept = store.read(lambda db: device_facts.load(db, "monitor"))
    obs = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    assert obs["effectiveDateTime"] == "2026-11-23T10:00:00+01:00"  # 10:01:30 minus 90 s
    assert {"url": fhir.EXT_DEVICE_TIME, "valueString": "2026-11-23T10:01:30"} in (obs["extension"])
    device = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Device"
    )
    assert device["identifier"] == [
        {"system": f"urn:mmu:device:{UNIT}", "value": "monitor"},
        {"system": fhir.EUI64_SYSTEM, "value": "00-12-34-56-78-AB-CD-EF"},
    ]
    assert device["modelNumber"] == "AcmeMon"
    assert "type" not in device  # a generic HL7 monitor: no PHD specialization fits
    assert kept is not None and kept["model"] == "AcmeMon"


async def test_configured_facts_of_a_ble_device_are_sent_before_it_says_anything(
    tmp_path: Path,
) -> None:
    settings = Settings(
        unit=UnitSettings(id=UNIT),
        devices=[DeviceSettings(id="cuff", kind="ble-blood-pressure", address="c0:ff:ee:00:00:01")],
    )
    with Store(tmp_path / "unit.db", UNIT) as store:
        Supervisor(settings, store, sync=False)
        from edge_agent.models import measurement

        store.append(
            "cuff", [measurement("systolic_bp", 120.0), measurement("diastolic_bp", 80.0)]
        ).result()
        bundle = bundle_of(store)
    device = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Device"
    )
    assert device["identifier"][1:] == [
        {"system": fhir.BLUETOOTH_SYSTEM, "value": "C0-FF-EE-00-00-01"}
    ]
    assert device["type"] == {"coding": [{"system": fhir.MDC, "code": "528391"}]}
