"""The BLE transport with the real bleak, against the BlueZ stand-in on a private D-Bus
(no Bluetooth hardware or kernel support exists here; see tests/ble_standin/)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from drivers.base import GattDecoder, Rejected
from drivers.protocols.ble_health import GlucoseDownload, HealthDecoder
from drivers.registry import DRIVERS
from drivers.simulators.ble_values import GlucoseMeterRecords
from drivers.transports.backoff import Backoff
from drivers.transports.ble_gatt import run_ble
from drivers.transports.ble_scan import scan
from edge_agent.models import Measurement
from edge_agent.store import Store
from edge_agent.supervisor import StoreSink, _StoreCursor
from tests.ble_standin import devices
from tests.ble_standin.fake_bluez import FakeBlueZ, PrivateSystemBus

if shutil.which("dbus-daemon") is None:
    if os.environ.get("CI"):
        pytest.fail("dbus-daemon is missing: scripts/setup installs it", pytrace=False)
    pytest.skip("dbus-daemon is not installed (bash scripts/setup installs it)",
                allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def system_bus() -> Iterator[PrivateSystemBus]:
    with PrivateSystemBus() as bus:
        yield bus


@pytest.fixture
async def bluez() -> AsyncIterator[FakeBlueZ]:
    async with FakeBlueZ() as bz:
        yield bz


class RecordingSink:
    def __init__(self) -> None:
        self.measurements: list[Measurement] = []
        self.rejects: list[Rejected] = []
        self.states: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    async def store(self, device_id: str, measurements: list[Measurement],
                    rejects: list[Rejected]) -> None:
        self.measurements += measurements
        self.rejects += rejects
        self.changed.set()

    def device_status(self, device_id: str, state: str, detail: str = "") -> None:
        self.states.append((state, detail))
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


FAST = {"scan_timeout": 2.0, "op_timeout": 2.0}


def run(address: str, factory: Callable[[int | None], GattDecoder], sink: object,
        stop: asyncio.Event, **kw: object) -> asyncio.Task[None]:
    return asyncio.create_task(run_ble(
        "dev", address, factory, sink, stop,  # type: ignore[arg-type]
        backoff=Backoff(base=0.05, cap=0.1), **{**FAST, **kw},  # type: ignore[arg-type]
    ))


async def test_scan_names_the_driver_for_each_health_device(bluez: FakeBlueZ) -> None:
    bluez.add_peripheral(devices.cuff("C0:FF:EE:00:00:01", [(120, 80, 93)]))
    bluez.add_peripheral(devices.GlucoseMeter("C0:FF:EE:00:00:02", GlucoseMeterRecords()))
    bluez.add_peripheral(devices.thermometer("C0:FF:EE:00:00:03", 37.2))
    found = {r.address: r for r in await scan(0.5)}
    assert found["C0:FF:EE:00:00:01"].driver == "ble-blood-pressure"
    assert found["C0:FF:EE:00:00:02"].driver == "ble-glucose"
    assert found["C0:FF:EE:00:00:03"].driver == "ble-thermometer"
    assert found["C0:FF:EE:00:00:01"].name == "UA-651BLE"


async def test_cuff_that_switches_off_after_each_measurement(bluez: FakeBlueZ) -> None:
    readings = [(118, 76, 90), (124, 82, 96), (131, 85, 100)]
    cuff = bluez.add_peripheral(devices.cuff("C0:FF:EE:00:00:11", readings))
    sink, stop = RecordingSink(), asyncio.Event()
    task = run(cuff.address, lambda _: HealthDecoder(("2a35",)), sink, stop)
    try:
        await sink.until(lambda: len(sink.measurements) >= 12)  # 3 x (sys, dia, map, pulse)
    finally:
        stop.set()
        await task
    systolic = [m.value for m in sink.measurements if m.quantity == "systolic_bp"]
    assert systolic == [118.0, 124.0, 131.0]  # each once, in order, across 3 reconnects
    assert cuff.connect_count >= 3
    assert ("waiting", "device switched off after measurement") in sink.states
    assert all(m.device_time == "2026-11-23T08:15:00" for m in sink.measurements)


@pytest.mark.parametrize(("make", "kind", "quantity", "value"), [
    (lambda a: devices.thermometer(a, 38.4), "ble-thermometer", "body_temperature", 38.4),
    (devices.oximeter, "ble-pulse-oximeter", "spo2", 97.0),
    (lambda a: devices.weight_scale(a, 64.5), "ble-weight-scale", "body_weight", 64.5),
    (devices.body_composition, "ble-body-composition", "body_fat_percentage", 22.5),
    (devices.heart_rate, "ble-heart-rate", "heart_rate", 72.0),
])
async def test_each_profile_through_its_registered_driver(
    bluez: FakeBlueZ, make: Callable[[str], devices._Sender], kind: str, quantity: str,
    value: float,
) -> None:
    device = bluez.add_peripheral(make("C0:FF:EE:00:00:21"))
    gatt = DRIVERS[kind].gatt
    assert gatt is not None
    sink, stop = RecordingSink(), asyncio.Event()
    task = run(device.address, lambda start: gatt({}, start), sink, stop)
    try:
        await sink.until(lambda: any(m.quantity == quantity for m in sink.measurements))
    finally:
        stop.set()
        await task
    assert [m.value for m in sink.measurements if m.quantity == quantity] == [value]


async def test_glucose_meter_records_downloaded_once_then_only_new(
    bluez: FakeBlueZ, tmp_path: Path
) -> None:
    records = GlucoseMeterRecords(with_context=True)
    for i in range(50):
        records.add(80 + i)
    meter = devices.GlucoseMeter("C0:FF:EE:00:00:31", records)
    bluez.add_peripheral(meter)
    with Store(tmp_path / "unit.db", "mmu-t") as store:
        sink = StoreSink(store)
        cursor = _StoreCursor(sink, "glucometer")

        async def session(expected: int) -> None:
            stop = asyncio.Event()
            task = run(meter.address, lambda start: GlucoseDownload(last_seq=start), sink,
                       stop, cursor=cursor)
            try:
                deadline = asyncio.get_running_loop().time() + 20
                while store.stats()["readings_total"] < expected:
                    assert asyncio.get_running_loop().time() < deadline, "download stalled"
                    await asyncio.sleep(0.05)
                while cursor.load() != records.records[-1][0]:
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await task

        await session(50)
        assert cursor.load() == 50 and meter.requests == [b"\x01\x01"]
        for mg in (150, 151, 152):
            records.add(mg)
        await session(53)  # reconnect: only the 3 new records
        assert meter.requests[-1] == b"\x01\x03\x01\x33\x00"  # report records >= 51
        values = store.call(lambda db: [r[0] for r in db.execute(
            "SELECT value FROM readings ORDER BY seq")])
    assert values == [80.0 + i for i in range(50)] + [150.0, 151.0, 152.0]


async def test_stalled_meter_is_aborted_and_the_cursor_stays(bluez: FakeBlueZ) -> None:
    records = GlucoseMeterRecords()
    records.add(100)
    meter = devices.GlucoseMeter("C0:FF:EE:00:00:41", records, stalled=True)
    bluez.add_peripheral(meter)
    saved: list[int] = []

    class Cursor:
        def load(self) -> int | None:
            return 7

        def save(self, value: int) -> None:
            saved.append(value)

    sink, stop = RecordingSink(), asyncio.Event()
    task = run(meter.address, lambda start: GlucoseDownload(last_seq=start), sink, stop,
               cursor=Cursor(), op_timeout=0.5)
    try:
        await sink.until(lambda: any(s == "stalled" for s, _ in sink.states))
    finally:
        stop.set()
        await task
    assert meter.requests[0] == b"\x01\x03\x01\x08\x00"  # asked for records >= 8
    assert b"\x03\x00" in meter.requests  # the procedure was aborted
    assert saved == [] and sink.measurements == []
