"""The external witness of the chaos harness: HL7 monitors that send ORU^R01 over MLLP and write,
in an append-only side file outside the system under test, what they sent and what the agent
positively acknowledged (``MSA|AA``).

Each message has a unique MSH-10 (``CHAOS<monitor>-<n>``) and a unique observation time (OBX-14
/ OBR-7, one second per message, a distinct range per monitor), so every reading has a content
fingerprint that survives the trip to central: (observation time, quantity) -> value. A
monitor sends one message at a time and resends the same message (same MSH-10, same content)
until it gets an AA: after an ACK timeout on the same connection, or on a new connection when
the agent went away - as real monitors do.

Witness lines (JSON): ``{"e": "sent", "cid", "t", "r": [[quantity, value], ...]}`` before the
first transmission, ``{"e": "resend", "cid"}`` before each further one, ``{"e": "ack", "cid",
"code", "at"}`` when the ACK is read (AA, or AR: refused for good).
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

from drivers.protocols.hl7v2 import Hl7Error, parse_message
from drivers.protocols.mllp import frame, unframe
from drivers.simulators.hl7_monitor import encode_oru
from edge_agent.models import measurement

BASE_EPOCH: Final = 1_704_067_200  # 2024-01-01T00:00:00Z: observation time of message 0
MONITOR_SPAN: Final = 10_000_000  # seconds of observation time reserved per monitor
ZONE: Final = timezone(timedelta(hours=1))


class Witness:
    """The append-only side file (``O_APPEND``, one ``write`` per line, shared by monitors)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def record(self, **fields: Any) -> None:
        line = (json.dumps(fields, separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        os.close(self._fd)


def read_witness(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


@dataclass(frozen=True)
class Message:
    control_id: str
    epoch: int  # observation time, seconds since 1970
    readings: tuple[tuple[str, float], ...]  # (quantity, value)

    def wire(self) -> bytes:
        stamp = datetime.fromtimestamp(self.epoch, ZONE).isoformat(timespec="seconds")
        ms = [measurement(q, v, device_time=stamp) for q, v in self.readings]
        return frame(
            encode_oru(
                ms, self.control_id, timestamp=stamp, observed=stamp, sending_application="CHAOSMON"
            )
        )


def make_message(monitor: int, n: int, rng: random.Random) -> Message:
    readings = (
        ("spo2", float(rng.randint(88, 100))),
        ("pulse_rate", float(rng.randint(50, 130))),
        ("body_temperature", round(rng.uniform(35.5, 39.0), 1)),
    )
    return Message(f"CHAOS{monitor}-{n:06d}", BASE_EPOCH + monitor * MONITOR_SPAN + n, readings)


def read_ack(sock: socket.socket, inbox: bytearray, control_id: str, deadline: float) -> str | None:
    """MSA-1 of the ACK answering ``control_id``, or None at the deadline (``ConnectionError``
    when the peer closed)."""
    while True:
        end = inbox.rfind(b"\x1c")
        if end >= 0:
            complete = bytes(inbox[: end + 1])
            del inbox[: end + 1]
            for body in unframe(complete):
                try:
                    reply = parse_message(body)
                except Hl7Error:
                    continue
                msa = next((seg for seg in reply if seg.name == "MSA"), None)
                if msa is not None and msa.get(2) == control_id:
                    return msa.get(1)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        if not data:
            raise ConnectionError("the agent closed the connection")
        inbox += data


class Monitor(threading.Thread):
    """One monitor: sends messages one at a time until ``stop_new``, then finishes the one
    in hand (resending until AA) unless ``abort`` is set."""

    def __init__(
        self,
        index: int,
        port: int,
        witness: Witness,
        *,
        seed: int,
        gap: float = 0.02,
        ack_timeout: float = 3.0,
        stop_new: threading.Event,
        abort: threading.Event,
    ) -> None:
        super().__init__(name=f"monitor-{index}", daemon=True)
        self.index, self.port, self.witness = index, port, witness
        self.gap, self.ack_timeout = gap, ack_timeout
        self.stop_new, self.abort = stop_new, abort
        self.rng = random.Random(seed * 1000 + index)
        self.sent = self.acked = self.resends = self.transmissions = 0
        self.pending: Message | None = None

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=1.0)
        except OSError:
            return None

    def run(self) -> None:
        sock: socket.socket | None = None
        inbox = bytearray()
        first = True
        try:
            while not self.abort.is_set():
                if self.pending is None:
                    if self.stop_new.is_set():
                        return
                    self.sent += 1
                    self.pending = make_message(self.index, self.sent, self.rng)
                    m = self.pending
                    self.witness.record(
                        e="sent", cid=m.control_id, t=m.epoch, r=[list(r) for r in m.readings]
                    )
                    first = True
                if sock is None:
                    sock, inbox = self._connect(), bytearray()
                    if sock is None:
                        self.abort.wait(0.05)
                        continue
                message = self.pending
                if not first:
                    self.resends += 1
                    self.witness.record(e="resend", cid=message.control_id)
                first = False
                try:
                    self.transmissions += 1
                    sock.sendall(message.wire())
                    code = read_ack(
                        sock, inbox, message.control_id, time.monotonic() + self.ack_timeout
                    )
                except OSError:  # reset, refused, closed: a new connection, the same message
                    sock.close()
                    sock = None
                    continue
                if code in ("AA", "CA", "AR", "CR"):
                    self.witness.record(
                        e="ack", cid=message.control_id, code=code, at=round(time.time(), 3)
                    )
                    self.acked += code in ("AA", "CA")
                    self.pending = None
                    self.abort.wait(self.gap)
                elif code is not None:  # AE: not stored, resend soon
                    self.abort.wait(0.1)
        finally:
            if sock is not None:
                sock.close()
