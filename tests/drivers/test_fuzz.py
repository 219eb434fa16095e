"""Every decoder, any bytes: events or rejects, never an exception (hypothesis fuzzing).

The default profile tries a few hundred inputs per protocol; ``scripts/fuzz`` runs the
``fuzz`` profile (20,000 per protocol) and reports how many inputs were tried.
"""

from __future__ import annotations

import importlib
import os
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.decode import BLE_CHARACTERISTICS, STREAM_PROTOCOLS, decode

TRIED: Counter[str] = Counter()
ROOT = Path(__file__).resolve().parents[2]
TEST_MAP = str(ROOT / "config" / "devices" / "astm-test-map.example.json")
HL7_MAP = str(ROOT / "config" / "devices" / "hl7-code-map.example.json")
# Bytes that steer decoders into their interesting states (frame starts, separators).
ALPHABET = st.sampled_from(
    [
        b"\x01",
        b"\x02",
        b"\x03",
        b"\x04",
        b"\x05",
        b"\x06",
        b"\x0b",
        b"\x0d",
        b"\x0a",
        b"\x1c",
        b"\x15",
        b"\x17",
        b"\x80",
        b"\x81",
        b"\xff",
        b"$",
        b"*",
        b",",
        b"|",
        b"^",
        b"MSH|^~\\&|",
        b"OBX|1|NM|",
        b"OBX|1|NM|K^Potassium^L||",
        b"H|\\^&|",
        b"R|1|^^^GLU|",
        b"R|1|^^^ALB|",
        b"|||||||Q|",
        b"L|1|N",
        b"ST,GS,+",
        b"ST,+0",
        b"$GPRMC,",
        b"$GIGGA,",
        b"00",
    ]
)
PAYLOAD = st.one_of(
    st.binary(max_size=600), st.lists(ALPHABET | st.binary(max_size=8), max_size=80).map(b"".join)
)


def _available(protocol: str) -> bool:
    module = {
        "cms50": "cms50",
        "hl7-mllp": "mllp",
        "astm": "astm",
        "nmea": "nmea",
        "scale": "scale",
    }.get(protocol.split(":")[0], "nonin")
    try:
        importlib.import_module(f"drivers.protocols.{module}")
    except ImportError:
        return False
    return True


STREAMS = [p for p in STREAM_PROTOCOLS if _available(p)]
try:
    importlib.import_module("drivers.protocols.ble_health")
    BLE = [f"ble:{c}" for c in BLE_CHARACTERISTICS]
except ImportError:
    BLE = []


@pytest.mark.parametrize("protocol", STREAMS + BLE)
def test_any_bytes_decode_without_exceptions(protocol: str) -> None:
    maps = {"astm": TEST_MAP, "hl7-mllp": HL7_MAP}  # site maps, incl. site-defined quantities
    options = {"test_map": maps[protocol]} if protocol in maps else {}

    @given(PAYLOAD)
    def run(data: bytes) -> None:
        TRIED[protocol] += 1
        result = decode(protocol, data, options)
        for r in result["rejected"]:
            assert r["reason"] and (r["raw_hex"] or not data)  # bytes kept, unless none came
        for m in result["measurements"]:
            assert m["value"] is None or m["value"] == m["value"]  # never NaN as a number

    run()
    report = os.environ.get("EDGE_AGENT_FUZZ_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as out:
            out.write(f"{protocol} {TRIED[protocol]}\n")
