"""Exactly once from at-least-once devices (issue 13, defects 2 and 12), with a real store.

A device resends what it has no positive answer for: an HL7 monitor whose connection dropped
after our COMMIT and before it read ``MSA|AA``, an ASTM analyser that gave up waiting for the
final ACK, a glucose meter asked for records it already gave. The readings carry deterministic
source keys, so the store keeps them once and the resend is answered positively again. A
download cursor commits in the same transaction as its readings: a failed commit leaves both
where they were.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from drivers.base import GattWrite, MessageComplete
from drivers.protocols.astm import AstmDecoder
from drivers.protocols.ble_health import GlucoseDownload
from drivers.protocols.mllp import frame
from drivers.runtime import dispatch
from drivers.simulators.astm_analyser import Result, ResultMessage, encode_records, frames
from drivers.simulators.ble_values import GlucoseMeterRecords
from drivers.simulators.hl7_monitor import encode_oru
from drivers.transports.mllp_tcp import MllpServer
from edge_agent.models import measurement
from edge_agent.service.supervisor import _StoreCursor
from edge_agent.store.writer import Store
from tests.drivers.sinks import WatchedSink
from tests.drivers.test_astm import load_map
from tests.drivers.test_mllp import ack_of

WAIT = 5.0
DEVICE = "monitor-1"
MESSAGE = encode_oru(
    [measurement("spo2", 97.0), measurement("pulse_rate", 64.0)], "T1",
    timestamp="2024-06-11T09:35:12+01:00", sending_application="ACME^0012345678ABCDEF^EUI-64",
)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "unit.db", "mmu-01") as unit_store:
        yield unit_store


def readings(store: Store) -> list[tuple[str, str, float | None]]:
    return store.read(
        lambda db: [
            (r[0], r[1], r[2])
            for r in db.execute("SELECT id, quantity, value FROM readings ORDER BY seq")
        ]
    )


# --- HL7 over MLLP/TCP ------------------------------------------------------------------------
@pytest.fixture
async def server(store: Store) -> AsyncIterator[tuple[WatchedSink, MllpServer]]:
    sink = WatchedSink(store)
    async with MllpServer(DEVICE, sink, port=0) as listening:
        yield sink, listening


@pytest.mark.parametrize("abort", [False, True], ids=["close", "reset"])
async def test_hl7_message_resent_after_a_lost_ack_is_stored_once_and_answered_aa(
    server: tuple[WatchedSink, MllpServer],
    store: Store,
    abort: bool,
) -> None:
    sink, listening = server
    _, writer = await asyncio.open_connection("127.0.0.1", listening.port)
    writer.write(frame(MESSAGE))
    await writer.drain()
    await sink.until(lambda: sink.commits == 1)  # committed; the AA is on its way
    if abort:
        writer.transport.abort()  # RST: the monitor never reads the AA
    else:
        writer.close()
    first = readings(store)
    assert [(q, v) for _, q, v in first] == [("spo2", 97.0), ("pulse_rate", 64.0)]

    # The monitor reconnects and resends the same message (same MSH-10).
    reader, writer = await asyncio.open_connection("127.0.0.1", listening.port)
    writer.write(frame(MESSAGE))
    await writer.drain()
    async with asyncio.timeout(WAIT):
        ack = await reader.readuntil(b"\x1c\r")
    writer.close()
    await writer.wait_closed()
    assert ack_of(ack) == ("AA", "T1")  # positive again: the monitor moves on
    assert readings(store) == first  # once, same ids
    assert store.recognised == 2 and store.accepted == 2

    # Another message (another MSH-10) with the same values is new data.
    other = MESSAGE.replace(b"|T1|", b"|T2|")
    reader, writer = await asyncio.open_connection("127.0.0.1", listening.port)
    writer.write(frame(other))
    await writer.drain()
    async with asyncio.timeout(WAIT):
        assert ack_of(await reader.readuntil(b"\x1c\r")) == ("AA", "T2")
    writer.close()
    await writer.wait_closed()
    assert len(readings(store)) == 4


# --- ASTM ---------------------------------------------------------------------------------------
ASTM = ResultMessage(
    "P-77",
    "SPC-1",
    (
        Result("GLU", "98", "mg/dL", completed="20240611093512"),
        Result("CHOL", "212", "mg/dL", flags="H", completed="20240611093512"),
    ),
)


async def deliver_astm(sink: WatchedSink, message: ResultMessage) -> bytes:
    """One transmission to a fresh receiver (the analyser's next connection/ENQ), through
    the runtime; returns the receiver's replies."""
    decoder = AstmDecoder(load_map())
    replies = b""
    for chunk in (b"\x05", *frames(encode_records(message)), b"\x04"):
        await dispatch("analyser", decoder.receive_data(chunk), sink, decoder)
        replies += decoder.data_to_send()
    return replies


async def test_astm_message_resent_is_stored_once_and_acked(store: Store) -> None:
    sink = WatchedSink(store)
    ack_all = b"\x06" * (1 + len(frames(encode_records(ASTM))))
    assert await deliver_astm(sink, ASTM) == ack_all
    first = readings(store)
    assert [(q, v) for _, q, v in first] == [("glucose", 98.0), ("cholesterol", 212.0)]
    # The analyser never saw the final ACK and sends the whole message again.
    assert await deliver_astm(sink, ASTM) == ack_all
    assert readings(store) == first and store.recognised == 2
    # The same tests on another specimen are other results.
    await deliver_astm(sink, ResultMessage("P-77", "SPC-2", ASTM.results))
    assert len(readings(store)) == 4


# --- glucose download -------------------------------------------------------------------------
KEY = "glucometer/racp/serial=A1"


def meter_with(n: int) -> GlucoseMeterRecords:
    meter = GlucoseMeterRecords(with_context=True)
    for i in range(n):
        meter.add(90 + i)
    return meter


async def download(
    sink: WatchedSink, meter: GlucoseMeterRecords, last: int | None
) -> GlucoseDownload:
    """One connection as the BLE transport runs it: resume from the cursor, answer every
    RACP write with the meter, dispatch (commit, then acknowledge)."""
    dl = GlucoseDownload()
    dl.resume("serial=A1", KEY, last)
    dl.start()
    writes: list[GattWrite] = dl.writes_to_send()
    while writes:
        for write in writes:
            for char, value in meter.handle_racp(write.value):
                await dispatch("glucometer", dl.receive_value(char, value), sink, dl)
        writes = dl.writes_to_send()
    return dl


async def test_glucose_records_fetched_twice_are_stored_once(store: Store) -> None:
    sink = WatchedSink(store)
    meter = meter_with(4)
    await download(sink, meter, None)
    first = readings(store)
    assert [v for _, _, v in first] == [90.0, 91.0, 92.0, 93.0]
    assert store.cursor_load(KEY) == 4
    # The cursor was lost (another unit's store, a restored backup): all four come again.
    meter.add(94)
    dl = await download(sink, meter, None)
    assert readings(store)[:4] == first and [v for _, _, v in readings(store)] == [
        90.0,
        91.0,
        92.0,
        93.0,
        94.0,
    ]
    assert dl.last_seq == 5 and store.cursor_load(KEY) == 5


# --- the cursor commits with its readings (defect 12) -----------------------------------------
REFUSE = "SELECT RAISE(ABORT, 'refused by the test')"


def execute(store: Store, sql: str) -> None:
    store.call(lambda db: db.execute(sql))


@pytest.mark.parametrize("failing", ["readings", "cursor", "sink"])
async def test_a_failed_commit_moves_neither_readings_nor_cursor(
    store: Store,
    failing: str,
) -> None:
    sink = WatchedSink(store)
    meter = meter_with(3)
    await download(sink, meter, None)
    assert store.cursor_load(KEY) == 3
    before = readings(store)
    for mg in (150, 151):
        meter.add(mg)
    if failing == "readings":
        execute(store, f"CREATE TRIGGER t BEFORE INSERT ON readings BEGIN {REFUSE}; END")
    elif failing == "cursor":  # the readings went in first: the savepoint must undo them
        execute(store, f"CREATE TRIGGER t BEFORE UPDATE ON device_cursors BEGIN {REFUSE}; END")
    else:
        sink.unit_store = _Broken()  # type: ignore[assignment]
    dl = await download(sink, meter, 3)
    assert readings(store) == before  # nothing of the failed commit
    assert store.cursor_load(KEY) == 3 and dl.last_seq == 3  # neither cursor moved
    if failing == "sink":
        sink.unit_store = store
    else:
        execute(store, "DROP TRIGGER t")
    dl = await download(sink, meter, store.cursor_load(KEY))  # asked again from 3
    after = readings(store)
    assert after[:3] == before and [v for _, _, v in after[3:]] == [150.0, 151.0]
    assert store.cursor_load(KEY) == 5 and dl.last_seq == 5


class _Broken:
    """A store whose append fails before anything is written (the sink raising)."""

    def append(self, *args: object, **kwargs: object) -> object:
        raise OSError("disk I/O error")


async def test_the_commit_acknowledges_only_after_the_cursor_is_durable(store: Store) -> None:
    """What the decoder is told (stored=True) and what the store holds agree at every
    completion: read the cursor back inside the acknowledgement."""
    seen: list[tuple[int | None, int]] = []

    class Checking(GlucoseDownload):
        def acknowledge(self, message_id: str, *, stored: bool) -> None:
            seen.append((store.cursor_load(KEY), len(readings(store))))
            super().acknowledge(message_id, stored=stored)

    sink = WatchedSink(store)
    meter = meter_with(2)
    dl = Checking()
    dl.resume("serial=A1", KEY, None)
    dl.start()
    for write in dl.writes_to_send():
        events = [e for c, v in meter.handle_racp(write.value) for e in dl.receive_value(c, v)]
        assert events[-1] == MessageComplete("racp-1", (KEY, 2))
        await dispatch("glucometer", events, sink, dl)
    assert seen == [(2, 2)]


async def test_the_cursor_of_an_older_agent_is_taken_over_by_the_first_meter(
    store: Store,
) -> None:
    """Before issue 13 the cursor was kept under the device id: the first meter met after the
    upgrade continues from it (no second copy of its memory); later meters start afresh."""
    sink = WatchedSink(store)
    cursor = _StoreCursor(sink)
    store.cursor_save("gluco_1", 7)  # written by the older agent
    store.cursor_save("glucoX1/racp/serial=Z9", 3)  # another device: "_" is not a wildcard
    assert cursor.load("gluco_1/racp/serial=A1") == 7
    await sink.store("gluco_1", [], [], cursor=("gluco_1/racp/serial=A1", 9))
    assert cursor.load("gluco_1/racp/serial=A1") == 9
    assert cursor.load("gluco_1/racp/serial=B2") is None  # a replacement: from its first record
    assert cursor.load("other/racp/serial=A1") is None
