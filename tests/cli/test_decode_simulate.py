"""``decode`` and ``simulate`` from the command line, as a technician runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drivers.simulators.nonin import encode_df7_packet
from edge_agent.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_decode_hex_prints_measurements_and_exits_0() -> None:
    result = runner.invoke(app, ["decode", "nonin:7", "--hex", encode_df7_packet(95, 80).hex()])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [
        (m["quantity"], m["value"], m["unit"], m["loinc"], m["timestamp"])
        for m in out["measurements"]
    ] == [("spo2", 95.0, "%", "59408-5", None), ("pulse_rate", 80.0, "/min", "8867-4", None)]
    assert out["rejected"] == [] and out["replies_hex"] == []


def test_decode_stdin_with_rejects_exits_1() -> None:
    result = runner.invoke(app, ["decode", "nmea"], input=b"$GPGGA,bad*00\r\n")
    assert result.exit_code == 1
    out = json.loads(result.output)
    assert out["rejected"] == [{"raw_hex": b"$GPGGA,bad*00\r\n".hex(), "reason": "checksum"}]


def test_decode_astm_with_test_map_lists_replies_in_order(tmp_path: Path) -> None:
    capture = next((ROOT / "tests" / "captures" / "astm").glob("*.hex"))
    data = bytes.fromhex(
        " ".join(ln for ln in capture.read_text().splitlines() if not ln.startswith("#"))
    )
    path = tmp_path / "capture.bin"
    path.write_bytes(data)
    test_map = ROOT / "config" / "devices" / "astm-test-map.example.json"
    result = runner.invoke(
        app, ["decode", "astm", "--file", str(path), "--test-map", str(test_map)]
    )
    out = json.loads(result.output)
    assert out["measurements"] and all(r == "06" for r in out["replies_hex"])
    assert len(out["replies_hex"]) == data.count(b"\x02") + 1  # ENQ + every frame
    assert result.exit_code == (1 if out["rejected"] else 0)


def test_decode_unknown_protocol_is_a_usage_error() -> None:
    result = runner.invoke(app, ["decode", "nonin:5", "--hex", "00"])
    assert result.exit_code == 2 and "nonin:2" in result.output


def test_simulate_prints_a_pty_that_speaks_the_protocol(tmp_path: Path) -> None:
    link = tmp_path / "ttyNONIN"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent",
            "simulate",
            "nonin",
            "--port",
            str(link),
            "-o",
            "data_format=8",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path.startswith("/dev/pts/") and os.path.realpath(link) == path
        import serial

        with serial.Serial(str(link), 9600, timeout=5) as port:
            data = port.read(8)  # two DF8 frames, one per second
        from drivers.protocols.nonin import NoninDecoder

        events = NoninDecoder(8).receive_data(data)
        assert any(getattr(e, "quantity", None) == "spo2" for e in events)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.parametrize("kind", ["nope"])
def test_simulate_unknown_kind_lists_the_known_ones(kind: str) -> None:
    result = runner.invoke(app, ["simulate", kind])
    assert result.exit_code == 2 and "nonin" in result.output


def test_decode_ble_characteristic_value() -> None:
    # Blood Pressure Measurement, flags 0x00: 120/80/93 mmHg
    result = runner.invoke(app, ["decode", "ble:2a35", "--hex", "00 7800 5000 5d00"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [(m["quantity"], m["value"], m["unit"], m["loinc"]) for m in out["measurements"]] == [
        ("systolic_bp", 120.0, "mm[Hg]", "8480-6"),
        ("diastolic_bp", 80.0, "mm[Hg]", "8462-4"),
        ("mean_arterial_pressure", 93.0, "mm[Hg]", "8478-0"),
    ]
    bad = runner.invoke(app, ["decode", "ble:2a35", "--hex", "00 7800"])
    assert bad.exit_code == 1 and json.loads(bad.output)["rejected"][0]["reason"] == "truncated"
