"""``edge-agent decode`` knows every new format: both scale formats on one port, the CMS50 V7.0
protocol, Intermediate Temperature, and the HL7 code map through --test-map."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drivers.decode import PROTOCOLS
from drivers.protocols.cms50 import Packet
from drivers.simulators import ble_values as enc
from drivers.simulators.cms50 import encode_v7
from drivers.simulators.scale import encode_balance, encode_indicator
from edge_agent.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def run(*args: str, data: bytes) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["decode", *args, "--hex", data.hex()])
    return result.exit_code, json.loads(result.output)


def test_every_new_protocol_is_listed() -> None:
    assert {"scale", "scale:indicator", "scale:balance", "cms50:v7", "ble:2a1e"} <= set(PROTOCOLS)


def test_decode_scale_reads_indicator_and_balance_lines() -> None:
    code, out = run("scale", data=encode_indicator(72.45) + encode_balance(3412.5))
    assert code == 0
    assert [(m["value"], m["unit"]) for m in out["measurements"]] == [(72.45, "kg"), (3412.5, "g")]


def test_decode_cms50_v7() -> None:
    code, out = run("cms50:v7", data=encode_v7(Packet(97, 72), pi=150) * 60)
    assert code == 0 and out["replies_hex"] == ["7d81a1808080808080"]
    assert [m["quantity"] for m in out["measurements"]] == [
        "spo2",
        "pulse_rate",
        "pulse_amplitude_index",
    ]


def test_decode_intermediate_temperature() -> None:
    code, out = run("ble:2a1e", data=enc.encode_2a1c(36.4, "Cel"))
    assert code == 0 and out["measurements"][0]["flags"] == ["intermediate"]


@pytest.mark.parametrize(
    ("protocol", "map_path", "data"),
    [
        (
            "hl7-mllp",
            "config/devices/hl7-code-map.example.json",
            b"\x0bMSH|^~\\&|GW||EDGE||20261123101500+0100||ORU^R01|Q1|P|2.5\r"
            b"OBX|1|NM|K^Potassium^L||4.1|mmol/L^^UCUM|||||P\r\x1c\r",
        ),
    ],
)
def test_decode_with_a_site_map(protocol: str, map_path: str, data: bytes) -> None:
    code, out = run(protocol, "--test-map", str(ROOT / map_path), data=data)
    assert code == 0
    (m,) = out["measurements"]
    assert (m["quantity"], m["loinc"], m["status"], m["control"]) == (
        "potassium",
        "2823-3",
        "P",
        False,
    )
