"""The BLE transport with the real bleak, against the BlueZ stand-in on a private D-Bus
(no Bluetooth hardware or kernel support exists here; see tests/ble_standin/).

One dbus-daemon for the session; each test gets its own event loop and its own FakeBlueZ
(bleak keeps one BlueZ manager per loop). Waits are on events with timeouts, never sleeps.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakBluetoothNotAvailableReason,
    BleakDBusError,
    BleakGATTProtocolError,
)

from drivers.base import DeviceFacts, GattDecoder
from drivers.protocols.ble_health import HealthDecoder
from drivers.registry import DRIVERS
from drivers.simulators.ble_values import GlucoseMeterRecords
from drivers.transports.ble_gatt import run, run_ble
from drivers.transports.ble_scan import HEALTH_SERVICES, explain_ble_error, scan
from edge_agent.backoff import Backoff
from edge_agent.errors import DeviceUnavailable
from edge_agent.service.supervisor import StoreSink, _StoreCursor
from edge_agent.store.writer import Store
from tests.ble_standin import devices
from tests.ble_standin.fake_bluez import FakeBlueZ, FakePeripheral, PrivateSystemBus
from tests.drivers.sinks import RecordingSink, WatchedSink

if shutil.which("dbus-daemon") is None:
    if os.environ.get("CI"):
        pytest.fail(
            "dbus-daemon is missing: scripts/setup installs it (apt dbus-daemon)", pytrace=False
        )
    pytest.skip(
        "dbus-daemon is not installed (bash scripts/setup installs it)", allow_module_level=True
    )


@pytest.fixture(scope="session")
def private_bus() -> Iterator[PrivateSystemBus]:
    with PrivateSystemBus(export_env=False) as bus:
        yield bus


@pytest.fixture(autouse=True)
def system_bus(private_bus: PrivateSystemBus, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only these tests see the private bus; the rest of the session keeps the real env.
    for name, value in private_bus.env.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def bluez() -> AsyncIterator[FakeBlueZ]:
    async with FakeBlueZ() as bz:
        yield bz


class MemoryCursor:
    """Reads the cursors the sink committed; remembers the keys asked for."""

    def __init__(self, sink: RecordingSink) -> None:
        self.sink = sink
        self.keys: list[str] = []

    def load(self, key: str) -> int | None:
        self.keys.append(key)
        return self.sink.cursors.get(key)


def address_key(address: str) -> str:
    """The cursor key of a meter without Device Information (BlueZ < 5.80 hides it)."""
    return f"dev/racp/address={address}"


FAST = Backoff(base=0.02, cap=0.05)
SWITCHED_OFF = ("waiting", "device switched off after measurement")


def start(
    target: str | None,
    factory: Callable[[], GattDecoder],
    sink: RecordingSink,
    stop: asyncio.Event,
    *,
    cursor: MemoryCursor | None = None,
    op_timeout: float = 2.0,
    scan_timeout: float = 2.0,
) -> asyncio.Task[None]:
    return asyncio.create_task(
        run(
            target,
            factory,
            sink,
            "dev",
            stop=stop,
            scan_timeout=scan_timeout,
            op_timeout=op_timeout,
            backoff=Backoff(base=FAST.base, cap=FAST.cap),
            cursor_load=cursor.load if cursor else None,
        )
    )


async def finish(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    async with asyncio.timeout(5):  # stop is honoured promptly, whatever the state
        await task


def registry_decoder(kind: str) -> Callable[[], GattDecoder]:
    gatt = DRIVERS[kind].gatt
    assert gatt is not None
    return lambda: gatt({})


# --- scan ------------------------------------------------------------------------------------
async def test_scan_names_the_driver_for_each_health_device(bluez: FakeBlueZ) -> None:
    bluez.add_peripheral(devices.cuff("C0:FF:EE:00:00:01", [(120, 80, 93)]))
    bluez.add_peripheral(devices.GlucoseMeter("C0:FF:EE:00:00:02", GlucoseMeterRecords()))
    bluez.add_peripheral(devices.thermometer("C0:FF:EE:00:00:03", 37.2))
    bluez.add_peripheral(FakePeripheral("C0:FF:EE:00:00:04", "Phone", rssi=-80))
    found = {r.address: r for r in await scan(0.3)}
    assert {a: r.driver for a, r in found.items()} == {
        "C0:FF:EE:00:00:01": "ble-blood-pressure",
        "C0:FF:EE:00:00:02": "ble-glucose",
        "C0:FF:EE:00:00:03": "ble-thermometer",
        "C0:FF:EE:00:00:04": None,
    }
    cuff = found["C0:FF:EE:00:00:01"]
    assert (cuff.name, cuff.services) == ("UA-651BLE", ["00001810-0000-1000-8000-00805f9b34fb"])
    assert -70 < cuff.rssi < -50 and found["C0:FF:EE:00:00:04"].rssi < -70


def test_scan_knows_every_registered_ble_driver() -> None:
    registered = {s: kind for kind, spec in DRIVERS.items() for s in spec.ble_services}
    assert registered == HEALTH_SERVICES


async def test_scan_without_bluez_says_so() -> None:
    with pytest.raises(DeviceUnavailable, match="BlueZ is not running"):
        await scan(0.1)


async def test_scan_without_adapter_says_so() -> None:
    async with FakeBlueZ(adapters=()):
        with pytest.raises(DeviceUnavailable, match="no Bluetooth adapter"):
            await scan(0.1)


async def test_scan_without_system_bus_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/none")
    with pytest.raises(DeviceUnavailable, match="no system D-Bus"):
        await scan(0.1)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (
            BleakBluetoothNotAvailableError("off", BleakBluetoothNotAvailableReason.POWERED_OFF),
            "adapter is off",
        ),
        (
            BleakBluetoothNotAvailableError(
                "no", BleakBluetoothNotAvailableReason.DENIED_BY_SYSTEM
            ),
            "not allowed to use BlueZ",
        ),
        (BleakGATTProtocolError(0x05), "requires pairing"),
        (BleakDBusError("org.bluez.Error.NotPermitted", ["Not paired"]), "requires pairing"),
        (BleakDBusError("org.bluez.Error.NotReady", ["Resource Not Ready"]), "adapter is off"),
        (TimeoutError(), "no answer in time"),
    ],
)
def test_errors_are_explained_for_technicians(error: BaseException, text: str) -> None:
    assert text in explain_ble_error(error)


# --- reading devices -------------------------------------------------------------------------
async def test_cuff_that_switches_off_after_each_measurement(bluez: FakeBlueZ) -> None:
    readings = [(118, 76, 90), (124, 82, 96), (131, 85, 100)]
    cuff = bluez.add_peripheral(devices.cuff("C0:FF:EE:00:00:11", readings))
    sink, stop = RecordingSink(), asyncio.Event()
    task = start(cuff.address, registry_decoder("ble-blood-pressure"), sink, stop)
    try:
        await sink.until(lambda: sink.statuses.count(SWITCHED_OFF) == 3)
    finally:
        await finish(task, stop)
    assert sink.values("systolic_bp") == [118.0, 124.0, 131.0]  # each once, in order
    assert sink.values("pulse_rate") == [70.0] * 3
    assert cuff.connect_count == 3 and not cuff.pending
    assert "unavailable" not in sink.states
    assert {m.device_time for m in sink.measurements} == {"2026-11-23T08:15:00"}
    assert sink.statuses[-1] == ("stopped", "")


async def test_cuff_pressure_while_inflating_is_not_a_reading(bluez: FakeBlueZ) -> None:
    cuff = bluez.add_peripheral(devices.cuff("C0:FF:EE:00:00:12", [(120, 80, 93)]))
    sink, stop = RecordingSink(), asyncio.Event()
    task = start(cuff.address, lambda: HealthDecoder(("2a35", "2a36")), sink, stop)
    try:
        await sink.until(lambda: bool(sink.values("systolic_bp")))
    finally:
        await finish(task, stop)
    assert sink.values("cuff_pressure") == [160.0, 120.0]
    assert all(
        "intermediate" in m.flags for m in sink.measurements if m.quantity == "cuff_pressure"
    )
    assert sink.values("systolic_bp") == [120.0]


@pytest.mark.parametrize(
    ("make", "kind", "quantity", "values"),
    [
        (lambda a: devices.thermometer(a, 38.4), "ble-thermometer", "body_temperature", [38.4]),
        (devices.oximeter, "ble-pulse-oximeter", "spo2", [96.0, 97.0, 97.0]),
        (lambda a: devices.weight_scale(a, 64.5), "ble-weight-scale", "body_weight", [64.5]),
        (devices.body_composition, "ble-body-composition", "body_fat_percentage", [22.5]),
        (devices.heart_rate, "ble-heart-rate", "heart_rate", [72.0]),
    ],
)
async def test_each_profile_through_its_registered_driver(
    bluez: FakeBlueZ,
    make: Callable[[str], devices.HealthDevice],
    kind: str,
    quantity: str,
    values: list[float],
) -> None:
    device = bluez.add_peripheral(make("C0:FF:EE:00:00:21"))
    sink, stop = RecordingSink(), asyncio.Event()
    task = start(device.address, registry_decoder(kind), sink, stop)
    try:
        await sink.until(lambda: len(sink.values(quantity)) >= len(values))
    finally:
        await finish(task, stop)
    assert sink.values(quantity) == values
    assert sink.rejects == []


@pytest.mark.parametrize(
    ("lone_half", "flags", "count"),
    [(False, ("reassembled",), 10), (True, ("incomplete-multiple-packet",), 5)],
)
async def test_a_split_body_composition_is_stored_as_one_set_or_as_a_flagged_half(
    bluez: FakeBlueZ, lone_half: bool, flags: tuple[str, ...], count: int
) -> None:
    scale = bluez.add_peripheral(
        devices.body_composition_split("C0:FF:EE:00:00:31", lone_half=lone_half)
    )
    sink, stop = RecordingSink(), asyncio.Event()
    task = start(scale.address, registry_decoder("ble-body-composition"), sink, stop)
    try:
        await sink.until(
            lambda: sink.statuses.count(SWITCHED_OFF) >= 1 and len(sink.measurements) >= count
        )
    finally:
        await finish(task, stop)
    assert len(sink.measurements) == count  # the half is flushed when the scale goes away
    assert {m.flags for m in sink.measurements} == {flags}
    assert sink.values("body_fat_percentage") == [22.5]


async def test_found_by_health_service_when_no_address_is_configured(bluez: FakeBlueZ) -> None:
    bluez.add_peripheral(devices.heart_rate("C0:FF:EE:00:00:31"))
    bluez.add_peripheral(devices.cuff("C0:FF:EE:00:00:32", [(120, 80, 93)]))
    thermo = bluez.add_peripheral(devices.thermometer("C0:FF:EE:00:00:33", 37.9))
    sink, stop = RecordingSink(), asyncio.Event()
    task = start(None, registry_decoder("ble-thermometer"), sink, stop)
    try:
        await sink.until(lambda: bool(sink.values("body_temperature")))
    finally:
        await finish(task, stop)
    assert sink.values("body_temperature") == [37.9]
    assert ("connected", f"{thermo.address} (Thermo)") in sink.statuses


async def test_found_by_advertised_name(bluez: FakeBlueZ) -> None:
    bluez.add_peripheral(devices.weight_scale("C0:FF:EE:00:00:41", 80.0))
    bluez.add_peripheral(devices.body_composition("C0:FF:EE:00:00:42"))
    sink, stop = RecordingSink(), asyncio.Event()
    task = start("BodyComp", registry_decoder("ble-body-composition"), sink, stop)
    try:
        await sink.until(lambda: bool(sink.values("body_fat_percentage")))
    finally:
        await finish(task, stop)
    assert sink.values("body_fat_percentage") == [22.5]


async def test_devices_read_at_once_take_turns_to_scan(bluez: FakeBlueZ) -> None:
    # BlueZ allows one discovery per D-Bus connection: a second concurrent scan would fail
    # with org.bluez.Error.InProgress.
    cuff = bluez.add_peripheral(devices.cuff("C0:FF:EE:00:00:51", [(120, 80, 93)] * 2))
    thermo = bluez.add_peripheral(devices.thermometer("C0:FF:EE:00:00:52", 37.0, 37.1))
    sinks, stop = (RecordingSink(), RecordingSink()), asyncio.Event()
    tasks = [
        start(cuff.address, registry_decoder("ble-blood-pressure"), sinks[0], stop),
        start(thermo.address, registry_decoder("ble-thermometer"), sinks[1], stop),
    ]
    try:
        await sinks[0].until(lambda: len(sinks[0].values("systolic_bp")) == 2)
        await sinks[1].until(lambda: len(sinks[1].values("body_temperature")) == 2)
    finally:
        for task in tasks:
            await finish(task, stop)
    assert sinks[1].values("body_temperature") == [37.0, 37.1]
    assert not any("unavailable" in s.states for s in sinks), [s.statuses for s in sinks]


# --- glucose meter: RACP download and its cursor ---------------------------------------------
async def test_glucose_meter_records_downloaded_once_then_only_new(bluez: FakeBlueZ) -> None:
    records = GlucoseMeterRecords(with_context=True)
    for i in range(50):
        records.add(80 + i)
    meter = bluez.add_peripheral(
        devices.GlucoseMeter("C0:FF:EE:00:00:61", records, switch_off=True)
    )
    sink, stop = RecordingSink(), asyncio.Event()
    cursor = MemoryCursor(sink)
    key = address_key(meter.address)
    task = start(meter.address, registry_decoder("ble-glucose"), sink, stop, cursor=cursor)
    try:
        await sink.until(lambda: sink.cursors.get(key) == 50)
        assert sink.values("glucose") == [80.0 + i for i in range(50)]
        await sink.until(lambda: SWITCHED_OFF in sink.statuses)
        for mg in (150, 151, 152):
            records.add(mg)
        meter.power_on()  # the meter's next use: it advertises again and is reconnected
        await sink.until(lambda: sink.cursors.get(key) == 53)
    finally:
        await finish(task, stop)
    assert meter.requests == [b"\x01\x01", b"\x01\x03\x01\x33\x00"]  # all, then >= 51
    assert sink.values("glucose") == [80.0 + i for i in range(50)] + [150.0, 151.0, 152.0]
    assert sink.log == ["store 50 cursor 50", "store 3 cursor 53"]  # one commit each
    assert cursor.keys == [key, key]


async def test_glucose_cursor_stays_when_the_commit_fails(bluez: FakeBlueZ) -> None:
    records = GlucoseMeterRecords()
    for mg in (90, 91, 92):
        records.add(mg)
    meter = bluez.add_peripheral(
        devices.GlucoseMeter("C0:FF:EE:00:00:62", records, switch_off=True)
    )
    sink, stop = RecordingSink(fail_commits=1), asyncio.Event()
    key = address_key(meter.address)
    sink.cursors[key] = 1
    cursor = MemoryCursor(sink)
    task = start(meter.address, registry_decoder("ble-glucose"), sink, stop, cursor=cursor)
    try:
        await sink.until(lambda: "store failed" in sink.log)
        await meter.answered.wait()
        meter.answered.clear()
        assert sink.cursors[key] == 1
        meter.power_on()
        await sink.until(lambda: sink.cursors[key] == 3)
    finally:
        await finish(task, stop)
    assert meter.requests == [b"\x01\x03\x01\x02\x00"] * 2  # the same question again
    assert sink.values("glucose") == [91.0, 92.0]  # stored once
    assert sink.log == ["store failed", "store 2 cursor 3"]


async def test_stalled_meter_is_aborted_and_the_cursor_stays(bluez: FakeBlueZ) -> None:
    meter = bluez.add_peripheral(devices.stalled_meter("C0:FF:EE:00:00:63"))
    sink, stop = RecordingSink(), asyncio.Event()
    sink.cursors[address_key(meter.address)] = 7
    cursor = MemoryCursor(sink)
    task = start(
        meter.address, registry_decoder("ble-glucose"), sink, stop, cursor=cursor, op_timeout=0.3
    )
    try:
        await sink.until(lambda: "stalled" in sink.states)
    finally:
        await finish(task, stop)
    assert meter.requests[:2] == [b"\x01\x03\x01\x08\x00", b"\x03\x00"]  # >= 8, then abort
    detail = next(d for s, d in sink.statuses if s == "stalled")
    assert "0.3 s" in detail and "cursor kept at 7" in detail
    assert sink.cursors == {address_key(meter.address): 7} and sink.measurements == []
    assert not meter.connected  # the link was dropped, to start clean next time


async def test_meter_that_needs_pairing_is_explained(bluez: FakeBlueZ) -> None:
    records = GlucoseMeterRecords()
    records.add(100)
    meter = bluez.add_peripheral(
        devices.GlucoseMeter("C0:FF:EE:00:00:64", records, needs_pairing=True)
    )
    sink, stop = RecordingSink(), asyncio.Event()
    task = start(meter.address, registry_decoder("ble-glucose"), sink, stop)
    try:
        await sink.until(lambda: "unavailable" in sink.states)
    finally:
        await finish(task, stop)
    assert "requires pairing" in next(d for s, d in sink.statuses if s == "unavailable")


async def test_glucose_through_the_store_and_the_supervisor_entry_point(
    bluez: FakeBlueZ,
    tmp_path: Path,
) -> None:
    records = GlucoseMeterRecords(with_context=True)
    for mg in (101, 102):
        records.add(mg)
    meter = bluez.add_peripheral(devices.GlucoseMeter("C0:FF:EE:00:00:65", records))
    with Store(tmp_path / "unit.db", "mmu-t") as store:
        sink = StoreSink(store)
        cursor = _StoreCursor(sink)
        key = f"glucometer/racp/address={meter.address}"
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_ble(
                "glucometer",
                meter.address,
                registry_decoder("ble-glucose"),
                sink,
                stop,
                cursor=cursor,
                scan_timeout=2,
                op_timeout=2,
            )
        )
        try:
            await meter.answered.wait()
            async with asyncio.timeout(5):
                while await asyncio.to_thread(cursor.load, key) != 2:
                    await asyncio.sleep(0.02)  # the store's writer thread has no event to wait on
        finally:
            await finish(task, stop)
        rows = store.call(
            lambda db: list(
                db.execute("SELECT value, device_time, received_at FROM readings ORDER BY seq")
            )
        )
    assert [r[0] for r in rows] == [101.0, 102.0]
    assert all(r[1] and r[2] for r in rows)  # the meter's time and the reception time


# --- glucose meter: identity, replacement, reset (issue 13, defect 8) -------------------------
def later_records(*mgs: float) -> GlucoseMeterRecords:
    """A meter's memory after a reset or on another meter: numbered from 1, taken later."""
    records = GlucoseMeterRecords(first_time=(2027, 2, 1, 7, 0, 0))
    for mg in mgs:
        records.add(mg)
    return records


