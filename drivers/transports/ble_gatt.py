"""BLE transport (bleak): find, connect, subscribe, write, decode, commit; reconnect.

Strategy, one task per configured device:

* Find the device by address, by advertised name, or (no target) by the health service its
  decoder reads, with a service-UUID scan filter. Scans take turns (``scan_lock``): BlueZ runs
  one discovery per D-Bus connection.
* bleak's callbacks only queue ``(characteristic, value)``. One consumer task decodes, commits
  through ``drivers.runtime.dispatch`` (commit, then acknowledge) and performs the writes the
  decoder asks for; values that arrived before a disconnect are still decoded.
* GATT operations on a client are serialized by one lock and bounded by ``op_timeout``. While
  a procedure runs (a glucose RACP download) the device must answer within ``op_timeout``;
  if it does not, the procedure is aborted, reported as ``stalled`` and the link dropped.
* A glucose meter is identified before its download: its Device Information Service serial
  number (0x2A25) and/or System ID (0x2A23). Its download cursor is kept under
  ``<device id>/racp/<identity>``, so a replaced meter (same configured id, other identity)
  is downloaded from its first record. A meter that exposes neither (and every meter under
  BlueZ before 5.80, which keeps the Device Information Service to itself) is identified by
  its BLE address, and a ``meter-identity`` fact says so. The cursor is committed by the
  decoder's ``MessageComplete`` in the same transaction as the records: a failed commit leaves
  it where it was. A meter reset (``racp-reset``) is reported as a device status.
* Every device's Device Information (serial number 0x2A25, system id 0x2A23, manufacturer
  0x2A29, model 0x2A24, firmware 0x2A26), when BlueZ lets us read it, is read once per
  connection and handed to ``sink.device_facts`` (the FHIR Device). A device that fails such a
  read is served all the same (only a glucose meter's identity must be read, see above).
* Cuffs, thermometers and meters switch off after each measurement: a disconnect is normal
  (``waiting``), not an error. Anything else bleak, BlueZ or D-Bus raises is turned into a
  status at one boundary (``_attempt``) and the device is looked for again after an
  exponential backoff with jitter.

The device's own time stays in each Measurement (``device_time``); the store stamps the
reception time when it commits.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final, Protocol, TypeVar, runtime_checkable

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from drivers.base import DeviceInfo, Flushable, GattDecoder, Sink
from drivers.protocols.ble_health import (
    DEVICE_INFORMATION,
    DIS_SERIAL_NUMBER,
    DIS_SYSTEM_ID,
    device_information,
    meter_identity,
)
from drivers.runtime import dispatch
from drivers.transports.ble_scan import explain_ble_error, scan_lock, short_uuid, uuid128
from edge_agent.backoff import Backoff

log = logging.getLogger(__name__)
T = TypeVar("T")

CursorLoad = Callable[[str], int | None]
DecoderFactory = Callable[[], GattDecoder]

# Which service carries each characteristic the decoders read (GATT assigned numbers), for a
# device configured without an address: it is found by the service it advertises.
SERVICE_OF: Final[dict[str, str]] = {
    "2a35": "1810",
    "2a36": "1810",
    "2a1c": "1809",
    "2a1e": "1809",
    "2a18": "1808",
    "2a34": "1808",
    "2a52": "1808",
    "2a5e": "1822",
    "2a5f": "1822",
    "2a9d": "181d",
    "2a9c": "181b",
    "2a37": "180d",
}
_ADDRESS = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$|^[0-9A-Fa-f-]{36}$")  # or macOS
_BLE_ERRORS = (BleakError, OSError, EOFError, TimeoutError)


@runtime_checkable
class Procedure(Protocol):
    """A decoder that asks the device for its data (GlucoseDownload: RACP)."""

    active: bool  # a request is out and the device owes an answer

    @property
    def last_seq(self) -> int | None: ...

    def resume(self, meter: str | None, cursor_key: str | None, last_seq: int | None) -> None: ...

    def start(self) -> None: ...

    def abort(self) -> None: ...


class Cursor(Protocol):
    """Where device download cursors are read from (the store; they are written by the commit
    of the readings they cover)."""

    def load(self, key: str) -> int | None: ...


class _Stalled(Exception):
    """The device accepted a request but never answered it."""


class _Misconfigured(Exception):
    """The device is not what its driver kind expects."""


async def run(
    address_or_name: str | None,
    decoder_factory: DecoderFactory,
    sink: Sink,
    device_id: str,
    *,
    stop: asyncio.Event,
    scan_timeout: float = 10.0,
    op_timeout: float = 30.0,
    backoff: Backoff | None = None,
    cursor_load: CursorLoad | None = None,
    services: Sequence[str] = (),
) -> None:
    """Read one BLE device until ``stop`` is set. Device trouble never raises: it becomes a
    ``sink.device_status`` and a later retry.

    ``address_or_name``: a MAC address, an advertised name, or None/"" for the first device
    advertising ``services`` (16-bit UUIDs; default: the services of the decoder's
    characteristics). ``decoder_factory()`` makes a decoder for every connection; a procedure
    decoder is resumed from the cursor ``cursor_load(key)`` returns for the meter it is
    connected to. ``op_timeout`` bounds the connect, each GATT operation and each wait for a
    procedure's next answer.
    """
    backoff = backoff or Backoff(base=1.0, cap=15.0)
    while not stop.is_set():
        if await _attempt(
            address_or_name or None,
            decoder_factory,
            sink,
            device_id,
            stop,
            scan_timeout,
            op_timeout,
            cursor_load,
            services,
        ):
            backoff.reset()
        await _unless_stopped(asyncio.sleep(backoff.next_delay()), stop)
    sink.device_status(device_id, "stopped")


async def run_ble(
    device_id: str,
    address: str,
    decoder_factory: DecoderFactory,
    sink: Sink,
    stop: asyncio.Event,
    *,
    cursor: Cursor | None = None,
    scan_timeout: float = 10.0,
    op_timeout: float = 30.0,
    backoff: Backoff | None = None,
) -> None:
    """:func:`run` with the cursor as one object (the supervisor's store cursor)."""
    await run(
        address,
        decoder_factory,
        sink,
        device_id,
        stop=stop,
        scan_timeout=scan_timeout,
        op_timeout=op_timeout,
        backoff=backoff,
        cursor_load=cursor.load if cursor is not None else None,
    )


async def _attempt(
    target: str | None,
    decoder_factory: DecoderFactory,
    sink: Sink,
    device_id: str,
    stop: asyncio.Event,
    scan_timeout: float,
    op_timeout: float,
    cursor_load: CursorLoad | None,
    services: Sequence[str],
) -> bool:
    """One find-connect-serve cycle; the boundary where errors become statuses. True when the
    device was served (connected), to reset the backoff."""
    try:
        decoder = decoder_factory()
        sink.device_status(device_id, "scanning", target or "any device with its service")
        device = await _find(target, decoder, services, scan_timeout, stop)
        if device is None:
            if not stop.is_set():
                sink.device_status(device_id, "waiting", "not heard: out of range or switched off")
            return False
        link = _Link(device, decoder, sink, device_id, stop, op_timeout, cursor_load)
        await link.serve()
    except _Stalled as exc:
        sink.device_status(device_id, "stalled", str(exc))
    except _Misconfigured as exc:
        sink.device_status(device_id, "misconfigured", str(exc))
    except _BLE_ERRORS as exc:
        log.debug("device %s: %r", device_id, exc)
        sink.device_status(device_id, "unavailable", explain_ble_error(exc))
    else:
        return True
    return False


async def _find(
    target: str | None,
    decoder: GattDecoder,
    services: Sequence[str],
    scan_timeout: float,
    stop: asyncio.Event,
) -> BLEDevice | None:
    wanted = [
        uuid128(s)
        for s in services
        or sorted({SERVICE_OF[c] for c in decoder.subscriptions if c in SERVICE_OF})
    ]

    def match(device: BLEDevice, adv: AdvertisementData) -> bool:
        if target is None:
            return bool(set(wanted) & {u.lower() for u in adv.service_uuids})
        if _ADDRESS.match(target):
            return device.address.lower() == target.lower()
        return target in (adv.local_name, device.name)

    async def find() -> BLEDevice | None:
        async with scan_lock():
            if target is None:  # let BlueZ filter: only health devices wake us up
                return await BleakScanner.find_device_by_filter(
                    match, timeout=scan_timeout, service_uuids=wanted
                )
            # No service filter: some devices advertise only a name or manufacturer data.
            return await BleakScanner.find_device_by_filter(match, timeout=scan_timeout)

    return await _unless_stopped(find(), stop)


async def _unless_stopped(aw: Awaitable[T], stop: asyncio.Event) -> T | None:
    """``aw``'s result, or None once ``stop`` is set first (``aw`` is then cancelled)."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # let bleak clean up (stop discovery, cancel Connect)
    return None if task.cancelled() else task.result()


class _Link:
    """One connection: subscribe, start the decoder's procedure, consume values until the
    device goes away, ``stop`` is set or a procedure stalls."""

    def __init__(
        self,
        device: BLEDevice,
        decoder: GattDecoder,
        sink: Sink,
        device_id: str,
        stop: asyncio.Event,
        op_timeout: float,
        cursor_load: CursorLoad | None,
    ) -> None:
        self.device, self.decoder, self.sink, self.device_id = device, decoder, sink, device_id
        self.stop, self.op_timeout, self.cursor_load = stop, op_timeout, cursor_load
        self.values: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()  # None: end
        self.gone = asyncio.Event()
        self.lock = asyncio.Lock()  # one GATT operation at a time on this client
        self.client = BleakClient(device, disconnected_callback=self._on_gone, timeout=op_timeout)
        self.label = f"{device.address} ({device.name})" if device.name else device.address

    def _on_gone(self, _client: BleakClient) -> None:
        self.gone.set()

    def _on_value(self, char: BleakGATTCharacteristic, data: bytearray) -> None:
        # bleak's callback: queue only; decoding and the commit happen in the consumer task.
        self.values.put_nowait((short_uuid(char.uuid), bytes(data)))

    async def serve(self) -> None:
        if await _unless_stopped(self._connect(), self.stop) is None:
            return
        consumer: asyncio.Task[None] | None = None
        try:
            self.sink.device_status(self.device_id, "connected", self.label)
            try:
                info = await self._device_information()
                if isinstance(self.decoder, Procedure):
                    await self._resume(self.decoder, info)
                await self._subscribe()
                if isinstance(self.decoder, Procedure):
                    self.decoder.start()
                await self._send_writes()
                consumer = asyncio.create_task(self._consume())
                await self._until_done(consumer)
            except (BleakError, EOFError) as exc:
                if not self.gone.is_set():
                    raise
                log.debug("device %s went away during setup: %r", self.device_id, exc)
            finally:
                self.values.put_nowait(None)  # the consumer decodes what arrived, then ends
                if consumer is None:
                    consumer = asyncio.create_task(self._consume())
                await consumer
        finally:
            await self._disconnect()
        if not self.stop.is_set():
            self.sink.device_status(self.device_id, "waiting", self._why_gone())

    async def _connect(self) -> bool:
        await self.client.connect()
        return True

    async def _disconnect(self) -> None:
        try:
            async with asyncio.timeout(self.op_timeout):
                await self.client.disconnect()
        except _BLE_ERRORS as exc:  # gone already: nothing left to close
            log.debug("device %s: disconnect: %r", self.device_id, exc)

    def _why_gone(self) -> str:
        if isinstance(self.decoder, Procedure) and self.decoder.active:
            return "device disconnected during the transfer; it will be asked again"
        return "device switched off after measurement"

    async def _gatt(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        async with self.lock:
            try:
                async with asyncio.timeout(self.op_timeout):
                    return await op()
            except TimeoutError:
                raise _Stalled(f"{what}: no answer within {self.op_timeout:g} s") from None

    async def _device_information(self) -> dict[str, bytes | None]:
        """The Device Information values the device exposes (None: present, not readable),
        given to the sink as the device's facts."""
        values: dict[str, bytes | None] = {}
        for char in DEVICE_INFORMATION:
            if self.client.services.get_characteristic(uuid128(char)) is None:
                continue
            try:
                values[char] = bytes(
                    await self._gatt(
                        f"read {char}", partial(self.client.read_gatt_char, uuid128(char))
                    )
                )
            except (_Stalled, BleakError) as exc:
                if self.gone.is_set():
                    raise
                log.debug("device %s: read %s: %r", self.device_id, char, exc)
                values[char] = None
        facts = device_information({k: v for k, v in values.items() if v is not None})
        if facts.any():
            self.sink.device_facts(self.device_id, facts)
        return values

    async def _resume(self, procedure: Procedure, info: dict[str, bytes | None]) -> None:
        """Identify the meter (Device Information), load its cursor, resume the decoder.

        A characteristic that is absent is no identity; one that is present but cannot be read
        fails the attempt (retried later) rather than key the meter differently this time."""
        values: dict[str, bytes] = {}
        for char in (DIS_SERIAL_NUMBER, DIS_SYSTEM_ID):
            if char in info:
                value = info[char]
                if value is None:
                    raise BleakError(f"read {char}: the meter's identity could not be read")
                values[char] = value
        identity = meter_identity(values.get(DIS_SERIAL_NUMBER), values.get(DIS_SYSTEM_ID))
        if identity is None:
            meter = f"address={self.device.address}"
            fact = DeviceInfo(
                "meter-identity",
                f"none readable (no serial number or system id; "
                f"BlueZ before 5.80 keeps the Device Information Service to "
                f"itself): keyed by its BLE address, {meter}",
            )
        else:
            meter, fact = identity, DeviceInfo("meter-identity", identity)
        key = f"{self.device_id}/racp/{meter}"
        load = self.cursor_load
        last = await asyncio.to_thread(load, key) if load is not None else None
        procedure.resume(meter, key, last)
        log.info(
            "device %s: %s = %s; download cursor %s = %s",
            self.device_id,
            fact.key,
            fact.value,
            key,
            last,
        )

    async def _subscribe(self) -> None:
        # Devices expose a subset (an oximeter may have spot-check or continuous only).
        present = [
            c
            for c in self.decoder.subscriptions
            if self.client.services.get_characteristic(uuid128(c)) is not None
        ]
        if not present:
            wanted = ", ".join(self.decoder.subscriptions)
            raise _Misconfigured(
                f"none of the characteristics {wanted} is on the device: is the driver kind right?"
            )
        for char in present:  # start_notify enables notifications or indications as flagged
            await self._gatt(
                f"subscribe to {char}",
                partial(self.client.start_notify, uuid128(char), self._on_value),
            )

    async def _send_writes(self) -> None:
        for write in self.decoder.writes_to_send():
            await self._gatt(
                f"write {write.characteristic}",
                partial(
                    self.client.write_gatt_char,
                    uuid128(write.characteristic),
                    write.value,
                    response=write.with_response,
                ),
            )

    async def _until_done(self, consumer: asyncio.Task[None]) -> None:
        waits = {asyncio.ensure_future(self.gone.wait()), asyncio.ensure_future(self.stop.wait())}
        try:
            await asyncio.wait({consumer, *waits}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if consumer.done() and isinstance(consumer.exception(), _Stalled):
            await self._abort()

    async def _abort(self) -> None:
        """Tell the device to abandon the procedure (best effort: it may be hung)."""
        if isinstance(self.decoder, Procedure) and not self.gone.is_set():
            self.decoder.abort()
            try:
                await self._send_writes()
            except (_Stalled, *_BLE_ERRORS) as exc:
                log.debug("device %s: abort not sent: %r", self.device_id, exc)

    async def _consume(self) -> None:
        while True:
            busy = isinstance(self.decoder, Procedure) and self.decoder.active
            try:
                async with asyncio.timeout(self.op_timeout if busy else None):
                    item = await self.values.get()
            except TimeoutError:
                kept = self.decoder.last_seq if isinstance(self.decoder, Procedure) else None
                raise _Stalled(
                    f"the device accepted the request but sent nothing for "
                    f"{self.op_timeout:g} s; procedure aborted, cursor kept at "
                    f"{kept}"
                ) from None
            if item is None:
                if isinstance(self.decoder, Flushable):  # a half-received measurement
                    await dispatch(self.device_id, self.decoder.flush(), self.sink, self.decoder)
                return
            await self._deliver(*item)

    async def _deliver(self, char: str, value: bytes) -> None:
        events = self.decoder.receive_value(char, value)
        # dispatch commits each completed download with its cursor, then acknowledges it.
        infos = await dispatch(self.device_id, events, self.sink, self.decoder)
        for info in infos:
            # The key only: some facts carry clinical context (a glucose record's meal,
            # medication), which stays out of logs.
            log.debug("device %s: device fact %s", self.device_id, info.key)
            if info.key == "racp-reset":
                self.sink.device_status(self.device_id, "racp-reset", info.value)
        try:
            await self._send_writes()
        except (BleakError, EOFError):
            if not self.gone.is_set():
                raise
