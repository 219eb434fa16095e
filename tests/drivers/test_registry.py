"""Every driver is complete: a sample config that validates, a simulator, captures, a row in
docs/devices.md."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from drivers.base import MessageComplete
from drivers.registry import DRIVERS
from edge_agent.models import Measurement
from edge_agent.settings import from_mapping

ROOT = Path(__file__).resolve().parents[2]
DEVICES_DOC = (ROOT / "docs" / "devices.md").read_text(encoding="utf-8")
CAPTURE_DIRS = {
    "nonin": "nonin",
    "astm": "astm",
    "cms50": "cms50",
    "nmea": "nmea",
    "scale": "scale",
    "hl7-mllp": "hl7",
}


@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_driver_has_a_valid_sample_config(kind: str) -> None:
    path = ROOT / "config" / "devices" / f"{kind}.toml"
    assert path.is_file(), f"add {path.relative_to(ROOT)}"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    settings = from_mapping({"unit": {"id": "mmu-test"}, **data}, str(path))
    assert [d.kind for d in settings.devices] == [kind]


@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_driver_has_a_devices_doc_row_and_a_capture(kind: str) -> None:
    assert f"| `{kind}` |" in DEVICES_DOC, f"add a row for {kind} in docs/devices.md"
    if DRIVERS[kind].transport != "ble":
        folder = ROOT / "tests" / "captures" / CAPTURE_DIRS[kind]
        assert any(folder.iterdir()), f"add a golden capture under {folder}"


@pytest.mark.parametrize("kind", sorted(k for k, s in DRIVERS.items() if s.transport != "ble"))
def test_serial_driver_decoder_and_simulator_build(kind: str) -> None:
    spec = DRIVERS[kind]
    assert spec.decoder is not None and spec.simulator is not None
    options = {"test_map": str(ROOT / "config" / "devices" / "astm-test-map.example.json")}
    model = spec.simulator(options, 0)
    decoder = spec.decoder(options)
    # Two-ended: the simulator talks to the decoder (handshakes answered, messages
    # acknowledged as stored) until it has produced measurements.
    measurements = 0
    for _ in range(400):
        for event in decoder.receive_data(model.output()):
            measurements += isinstance(event, Measurement)
            if isinstance(event, MessageComplete):
                decoder.acknowledge(event.message_id, stored=True)
        model.receive(decoder.data_to_send())
        if measurements:
            break
    assert measurements, f"{kind}: the simulator's output decoded to no measurement"