async def test_a_replaced_meter_is_downloaded_from_its_first_record(tmp_path: Path) -> None:
    """Same configured device (found by name), another meter: its cursor is its own."""
    async with FakeBlueZ(claimed_services="read-only") as bz:  # BlueZ >= 5.80 shows DIS
        old_records = GlucoseMeterRecords()
        for mg in (90, 91, 92, 93, 94):
            old_records.add(mg)
        old = bz.add_peripheral(
            devices.GlucoseMeter("C0:FF:EE:00:00:81", old_records, switch_off=True, serial="GLU-A1")
        )
        with Store(tmp_path / "unit.db", "mmu-t") as store:
            sink, stop = WatchedSink(store), asyncio.Event()
            task = asyncio.create_task(
                run(
                    "Accu-Chek",
                    registry_decoder("ble-glucose"),
                    sink,
                    "dev",
                    stop=stop,
                    scan_timeout=2,
                    op_timeout=2,
                    backoff=Backoff(base=FAST.base, cap=FAST.cap),
                    cursor_load=_StoreCursor(sink).load,
                )
            )
            try:
                await sink.until(lambda: store.cursor_load("dev/racp/serial=GLU-A1") == 5)
                # The meter broke; the nurse pairs a new one, which has its own 3 records.
                new = bz.add_peripheral(
                    devices.GlucoseMeter(
                        "C0:FF:EE:00:00:82",
                        later_records(120, 121, 122),
                        switch_off=True,
                        serial="GLU-B2",
                        system_id=bytes.fromhex("0102030405aabbcc"),
                    )
                )
                key = "dev/racp/serial=GLU-B2,system-id=0102030405aabbcc"
                await sink.until(lambda: store.cursor_load(key) == 3, timeout=10)
            finally:
                await finish(task, stop)
            values = [
                r[0]
                for r in store.read(
                    lambda db: list(db.execute("SELECT value FROM readings ORDER BY seq"))
                )
            ]
            assert store.cursor_load("dev/racp/serial=GLU-A1") == 5  # the old meter's, kept
    assert old.requests == [b"\x01\x01"] and new.requests == [b"\x01\x01"]  # all, each
    assert values == [90.0, 91.0, 92.0, 93.0, 94.0, 120.0, 121.0, 122.0]


