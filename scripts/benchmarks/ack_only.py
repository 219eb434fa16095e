"""A central that acknowledges every readings batch at once and stores nothing: the
``history`` figure's "agent ceiling" (how fast the agent drains when central costs nothing).

``python -m scripts.benchmarks.ack_only --port PORT --client-id ID``: subscribes (QoS 1) to
every unit's ``up/readings`` and answers each message with the ack the real receiver would
send for a batch it holds in full (the batch id and epoch from the message's MQTT 5 user
properties; no refusals, no seq bookkeeping, no clock times). The payload is never
decompressed. Runs until SIGTERM (the bench stops it).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from sync import topics


def ack_for(user_properties: list[tuple[str, str]]) -> bytes | None:
    """The ack body for a readings message's properties; None when it names no batch."""
    props = dict(user_properties)
    if "batch_id" not in props:
        return None
    return json.dumps(
        {"batch_id": props["batch_id"], "epoch": props.get("epoch"), "refused": []}
    ).encode()


def main(argv: list[str] | None = None) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    parser = argparse.ArgumentParser(prog="ack_only")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    args = parser.parse_args(argv)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )

    def connected(client: mqtt.Client, *rest: Any) -> None:
        client.subscribe(f"{topics.PREFIX}/+/{topics.READINGS.suffix}", qos=1)

    def message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        unit = topics.unit_of(msg.topic)
        props = getattr(msg.properties, "UserProperty", None) or []
        body = ack_for(list(props))
        if unit is not None and body is not None:
            client.publish(topics.ACK.of(unit), body, qos=topics.ACK.qos)

    client.on_connect = connected
    client.on_message = message
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect("127.0.0.1", args.port)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
