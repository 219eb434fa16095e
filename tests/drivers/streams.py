"""Helpers the stream-decoder tests share: feed bytes in chunks, play a handshake, and turn
events into JSON-comparable values for the golden captures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from drivers.base import Event, MessageComplete, StreamDecoder


def feed(decoder: StreamDecoder, data: bytes, chunks: Sequence[int] = ()) -> list[Event]:
    """``data`` split at ``chunks`` (sizes; the rest in one piece), then end of stream."""
    events: list[Event] = []
    pos = 0
    for size in chunks:
        events += decoder.receive_data(data[pos : pos + size])
        pos += size
    return events + decoder.receive_data(data[pos:]) + decoder.receive_data(b"")


def play(
    decoder: StreamDecoder, chunks: Sequence[bytes], *, stored: bool = True
) -> tuple[list[Event], bytes]:
    """Feed chunks; acknowledge each completed message at once, like the runtime after COMMIT."""
    events: list[Event] = []
    replies = b""
    for chunk in chunks:
        new = decoder.receive_data(chunk)
        events += new
        for event in new:
            if isinstance(event, MessageComplete):
                decoder.acknowledge(event.message_id, stored=stored)
        replies += decoder.data_to_send()
    return events, replies


def event_json(event: Event, raw: str = "hex") -> dict[str, Any]:
    """``raw``: "hex", or a text encoding for text protocols."""
    data = asdict(event)
    for optional in ("source_key", "cursor", "status"):  # shown only when set
        if data.get(optional, 0) is None:
            del data[optional]
    if "raw" in data:
        data["raw"] = data["raw"].hex(" ") if raw == "hex" else data["raw"].decode(raw)
    for key in ("flags", "context"):
        if key in data:
            data[key] = [list(x) if isinstance(x, tuple) else x for x in data[key]]
    return {"type": type(event).__name__, **data}