async def test_a_reset_meter_is_downloaded_again_without_duplicates(bluez: FakeBlueZ) -> None:
    records = GlucoseMeterRecords()
    for mg in (90, 91, 92, 93, 94):
        records.add(mg)
    # BlueZ 5.66 (the stand-in's default) hides the Device Information Service: the meter's
    # serial number cannot be read and it is keyed by its address.
    meter = bluez.add_peripheral(
        devices.GlucoseMeter("C0:FF:EE:00:00:83", records, switch_off=True, serial="GLU-A1")
    )
    key = address_key(meter.address)
    sink, stop = RecordingSink(), asyncio.Event()
    cursor = MemoryCursor(sink)
    task = start(meter.address, registry_decoder("ble-glucose"), sink, stop, cursor=cursor)
    try:
        await sink.until(lambda: sink.cursors.get(key) == 5)
        await sink.until(lambda: SWITCHED_OFF in sink.statuses)
        meter.records = later_records(140, 141)  # memory cleared, numbering restarted
        meter.power_on()
        await sink.until(lambda: sink.cursors.get(key) == 2)
        await sink.until(lambda: sink.statuses.count(SWITCHED_OFF) == 2)
        meter.records.add(142)
        meter.power_on()
        await sink.until(lambda: sink.cursors.get(key) == 3)
    finally:
        await finish(task, stop)
    assert meter.requests == [
        b"\x01\x01",  # first contact: all
        b"\x01\x03\x01\x06\x00",
        b"\x04\x03\x01\x05\x00",
        b"\x01\x01",  # >= 6, count >= 5, all
        b"\x01\x03\x01\x03\x00",  # >= 3
    ]
    assert sink.values("glucose") == [90.0, 91.0, 92.0, 93.0, 94.0, 140.0, 141.0, 142.0]
    assert sink.log == ["store 5 cursor 5", "store 2 cursor 2", "store 1 cursor 3"]
    assert any(s == "racp-reset" and "cursor 5" in d for s, d in sink.statuses)
    source_keys = [m.source_key for m in sink.measurements]
    assert None not in source_keys and len(set(source_keys)) == 8  # records 1, 2 differ in time
    assert set(cursor.keys) == {key}


