"""MLLP over real loopback TCP: ACK after the commit, AE when the store fails, clients that drop
mid-message and come back, the listener's lifecycle. Waits are events with timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.base import Rejected, Sink
from drivers.protocols.mllp import frame
from drivers.simulators.hl7_monitor import Hl7MonitorModel, encode_oru
from drivers.transports.mllp_tcp import MllpServer, parse_listen, run_mllp
from edge_agent.models import measurement
from tests.drivers.sinks import RecordingSink
from tests.drivers.test_mllp import ack_of

WAIT = 5.0
MESSAGE = encode_oru([measurement("spo2", 97.0), measurement("pulse_rate", 64.0)], "T1")


@pytest.fixture
async def sink_and_server() -> AsyncIterator[tuple[RecordingSink, MllpServer]]:
    sink = RecordingSink(device_id="monitor-1")
    checked: Sink = sink  # the fake satisfies the protocol (mypy)
    async with MllpServer("monitor-1", checked, port=0) as server:
        yield sink, server


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(WAIT):
            return await reader.readuntil(b"\x1c\r")
    finally:
        writer.close()
        await writer.wait_closed()


async def test_monitor_over_loopback_every_ack_arrives_after_its_commit(
    sink_and_server: tuple[RecordingSink, MllpServer],
) -> None:
    sink, server = sink_and_server
    model = Hl7MonitorModel(seed=7, interval=1.0, period=1.0, max_messages=3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    async with asyncio.timeout(WAIT):
        while len(model.delivered) < 3:
            out = model.output()
            if not out:
                continue
            writer.write(out)
            await writer.drain()
            ack = await reader.readuntil(b"\x1c\r")
            # The ACK was written after the commit: what it answers is already stored.
            sent = [m for ms in model.sent.values() for m in ms]
            assert len(sink.measurements) == len(sent)
            model.receive(ack)
    writer.close()
    await writer.wait_closed()
    await sink.until(lambda: "disconnected" in sink.states)
    assert [a.code for a in model.acks] == ["AA"] * 3 and model.resent == []
    sent = [m for ms in model.sent.values() for m in ms]
    assert [(m.quantity, m.value, m.device_time) for m in sink.measurements] == [
        (m.quantity, m.value, m.device_time) for m in sent
    ]
    assert sink.states == ["connected", "disconnected"]
    assert sink.statuses[0][1].startswith("127.0.0.1:")


async def test_a_sink_that_raises_is_answered_ae_and_nothing_is_stored() -> None:
    sink = RecordingSink(fail_commits=1, device_id="monitor-1")
    async with MllpServer("monitor-1", sink, port=0) as server:
        assert ack_of(await exchange(server.port, frame(MESSAGE))) == ("AE", "T1")
        assert ack_of(await exchange(server.port, frame(MESSAGE))) == ("AA", "T1")  # resend
    assert [m.quantity for m in sink.measurements] == ["spo2", "pulse_rate"]
    assert sink.log == ["store failed", "store 2"]


@pytest.mark.parametrize("abort", [False, True], ids=["close", "reset"])
async def test_client_dropping_mid_message_then_reconnecting_and_resending(
    sink_and_server: tuple[RecordingSink, MllpServer], abort: bool
) -> None:
    sink, server = sink_and_server
    wire = frame(MESSAGE)
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(wire[:40])
    await writer.drain()
    await sink.until(lambda: "connected" in sink.states)
    if abort:
        writer.transport.abort()  # RST: the monitor lost power
    else:
        writer.close()
    await sink.until(lambda: "disconnected" in sink.states)
    assert sink.rejects == [Rejected(wire[:40], "truncated")]  # kept, not silently lost
    assert sink.measurements == []
    assert ack_of(await exchange(server.port, wire)) == ("AA", "T1")
    assert [m.value for m in sink.measurements] == [97.0, 64.0]
    await sink.until(lambda: sink.states.count("disconnected") == 2)
    assert sink.states == ["connected", "disconnected", "connected", "disconnected"]


async def test_server_close_ends_open_connections(
    sink_and_server: tuple[RecordingSink, MllpServer],
) -> None:
    sink, server = sink_and_server
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await sink.until(lambda: "connected" in sink.states)
    await server.close()
    assert sink.states == ["connected", "disconnected"]
    async with asyncio.timeout(WAIT):
        assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()


async def test_run_mllp_listens_until_stop_and_reports_a_busy_port() -> None:
    sink = RecordingSink(device_id="monitor-1")
    stop = asyncio.Event()
    task = asyncio.create_task(run_mllp("monitor-1", "127.0.0.1:0", sink, stop))
    await sink.until(lambda: "listening" in sink.states)
    host, port = parse_listen(sink.statuses[0][1])
    assert host == "127.0.0.1"
    assert ack_of(await exchange(port, frame(MESSAGE))) == ("AA", "T1")

    busy = RecordingSink(device_id="monitor-1")
    busy_stop = asyncio.Event()
    busy_task = asyncio.create_task(run_mllp("monitor-1", f"127.0.0.1:{port}", busy, busy_stop))
    await busy.until(lambda: "unavailable" in busy.states)
    busy_stop.set()
    stop.set()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(task, busy_task)
    assert sink.states[-1] == "stopped" and busy.states[-1] == "stopped"
    assert "cannot listen on" in busy.statuses[0][1]
