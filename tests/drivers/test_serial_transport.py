"""The serial transport on real pseudo-terminals: read, commit, reply, unplug and replug.

The decoder here is a minimal line protocol defined in the test, so the transport is tested
alone; the Nonin end-to-end test covers a real protocol through the same transport.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from drivers.base import Event, PassiveDecoder, Rejected
from drivers.simulators.base import PtyDevice
from drivers.transports.serial_port import SerialParams, run_serial
from edge_agent.backoff import Backoff
from edge_agent.models import measurement
from tests.drivers.sinks import RecordingSink


class LineDecoder(PassiveDecoder):
    """'97\\n' -> spo2 97; anything else -> Rejected. Replies 'K' per good line."""

    def __init__(self) -> None:
        self.buf = b""
        self.out = b""

    def receive_data(self, data: bytes) -> list[Event]:
        self.buf += data
        events: list[Event] = []
        while b"\n" in self.buf:
            line, _, self.buf = self.buf.partition(b"\n")
            if line.isdigit():
                events.append(measurement("spo2", float(line), raw=line))
                self.out += b"K"
            else:
                events.append(Rejected(line, "not-a-number"))
        return events

    def data_to_send(self) -> bytes:
        out, self.out = self.out, b""
        return out


class Counter:
    """A device model sending 90, 91, ... and a garbage line every 5th time."""

    interval = 0.01

    def __init__(self) -> None:
        self.n = 0
        self.received = b""

    def output(self) -> bytes:
        self.n += 1
        return b"oops\n" if self.n % 5 == 0 else f"{90 + self.n % 10}\n".encode()

    def receive(self, data: bytes) -> None:
        self.received += data


async def test_reads_commits_replies_and_survives_unplug(tmp_path: Path) -> None:
    model = Counter()
    sim = PtyDevice(model, link=tmp_path / "ttyUSB0").start()
    sink = RecordingSink()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_serial(
            "ox",
            SerialParams(port=sim.path),
            LineDecoder,
            sink,
            stop,
            backoff=Backoff(base=0.05, cap=0.2),
        )
    )
    try:
        await sink.until(lambda: len(sink.measurements) >= 10 and sink.rejects)
        assert all(r.raw == b"oops" and r.reason == "not-a-number" for r in sink.rejects)
        assert b"K" in model.received  # replies reached the device
        sim.unplug()
        await sink.until(lambda: "disconnected" in sink.states)
        before = len(sink.measurements)
        sim.replug()
        await sink.until(lambda: sink.states.count("connected") >= 2)
        await sink.until(lambda: len(sink.measurements) >= before + 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        sim.stop()
    assert sink.states[-1] == "stopped"
    assert {m.quantity for m in sink.measurements} == {"spo2"}


async def test_missing_port_is_reported_and_retried(tmp_path: Path) -> None:
    sink = RecordingSink()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_serial(
            "ox",
            SerialParams(port=str(tmp_path / "absent")),
            LineDecoder,
            sink,
            stop,
            backoff=Backoff(base=0.01, cap=0.02),
        )
    )
    await sink.until(lambda: sink.states.count("unavailable") >= 1)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert sink.measurements == []


async def test_nonin_select_command_switches_the_device_format_over_a_pty(tmp_path: Path) -> None:
    from drivers.registry import driver
    from drivers.simulators.nonin import NoninModel

    model = NoninModel(2, seed=4)  # the device is in DF2 ...
    sim = PtyDevice(model).start()
    sink = RecordingSink()
    stop = asyncio.Event()
    spec = driver("nonin")
    assert spec.decoder is not None
    factory = spec.decoder
    options = {"data_format": 8, "select_format": True}  # ... the unit wants DF8
    task = asyncio.create_task(
        run_serial("ox", SerialParams(port=sim.pty), lambda: factory(options), sink, stop)
    )
    try:
        await sink.until(lambda: len(sink.measurements) >= 4)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        sim.stop()
    assert model.data_format == 8
    assert all(len(m.raw) == 4 for m in sink.measurements)  # DF8 frames, not DF2 packets