# --- trouble ---------------------------------------------------------------------------------
async def test_runner_without_bluez_reports_and_keeps_trying() -> None:
    sink, stop = RecordingSink(), asyncio.Event()
    task = start("C0:FF:EE:00:00:71", registry_decoder("ble-thermometer"), sink, stop)
    try:
        await sink.until(lambda: sum(s == "unavailable" for s, _ in sink.statuses) >= 2)
    finally:
        await finish(task, stop)
    assert "BlueZ is not running" in next(d for s, d in sink.statuses if s == "unavailable")


async def test_device_not_around_is_waiting_and_stop_is_prompt(bluez: FakeBlueZ) -> None:
    sink, stop = RecordingSink(), asyncio.Event()
    task = start(
        "C0:FF:EE:00:00:72", registry_decoder("ble-thermometer"), sink, stop, scan_timeout=0.2
    )
    await sink.until(lambda: "waiting" in sink.states)
    assert ("waiting", "not heard: out of range or switched off") in sink.statuses
    await sink.until(lambda: sink.states[-1] == "scanning")  # stop in the middle of a scan
    scan_timeout_long = start(
        "C0:FF:EE:00:00:73",
        registry_decoder("ble-thermometer"),
        RecordingSink(),
        stop,
        scan_timeout=60,
    )
    await finish(task, stop)
    await finish(scan_timeout_long, stop)  # a 60 s scan is abandoned at once


