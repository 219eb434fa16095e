"""BLE transport (bleak): scan, connect, subscribe, write, decode, commit; reconnect.

One task per configured device. GATT operations on a device are serialized by one lock and
bounded by ``op_timeout``; notification callbacks only queue the value (decoding and the
commit happen in the device task, never inside bleak's callback). A procedure that stalls
(a glucose meter that never answers its RACP request) is aborted and reported, and the
cursor does not move. Cuffs and meters switch off after each measurement: a disconnect is
normal and reported as ``waiting``, not as an error; the task looks for the device again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError

from drivers.base import GattDecoder, Sink
from drivers.runtime import dispatch
from drivers.transports.backoff import Backoff
from edge_agent.errors import DeviceUnavailable

log = logging.getLogger(__name__)
BASE_UUID = "-0000-1000-8000-00805f9b34fb"


def uuid128(short: str) -> str:
    return f"0000{short}{BASE_UUID}"


def short_uuid(uuid: str) -> str:
    return uuid[4:8].lower() if uuid.lower().endswith(BASE_UUID) else uuid.lower()


class Cursor(Protocol):
    """Where a device's download cursor is persisted (the store)."""

    def load(self) -> int | None: ...

    def save(self, value: int) -> None: ...


@contextlib.contextmanager
def map_ble_errors(device_id: str) -> Iterator[None]:
    """The one place bleak/D-Bus errors become ours."""
    try:
        yield
    except (BleakError, OSError, EOFError) as exc:
        raise DeviceUnavailable(device_id, f"{type(exc).__name__}: {exc}") from exc


async def run_ble(
    device_id: str,
    address: str,
    decoder_factory: Callable[[int | None], GattDecoder],
    sink: Sink,
    stop: asyncio.Event,
    *,
    cursor: Cursor | None = None,
    scan_timeout: float = 10.0,
    op_timeout: float = 30.0,
    backoff: Backoff | None = None,
) -> None:
    """Run one BLE device until ``stop`` is set; never raises for device trouble."""
    backoff = backoff or Backoff(base=0.5, cap=30.0)
    while not stop.is_set():
        try:
            served = await _session(device_id, address, decoder_factory, sink, stop, cursor,
                                    scan_timeout, op_timeout)
        except DeviceUnavailable as exc:
            sink.device_status(device_id, "unavailable", str(exc))
            served = False
        except TimeoutError:
            sink.device_status(device_id, "stalled", f"no answer within {op_timeout:.0f} s")
            served = False
        if served:
            backoff.reset()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), backoff.next_delay())
    sink.device_status(device_id, "stopped")


async def _session(
    device_id: str,
    address: str,
    decoder_factory: Callable[[int | None], GattDecoder],
    sink: Sink,
    stop: asyncio.Event,
    cursor: Cursor | None,
    scan_timeout: float,
    op_timeout: float,
) -> bool:
    sink.device_status(device_id, "scanning", address)
    with map_ble_errors(device_id):
        device = await BleakScanner.find_device_by_address(address, timeout=scan_timeout)
    if device is None:
        sink.device_status(device_id, "waiting", "not in range or switched off")
        return False
    disconnected = asyncio.Event()
    values: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    lock = asyncio.Lock()
    start = await asyncio.to_thread(cursor.load) if cursor is not None else None
    decoder = decoder_factory(start)

    def on_value(char: BleakGATTCharacteristic, data: bytearray) -> None:
        values.put_nowait((short_uuid(char.uuid), bytes(data)))

    async def gatt(op: Awaitable[None]) -> None:
        async with lock, asyncio.timeout(op_timeout):
            await op

    with map_ble_errors(device_id):
        async with BleakClient(device, disconnected_callback=lambda _: disconnected.set(),
                               timeout=op_timeout) as client:
            sink.device_status(device_id, "connected", address)
            # Devices expose a subset (a PLX oximeter may have spot-check or continuous only).
            present = [c for c in decoder.subscriptions
                       if client.services.get_characteristic(uuid128(c)) is not None]
            if not present:
                raise DeviceUnavailable(device_id, "none of the characteristics "
                                        f"{', '.join(decoder.subscriptions)} is on the device")
            for char in present:
                await gatt(client.start_notify(uuid128(char), on_value))
            begin = getattr(decoder, "start", None)
            if begin is not None:
                begin()
            await _writes(client, decoder, gatt)
            await _pump(device_id, decoder, sink, stop, disconnected, values, client, gatt,
                        cursor, op_timeout)
    if not stop.is_set():
        sink.device_status(device_id, "waiting", "device switched off after measurement")
    return True


async def _writes(
    client: BleakClient, decoder: GattDecoder, gatt: Callable[[Awaitable[None]], Awaitable[None]]
) -> None:
    for write in decoder.writes_to_send():
        await gatt(client.write_gatt_char(uuid128(write.characteristic), write.value,
                                          response=write.with_response))


async def _pump(
    device_id: str,
    decoder: GattDecoder,
    sink: Sink,
    stop: asyncio.Event,
    disconnected: asyncio.Event,
    values: asyncio.Queue[tuple[str, bytes]],
    client: BleakClient,
    gatt: Callable[[Awaitable[None]], Awaitable[None]],
    cursor: Cursor | None,
    op_timeout: float,
) -> None:
    while not stop.is_set():
        getter = asyncio.ensure_future(values.get())
        watchers = {getter, asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(disconnected.wait())}
        # While a procedure runs (RACP), the device must answer within op_timeout.
        busy = bool(getattr(decoder, "active", False))
        done, pending = await asyncio.wait(watchers, timeout=op_timeout if busy else None,
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if getter not in done:
            if not done:  # stalled mid-procedure
                abort = getattr(decoder, "abort", None)
                if abort is not None:
                    abort()
                    with contextlib.suppress(Exception):
                        await _writes(client, decoder, gatt)
                sink.device_status(device_id, "stalled",
                                   f"no answer within {op_timeout:.0f} s; procedure aborted")
                raise TimeoutError
            if disconnected.is_set():
                # Drain what arrived before the disconnect: it is the device's data.
                while not values.empty():
                    char, data = values.get_nowait()
                    await dispatch(device_id, decoder.receive_value(char, data), sink, decoder)
            return
        char, data = getter.result()
        before = getattr(decoder, "last_seq", None)
        await dispatch(device_id, decoder.receive_value(char, data), sink, decoder)
        after = getattr(decoder, "last_seq", None)
        if cursor is not None and isinstance(after, int) and after != before:
            await asyncio.to_thread(cursor.save, after)  # only after the commit + acknowledge
        if client.is_connected:
            await _writes(client, decoder, gatt)
