"""Point-of-care lab quantities: the catalogue's codes, site code maps (ASTM test map, HL7 code
map) that define quantities the catalogue lacks, quality-control results, result status."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import Rejected
from drivers.decode import decode as run_decode
from drivers.options import astm_files, hl7_files
from drivers.protocols import hl7v2
from drivers.protocols.astm import AstmDecoder, load_test_map
from drivers.protocols.hl7v2 import parse_message
from drivers.protocols.mllp import MllpDecoder, frame
from drivers.protocols.sitecodes import CodeMapError, load_code_map, loinc_ok, ucum_ok
from edge_agent.catalogue import catalogue, loinc_for, range_flags
from edge_agent.models import Measurement
from edge_agent.store.writer import Store
from tests.drivers.streams import play
from tests.drivers.test_astm import event_json, load_turns

ROOT = Path(__file__).resolve().parents[2]
CAPTURES = ROOT / "tests" / "captures"
POC = CAPTURES / "astm" / "poc-lab-qc-spec.hex"
POC_MAP = CAPTURES / "astm" / "poc-lab-test-map.json"
HL7_MAP = ROOT / "config" / "devices" / "hl7-code-map.example.json"
ASTM_MAP = ROOT / "config" / "devices" / "astm-test-map.example.json"
POTASSIUM: dict[str, Any] = {
    "quantity": "potassium",
    "loinc": "2823-3",
    "ucum": "mmol/L",
    "names": {"en": "Potassium", "fr": "Potassium", "ar": "البوتاسيوم"},
    "plausible": [1, 10],
    "alert": [3.0, 6.0],
}


def poc_decoder() -> AstmDecoder:
    return AstmDecoder(load_test_map(json.loads(POC_MAP.read_text(encoding="utf-8"))))


def readings(events: list[Any]) -> list[Measurement]:
    return [e for e in events if isinstance(e, Measurement)]


# -- the catalogue ----------------------------------------------------------------------------


def test_every_catalogue_loinc_has_a_good_check_digit_and_every_unit_is_ucum() -> None:
    for key, q in catalogue().items():
        for code in (q.loinc, *q.loinc_by.values()):
            assert code is None or loinc_ok(code), (key, code)
        for unit in (q.ucum, *q.convert, *(k.split(" ")[-1] for k in q.loinc_by)):
            assert ucum_ok(unit), (key, unit)
        assert set(q.names) == {"en", "fr", "ar"} and all(q.names.values()), key


@pytest.mark.parametrize(
    ("key", "unit", "sample", "loinc"),
    [
        ("cholesterol", "mg/dL", None, "2093-3"),
        ("cholesterol", "mmol/L", None, "14647-2"),
        ("hdl_cholesterol", "mmol/L", None, "14646-4"),
        ("triglycerides", "mmol/L", None, "14927-8"),
        ("ldl_cholesterol", "mmol/L", None, "39469-2"),
        ("hba1c", "%", None, "4548-4"),
        ("hba1c", "mmol/mol", None, "59261-8"),
        ("hemoglobin", "g/L", None, "718-7"),
        ("hemoglobin", "mmol/L", None, "59260-0"),
        ("creatinine", "umol/L", None, "14682-9"),
        ("glucose", "mg/dL", "capillary-whole-blood", "41653-7"),
        ("glucose", "mmol/L", "capillary-whole-blood", "14743-9"),
        ("glucose", "mg/dL", "venous-whole-blood", "41652-9"),
        ("glucose", "mmol/L", "venous-plasma", "14749-6"),
        ("glucose", "mg/dL", "interstitial-fluid", "99504-3"),
        ("glucose", "mmol/L", "interstitial-fluid", "105272-9"),
    ],
)
def test_loinc_follows_the_property_and_the_sample(
    key: str, unit: str, sample: str | None, loinc: str
) -> None:
    assert loinc_for(key, unit, sample) == loinc


@pytest.mark.parametrize(
    ("key", "value", "unit", "flags"),
    [
        ("hba1c", 53, "mmol/mol", ()),  # 7.0 % NGSP
        ("hba1c", 86, "mmol/mol", ("alert",)),  # 10.0 %
        ("cholesterol", 5.2, "mmol/L", ()),  # not read as glucose (18 mg/dL per mmol/L)
        ("hemoglobin", 60, "g/L", ("alert",)),  # 6 g/dL
        ("creatinine", 5000, "umol/L", ("implausible",)),
        ("triglycerides", 15, "mmol/L", ("alert",)),  # 1329 mg/dL
        ("inr", 5.1, "{INR}", ("alert",)),
    ],
)
def test_range_checks_convert_with_the_quantitys_own_factors(
    key: str, value: float, unit: str, flags: tuple[str, ...]
) -> None:
    assert range_flags(key, value, unit) == flags


def test_a_control_reading_never_alerts_but_is_still_checked_for_plausibility() -> None:
    assert range_flags("glucose", 30.0, "mg/dL") == ("alert",)
    assert range_flags("glucose", 30.0, "mg/dL", control=True) == ()
    assert range_flags("glucose", 5.0, "mg/dL", control=True) == ("implausible",)


# -- site code maps ---------------------------------------------------------------------------


def test_loinc_check_digit() -> None:
    assert all(loinc_ok(c) for c in ("2093-3", "718-7", "59261-8", "2823-3", "104816-4"))
    assert not any(loinc_ok(c) for c in ("2093-4", "2093", "20933", "x-3", "12345678-9", ""))


@pytest.mark.parametrize(
    "unit",
    [
        "mmol/L",
        "mg/dL",
        "g/L",
        "umol/L",
        "%",
        "{INR}",
        "U/L",
        "[IU]/L",
        "mmol/mol",
        "10*3/uL",
        "/min",
        "mm[Hg]",
        "kg/m2",
    ],
)
def test_ucum_units_accepted(unit: str) -> None:
    assert ucum_ok(unit)


@pytest.mark.parametrize(
    "unit", ["", "mg/dl ", "mmol/LL", "mg/dLx", "milligrams", "mg per dL", "g//L", "MG/DL"]
)
def test_non_ucum_units_refused(unit: str) -> None:
    assert not ucum_ok(unit)


def test_a_site_map_defines_a_quantity_the_catalogue_lacks() -> None:
    mapping = load_code_map({"K": POTASSIUM, "K2": POTASSIUM})["K"]
    assert mapping.quantity == "potassium" and "potassium" not in catalogue()
    assert mapping.site is not None and mapping.site.ucum == "mmol/L"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"quantity": "potasium"}, "unknown quantity 'potasium'"),
        ({"quantity": "glucoze"}, "did you mean 'glucose'"),
        ({**POTASSIUM, "loinc": "2823-4"}, "not a LOINC code"),
        ({**POTASSIUM, "ucum": "mEq per litre"}, "not a UCUM unit"),
        ({**POTASSIUM, "names": {"fr": "Potassium"}}, "names must give en"),
        ({**POTASSIUM, "names": {"en": "K", "de": "Kalium"}}, "names must give en"),
        ({**POTASSIUM, "alert": [6, 3]}, "alert must be"),
        ({**POTASSIUM, "quantity": "glucose"}, "catalogue quantity; remove"),
        ({**POTASSIUM, "quantity": "Potassium"}, "lower-case key"),
        ({**POTASSIUM, "colour": "red"}, "unknown keys"),
        ({"quantity": "glucose", "sample": "urine"}, "sample 'urine' is not one of"),
        ({"quantity": "glucose", "loinc": "2345-8"}, "not a LOINC code"),
    ],
)
def test_a_bad_site_entry_is_refused_naming_the_code(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(CodeMapError, match="'X1'") as info:
        load_code_map({"X1": entry})
    assert problem in str(info.value)


def test_one_site_quantity_defined_two_ways_is_refused() -> None:
    other = {**POTASSIUM, "alert": [3.5, 5.5]}
    with pytest.raises(CodeMapError, match="defined twice"):
        load_code_map({"K": POTASSIUM, "K+": other})


@pytest.mark.parametrize(("check", "key"), [(astm_files, "test_map"), (hl7_files, "code_map")])
def test_maps_are_validated_at_config_load(tmp_path: Path, check: Any, key: str) -> None:
    bad = tmp_path / "map.json"
    bad.write_text(json.dumps({"K": {**POTASSIUM, "ucum": "mEq"}}), encoding="utf-8")
    problems = check({key: str(bad)})
    assert [p.key for p in problems] == [key] and "'K'" in problems[0].problem
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"K": POTASSIUM}), encoding="utf-8")
    assert check({key: str(good)}) == []


@pytest.mark.parametrize("path", [ASTM_MAP, HL7_MAP, POC_MAP])
def test_the_shipped_maps_load(path: Path) -> None:
    assert load_code_map(json.loads(path.read_text(encoding="utf-8")))


# -- ASTM: golden capture, QC, status ---------------------------------------------------------


def test_golden_poc_lab_and_qc_capture() -> None:
    assert POC.read_text(encoding="utf-8").startswith("# ")
    expected = json.loads(POC.with_suffix(".expected.json").read_text(encoding="utf-8"))
    events, replies = play(poc_decoder(), load_turns(POC))
    assert [event_json(e) for e in events] == expected["events"]
    assert replies.hex(" ") == expected["replies"]


@given(st.data())
def test_poc_capture_split_anywhere_gives_the_same_events(data: st.DataObject) -> None:
    turns = load_turns(POC)
    whole = play(poc_decoder(), turns)
    chunks: list[bytes] = []
    for turn in turns:
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(turn) - 1)), max_size=4)))
        edges = [0, *cuts, len(turn)]
        chunks += [turn[a:b] for a, b in itertools.pairwise(edges) if a < b]
    assert play(poc_decoder(), chunks) == whole


def test_qc_results_are_marked_control_and_carry_no_patient() -> None:
    events, _ = play(poc_decoder(), load_turns(POC))
    got = {(m.quantity, m.value): m for m in readings(events)}
    for key in (("glucose", 2.1), ("hba1c", 88.0), ("hs_crp", 9.7)):
        m = got[key]
        assert "control" in m.flags and "alert" not in m.flags
        assert "patient-id" not in dict(m.context) and "qc" in dict(m.context)
    patient = got[("glucose", 42.0)]  # same message as the QC order, a patient's result
    assert "control" not in patient.flags and dict(patient.context)["patient-id"] == "PAT-0816"
    assert patient.loinc == "2345-7"  # the map's sample: serum or plasma


def test_site_quantity_readings_carry_their_codes_names_and_site_range_flags() -> None:
    events, _ = play(poc_decoder(), load_turns(POC))
    k = next(m for m in readings(events) if m.quantity == "potassium")
    assert (k.loinc, k.unit, k.value) == ("2823-3", "mmol/L", 6.8)
    assert "alert" in k.flags  # above the site's 6.0
    context = dict(k.context)
    assert context["quantity-source"] == "site" and context["name:ar"] == "البوتاسيوم"


def test_result_status_reaches_the_measurement() -> None:
    events, _ = play(poc_decoder(), load_turns(POC))
    status = {
        m.quantity: m.status
        for m in readings(events)
        if m.quantity in ("inr", "cholesterol", "crp")
    }
    assert status == {"inr": "P", "cholesterol": "C", "crp": "F"}


def test_control_readings_are_stored_without_encounter_and_without_alert(tmp_path: Path) -> None:
    events, _ = play(poc_decoder(), load_turns(POC))
    ms = readings(events)
    with Store(tmp_path / "s.db", "mmu-01") as store:
        store.append("analyser", ms, encounter_id="enc-1").result()
        rows = store.call(
            lambda db: db.execute(
                "SELECT quantity, value, encounter_id, flags, priority FROM readings"
            ).fetchall()
        )
    assert len(rows) == len(ms)
    for quantity, value, encounter, flags, priority in rows:
        control = "control" in json.loads(flags)
        assert (encounter is None) == control, (quantity, value)
        if control:
            assert "alert" not in json.loads(flags) and priority == 0
    assert any(json.loads(f) and "alert" in json.loads(f) for *_, f, _ in rows)


# -- HL7: code map, status --------------------------------------------------------------------


def oru(*obx: str) -> bytes:
    segments = [
        "MSH|^~\\&|POCT||EDGE||20261123101500+0100||ORU^R01|Q7|P|2.5",
        "PID|||PAT-0815",
        "OBR|1|||LAB|||20261123101000+0100",
        *obx,
    ]
    return "".join(s + "\r" for s in segments).encode()


def hl7_map() -> dict[str, Any]:
    return load_code_map(json.loads(HL7_MAP.read_text(encoding="utf-8")))


def test_hl7_code_map_maps_site_codes_and_keeps_the_device_coding() -> None:
    message = oru(
        "OBX|1|NM|K^Potassium^L||4.1|mmol/L^^UCUM|3.5-5.1|N|||F",
        "OBX|2|NM|A1C^HbA1c^L||7.2|%^^UCUM||H|||P",
        "OBX|3|NM|8867-4^Heart rate^LN||72|/min^^UCUM|||||C",
        "OBX|4|NM|NA^Sodium^L||120|mmol/L^^UCUM||L|||X",
    )
    events = readings(hl7v2.decode_oru(parse_message(message), hl7_map()))
    k, a1c, hr, na = events
    assert (k.quantity, k.loinc, k.status) == ("potassium", "2823-3", "F")
    assert dict(k.context)["device-code"] == "K^Potassium^L"
    assert (a1c.quantity, a1c.loinc, a1c.status) == ("hba1c", "4548-4", "P")
    assert "preliminary" in a1c.flags
    assert (hr.quantity, hr.status) == ("heart_rate", "C")  # built-in LOINC table still used
    assert (na.value, na.absent_reason, na.status) == (None, "error", "X")


def test_hl7_without_a_code_map_rejects_site_codes() -> None:
    events = hl7v2.decode_oru(parse_message(oru("OBX|1|NM|K^Potassium^L||4.1|mmol/L^^UCUM")))
    assert [e.reason for e in events if isinstance(e, Rejected)] == ["unknown-observation"]


def test_mllp_decoder_and_decode_cli_use_the_code_map() -> None:
    data = frame(oru("OBX|1|NM|K^Potassium^L||4.1|mmol/L^^UCUM|||||F"))
    events, _ = play(MllpDecoder(code_map=hl7_map()), [data])
    assert [m.quantity for m in readings(events)] == ["potassium"]
    out = run_decode("hl7-mllp", data, {"test_map": str(HL7_MAP)})
    assert [(m["quantity"], m["status"], m["control"]) for m in out["measurements"]] == [
        ("potassium", "F", False)
    ]


def test_a_control_solution_glucose_from_a_meter_is_stored_without_encounter(
    tmp_path: Path,
) -> None:
    from drivers.protocols.ble_health import DECODERS
    from drivers.simulators import ble_values as enc

    control = DECODERS["2a18"](enc.encode_2a18(8, None, 40, "mg/dL", 10, 4))  # low: no alert
    patient = DECODERS["2a18"](enc.encode_2a18(9, None, 40, "mg/dL", 1, 1))  # low: alert
    ms = [e for e in (*control, *patient) if isinstance(e, Measurement)]
    with Store(tmp_path / "s.db", "mmu-01") as store:
        store.append("meter", ms, encounter_id="enc-7").result()
        rows = store.call(
            lambda db: db.execute(
                "SELECT encounter_id, flags, loinc FROM readings ORDER BY seq"
            ).fetchall()
        )
    assert [(enc_id, "alert" in json.loads(f), loinc) for enc_id, f, loinc in rows] == [
        (None, False, None),
        ("enc-7", True, "41653-7"),
    ]


@pytest.mark.parametrize(
    ("kind", "key", "extra"),
    [
        ("hl7-mllp", "code_map", 'listen = "127.0.0.1:2575"'),
        ("astm", "test_map", 'port = "/dev/ttyS0"'),
    ],
)
def test_the_config_loader_refuses_a_map_with_a_bad_site_definition(
    tmp_path: Path, kind: str, key: str, extra: str
) -> None:
    from edge_agent.errors import ConfigError
    from edge_agent.settings import load

    bad = tmp_path / "map.json"
    bad.write_text(json.dumps({"K": {**POTASSIUM, "loinc": "2823-4"}}), encoding="utf-8")
    path = tmp_path / "unit.toml"
    path.write_text(
        f'[unit]\nid = "mmu-1"\n[[devices]]\nid = "dev"\nkind = "{kind}"\n{extra}\n'
        f'options = {{ {key} = "{bad}" }}\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="not a LOINC code") as info:
        load(path, environ={})
    assert info.value.field == f"devices[0] 'dev'.options.{key}"


HL7_SITE = CAPTURES / "hl7" / "site-map" / "poc-gateway-codes-status-spec.hl7"


def site_decoder() -> MllpDecoder:
    from tests.drivers.test_hl7v2 import CLOCK

    code_map = load_code_map(
        json.loads((HL7_SITE.parent / "code-map.json").read_text(encoding="utf-8"))
    )
    return MllpDecoder(clock=lambda: CLOCK, control_id_prefix="T", code_map=code_map)


def test_golden_hl7_gateway_with_site_codes_and_statuses() -> None:
    from tests.drivers.test_hl7v2 import event_json as hl7_json
    from tests.drivers.test_hl7v2 import stream

    assert "Provenance" in HL7_SITE.read_text(encoding="utf-8")[:400]
    expected = json.loads(HL7_SITE.with_suffix(".expected.json").read_text(encoding="utf-8"))
    events, replies = play(site_decoder(), [stream(HL7_SITE)])
    assert [hl7_json(e) for e in events] == expected["events"]
    assert replies.decode("utf-8") == expected["replies"]


@given(st.lists(st.integers(1, 60), max_size=20))
def test_hl7_gateway_capture_split_anywhere(chunks: list[int]) -> None:
    from tests.drivers.test_hl7v2 import stream

    data = stream(HL7_SITE)
    pieces, pos = [], 0
    for size in chunks:
        pieces.append(data[pos : pos + size])
        pos += size
    pieces.append(data[pos:])
    assert play(site_decoder(), pieces) == play(site_decoder(), [data])