async def test_wrong_driver_kind_is_reported(bluez: FakeBlueZ) -> None:
    scale = bluez.add_peripheral(devices.weight_scale("C0:FF:EE:00:00:74", 70.0))
    scale.switch_off = False
    sink, stop = RecordingSink(), asyncio.Event()
    task = start(scale.address, registry_decoder("ble-thermometer"), sink, stop)
    try:
        await sink.until(lambda: "misconfigured" in sink.states)
    finally:
        await finish(task, stop)
    assert "2a1c" in next(d for s, d in sink.statuses if s == "misconfigured")


# --- Device Information of every device (issue 8) ---------------------------------------------
async def test_every_device_gives_its_device_information_as_facts() -> None:
    """BlueZ >= 5.80 lets us read the Device Information Service: a cuff's serial number,
    system id, manufacturer, model and firmware become its facts (padding trimmed, the system
    id as an EUI-64 most significant octet first); the reading is served all the same."""
    info = {
        0x2A29: b"A&D Medical \x00",
        0x2A24: b"UA-651BLE",
        0x2A25: b"5181000124",
        0x2A26: b"1.2.0",
        0x2A23: bytes.fromhex("c9f253fe12f3c4ff")[::-1],
    }
    async with FakeBlueZ(claimed_services="read-only") as bz:
        cuff = bz.add_peripheral(devices.cuff("C0:FF:EE:00:00:91", [(120, 80, 93)], info=info))
        sink, stop = RecordingSink(), asyncio.Event()
        task = start(cuff.address, registry_decoder("ble-blood-pressure"), sink, stop)
        try:
            await sink.until(lambda: bool(sink.values("systolic_bp")) and bool(sink.facts))
        finally:
            await finish(task, stop)
    assert sink.facts[0] == DeviceFacts(
        serial="5181000124",
        system_id="C9-F2-53-FE-12-F3-C4-FF",
        manufacturer="A&D Medical",
        model="UA-651BLE",
        firmware="1.2.0",
    )


async def test_a_device_whose_information_bluez_hides_gives_no_facts(bluez: FakeBlueZ) -> None:
    cuff = bluez.add_peripheral(
        devices.cuff("C0:FF:EE:00:00:92", [(120, 80, 93)], info={0x2A29: b"A&D"})
    )  # BlueZ 5.66: hidden
    sink, stop = RecordingSink(), asyncio.Event()
    task = start(cuff.address, registry_decoder("ble-blood-pressure"), sink, stop)
    try:
        await sink.until(lambda: bool(sink.values("systolic_bp")))
    finally:
        await finish(task, stop)
    assert sink.facts == []
