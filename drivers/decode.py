"""Decode captured bytes for a technician: ``edge-agent decode PROTOCOL``.

Runs the same sans-I/O decoders the agent runs, feeding the capture in one piece and
acknowledging every completed message as if it had been stored, so ``replies_hex`` shows
exactly what the agent would send back, in order.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from drivers.base import DeviceInfo, Event, MessageComplete, Rejected, StreamDecoder
from edge_agent.models import Measurement


class UnknownProtocol(ValueError):
    pass


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def code_map_option(options: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The site code map named by ``options[key]`` (a JSON file path), parsed; {} when unset."""
    load_code_map = _load("drivers.protocols.sitecodes:load_code_map")
    path = options.get(key)
    raw_map = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    loaded: dict[str, Any] = load_code_map(raw_map)
    return loaded


def _astm(options: Mapping[str, Any]) -> StreamDecoder:
    decoder: StreamDecoder = _load("drivers.protocols.astm:AstmDecoder")(
        code_map_option(options, "test_map")
    )
    return decoder


def _hl7(options: Mapping[str, Any]) -> StreamDecoder:
    # The decode CLI's --test-map names the HL7 code map too (one map flag per protocol).
    key = "code_map" if options.get("code_map") else "test_map"
    decoder: StreamDecoder = _load("drivers.protocols.mllp:MllpDecoder")(
        code_map=code_map_option(options, key)
    )
    return decoder


def _simple(path: str, *args: Any) -> Callable[[Mapping[str, Any]], StreamDecoder]:
    def make(options: Mapping[str, Any]) -> StreamDecoder:
        decoder: StreamDecoder = _load(path)(*args)
        return decoder

    return make


STREAM_PROTOCOLS: dict[str, Callable[[Mapping[str, Any]], StreamDecoder]] = {
    "nonin:2": _simple("drivers.protocols.nonin:NoninDecoder", 2),
    "nonin:7": _simple("drivers.protocols.nonin:NoninDecoder", 7),
    "nonin:8": _simple("drivers.protocols.nonin:NoninDecoder", 8),
    "nonin:13": _simple("drivers.protocols.nonin:NoninDecoder", 13),
    "cms50": _simple("drivers.protocols.cms50:Cms50Decoder"),
    "cms50:v7": _simple("drivers.protocols.cms50:Cms50V7Decoder"),
    "hl7-mllp": _hl7,
    "astm": _astm,
    "nmea": _simple("drivers.protocols.nmea:NmeaDecoder"),
    "scale": _simple("drivers.protocols.scale:ScaleDecoder", "auto"),
    "scale:indicator": _simple("drivers.protocols.scale:ScaleDecoder", "indicator"),
    "scale:balance": _simple("drivers.protocols.scale:ScaleDecoder", "balance"),
}
BLE_CHARACTERISTICS = (
    "2a35",
    "2a36",
    "2a37",
    "2a1c",
    "2a1e",
    "2a18",
    "2a34",
    "2a5e",
    "2a5f",
    "2a9d",
    "2a9c",
)
PROTOCOLS = (*STREAM_PROTOCOLS, *(f"ble:{c}" for c in BLE_CHARACTERISTICS))


def measurement_json(m: Measurement) -> dict[str, Any]:
    return {
        "quantity": m.quantity,
        "value": m.value,
        "unit": m.unit,
        "loinc": m.loinc,
        "timestamp": m.device_time,
        "flags": list(m.flags),
        "absent_reason": m.absent_reason,
        "status": m.status,
        "control": "control" in m.flags,  # quality control: never a patient's reading
    }


def decode(protocol: str, data: bytes, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Decode ``data``; returns {measurements, rejected, replies_hex, device_info}."""
    options = options or {}
    events: list[Event] = []
    replies: list[str] = []
    if protocol.startswith("ble:") and protocol[4:] in BLE_CHARACTERISTICS:
        decoders = _load("drivers.protocols.ble_health:DECODERS")
        events = list(decoders[protocol[4:]](data))
    elif protocol in STREAM_PROTOCOLS:
        decoder = STREAM_PROTOCOLS[protocol](options)
        # Byte by byte, so each reply is listed as the separate write it would be.
        for chunk in [data[i : i + 1] for i in range(len(data))] + [b""]:
            for event in decoder.receive_data(chunk):
                events.append(event)
                if isinstance(event, MessageComplete):
                    decoder.acknowledge(event.message_id, stored=True)
            reply = decoder.data_to_send()
            if reply:
                replies.append(reply.hex())
    else:
        raise UnknownProtocol(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return {
        "protocol": protocol,
        "measurements": [measurement_json(e) for e in events if isinstance(e, Measurement)],
        "rejected": [
            {"raw_hex": e.raw.hex(), "reason": e.reason} for e in events if isinstance(e, Rejected)
        ],
        "replies_hex": replies,
        "device_info": [
            {"key": e.key, "value": e.value} for e in events if isinstance(e, DeviceInfo)
        ],
    }
